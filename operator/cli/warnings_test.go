package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
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

// TestLoaderRefusesBadUnits: deploy, deploy --dry-run and diff load the
// release first; a malformed unit or a unit naming an artifact the release
// lacks fails with the file and line, before any request to the server.
func TestLoaderRefusesBadUnits(t *testing.T) {
	units := []struct{ name, unit, want string }{
		{"malformed", "[Unit]\nDescription=web\n[Service\nExecStart=/bin/true\n", `units/web.service:3: section header "[Service" is missing "]"`},
		{"missing artifact", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/wbe\n", `units/web.service:2: ExecStart= names current/artifacts/wbe, which this release does not contain (no artifact "wbe")`},
	}
	for _, u := range units {
		for _, args := range [][]string{{"deploy"}, {"deploy", "--dry-run"}, {"diff"}} {
			t.Run(strings.Join(args, " ")+" "+u.name, func(t *testing.T) {
				f := newFakeServer(t)
				dir := t.TempDir()
				writeRelease(t, dir, "role=web")
				if err := os.WriteFile(filepath.Join(dir, "units", "web.service"), []byte(u.unit), 0o644); err != nil {
					t.Fatal(err)
				}
				r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: adminToken}), append(args, dir)...)
				if r.err == nil || !strings.Contains(r.err.Error(), u.want) {
					t.Errorf("%v: err = %v, want it to contain %q", args, r.err, u.want)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if len(f.requests) != 0 {
					t.Errorf("%v: %d requests to the server, want none", args, len(f.requests))
				}
			})
		}
	}
}

// TestReportOutcomeLabel: a report's outcome is the switch's result, but
// while a switch is under way it is the last attempt's ("retrying"): the
// label says which.
func TestReportOutcomeLabel(t *testing.T) {
	at := func(time.Time) string { return "now" }
	for _, tc := range []struct {
		rep  api.Report
		want string
	}{
		{api.Report{State: api.AgentSwitching, Target: "sha256-b", Outcome: "retrying", Reason: "no space left on device"}, "  last attempt:\tretrying\n"},
		{api.Report{State: api.AgentIdle, Outcome: "switched"}, "  outcome:\tswitched\n"},
		{api.Report{State: api.AgentFailed, Outcome: "reverted", Reason: "unhealthy"}, "  outcome:\treverted\n"},
	} {
		var b strings.Builder
		printReportFields(&b, &tc.rep, at)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s report printed:\n%s\nwant a line %q", tc.rep.State, b.String(), tc.want)
		}
	}
}
