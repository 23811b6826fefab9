package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "agent.toml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	tests := []struct {
		name, file string
		want       string // error substring; "" = ok
	}{
		{"defaults", "", ""},
		{"override", "state_dir = \"/srv/slipway\"\njob_timeout = \"10s\"\n", ""},
		{"unknown key", "state_dirr = \"/x\"\n", "unknown key(s): state_dirr"},
		{"relative", "state_dir = \"var/lib\"\n", "state_dir"},
		{"root prefix", "link_prefixes = [\"/\"]\n", "link_prefixes[0]"},
		{"bad duration", "job_timeout = \"soon\"\n", "invalid duration"},
		{"bad level", "log_level = \"loud\"\n", "log_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(write(tt.file), true)
			if err == nil {
				err = c.Validate()
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	c, err := Load(filepath.Join(dir, "override-check.toml"), false)
	if err != nil || c.StateDir != "/var/lib/slipway" || time.Duration(c.JobTimeout) != 3*time.Minute {
		t.Fatalf("missing default file: %+v, %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Fatal("missing explicit file accepted")
	}
}
