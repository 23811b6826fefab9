package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/activate"
)

// A bad SLIPWAY_CRASH_AT stops a command before it creates its state
// directory or dials systemd, naming the variable and the known points.
func TestBadCrashEnvRefused(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"nowhere", `unknown crash point "nowhere"`},
		{"flip:0", "whole number ≥ 1"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			t.Setenv(activate.CrashEnv, tc.value)
			dir := t.TempDir()
			cfg := filepath.Join(dir, "agent.toml")
			if err := os.WriteFile(cfg, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			state := filepath.Join(dir, "state")
			err := Run(context.Background(), []string{"recover", "--config", cfg, "--state-dir", state}, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), activate.CrashEnv) {
				t.Fatalf("error %v, want one naming %s and %q", err, activate.CrashEnv, tc.want)
			}
			if _, err := os.Stat(state); !os.IsNotExist(err) {
				t.Errorf("state directory created: %v", err)
			}
		})
	}
}
