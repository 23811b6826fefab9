package cli

import (
	"context"
	"strings"
	"testing"
)

// TestWarningsGolden shows a node's unit-file warnings (systemd-analyze
// verify on the node) in `status` and `node show`.
func TestWarningsGolden(t *testing.T) {
	warn := "units/web.service:4: Unknown key 'ExecStrat' in section [Service], ignoring."
	for _, tt := range []struct{ name, cmd string }{
		{"status-warnings", "status"},
		{"node-show-warnings", "node show web-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			for i := range f.nodes {
				if f.nodes[i].Name == "web-1" {
					f.nodes[i].Report.Warnings = []string{warn}
				}
			}
			r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken}), strings.Fields(tt.cmd)...)
			got := r.transcript()
			if !strings.Contains(got, warn) {
				t.Errorf("%s does not show the warning:\n%s", tt.cmd, got)
			}
			checkGolden(t, tt.name, strings.ReplaceAll(got, f.URL(), "$SERVER"))
		})
	}
}
