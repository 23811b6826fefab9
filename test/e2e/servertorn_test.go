package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestServerRefusesTornStore copies a running slipway-server's store.db
// the way a backup script's cp does while the server commits: the first
// half, then 200 more writes through the API, then the rest. A real
// slipway-server started on that copy, and on a copy that stopped at half
// the file, exits non-zero at once with an error naming the file and what
// is wrong, and leaves the file as it was.
func TestServerRefusesTornStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	write := func(n int) {
		for range n {
			_, err := s.client.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "10m"})
			must(t, err)
		}
	}
	write(1000)
	src := filepath.Join(dir, "state", "store.db")
	fi, err := os.Stat(src)
	must(t, err)
	t.Logf("store.db: %d bytes", fi.Size())

	torn := filepath.Join(t.TempDir(), "torn")
	must(t, os.MkdirAll(torn, 0o700))
	in, err := os.Open(src)
	must(t, err)
	out, err := os.Create(filepath.Join(torn, "store.db"))
	must(t, err)
	_, err = io.CopyN(out, in, fi.Size()/2)
	must(t, err)
	write(200)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, errors.Join(in.Close(), out.Close()))

	short := filepath.Join(t.TempDir(), "short")
	must(t, os.MkdirAll(short, 0o700))
	b, err := os.ReadFile(src)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(short, "store.db"), b[:len(b)/2], 0o600))

	for name, tc := range map[string]struct{ dir, want string }{
		"torn":    {torn, "corrupt: "},
		"stopped": {short, "a copy that stopped early"},
	} {
		t.Run(name, func(t *testing.T) {
			db := filepath.Join(tc.dir, "store.db")
			before, err := os.ReadFile(db)
			must(t, err)
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, filepath.Join(binDir, "slipway-server"), "--state-dir", tc.dir, "--listen", freeAddr(t), "--log-format", "json")
			outb, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || cctx.Err() != nil {
				t.Fatalf("slipway-server on a %s copy: %v (want a non-zero exit at start)\n%s", name, err, outb)
			}
			t.Logf("exit %d: %s", ee.ExitCode(), strings.TrimSpace(string(outb)))
			if !strings.Contains(string(outb), "open store "+db+": ") || !strings.Contains(string(outb), tc.want) {
				t.Errorf("the error does not name %s and %q:\n%s", db, tc.want, outb)
			}
			after, err := os.ReadFile(db)
			if err != nil || string(after) != string(before) {
				t.Errorf("the refused file changed (%v)", err)
			}
		})
	}
}
