package activate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/slipway-dev/slipway/shared/generation"
)

// TestApplyRefusesWorldAccessModes: the agent validates modes itself (a
// manifest from anywhere, not only from the loader): a world-writable file
// or a world-readable secret is refused before anything changes, unless the
// manifest sets allow_world_writable.
func TestApplyRefusesWorldAccessModes(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *generation.Manifest)
	}{
		{"world-writable file", func(m *generation.Manifest) {
			m.Files = map[string]generation.File{"a.conf": {Content: "x", Mode: "0666"}}
		}},
		{"world-readable secret", func(m *generation.Manifest) {
			m.Secrets = []generation.Secret{{Name: "db", Ciphertext: "-----BEGIN AGE ENCRYPTED FILE-----\nx\n-----END AGE ENCRYPTED FILE-----\n", Mode: "0644"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			m := manifest(map[string]string{"a.service": svc("1")})
			tt.change(m)
			_, err := e.apply(m)
			if !errors.Is(err, generation.ErrWorldAccess) {
				t.Fatalf("apply = %v, want ErrWorldAccess", err)
			}
			if c := e.sd.takeCalls(); len(c) != 0 {
				t.Errorf("systemd calls made: %q", c)
			}
			if _, err := os.Lstat(e.layout.Current()); !os.IsNotExist(err) {
				t.Errorf("current exists (%v): the refused generation changed the node", err)
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		e := newEnv(t)
		m := manifest(map[string]string{"a.service": svc("1")})
		m.Files = map[string]generation.File{"a.conf": {Content: "x", Mode: "0666"}}
		m.AllowWorldWritable = true
		if _, err := e.apply(m); err != nil {
			t.Fatalf("apply with allow_world_writable: %v", err)
		}
		fi, err := os.Stat(filepath.Join(e.layout.Current(), "files", "a.conf"))
		if err != nil || fi.Mode().Perm() != 0o666 {
			t.Errorf("staged file: %v, %v; want mode 0666", fi, err)
		}
	})
}
