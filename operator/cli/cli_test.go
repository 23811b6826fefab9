package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testEnv is an environment with the fixed clock, UTC and vars.
func testEnv(vars map[string]string) env {
	return env{
		getenv:       func(k string) string { return vars[k] },
		now:          func() time.Time { return now },
		loc:          time.UTC,
		pollInterval: time.Millisecond,
		progressMin:  8 << 20,
		// stdin is never a terminal unless a test says so.
		stdinTerminal: func(io.Reader) (int, bool) { return 0, false },
		readPassword: func(context.Context, int) ([]byte, error) {
			return nil, errors.New("test: no terminal")
		},
	}
}

type result struct {
	stdout, stderr string
	err            error
}

func runCLI(ctx context.Context, e env, args ...string) result {
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut, e)
	return result{out.String(), errOut.String(), err}
}

// exitCode is the code main exits with.
func exitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	return 1
}

// transcript shows a result as a terminal would, with main's error lines.
func (r result) transcript() string {
	var b strings.Builder
	b.WriteString("-- stdout --\n" + r.stdout)
	if r.stderr != "" {
		b.WriteString("-- stderr --\n" + r.stderr)
	}
	if r.err != nil {
		fmt.Fprintf(&b, "-- exit %d --\nslipway: error: %v\n", exitCode(r.err), r.err)
		if h := Hint(r.err); h != "" {
			fmt.Fprintf(&b, "slipway: hint: %s\n", h)
		}
	}
	return b.String()
}

// checkGolden compares got with testdata/name.golden, or rewrites it with
// -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// Contents of the test release.
const (
	webBlob  = "#!/bin/sh\necho web\n"
	toolBlob = "#!/bin/sh\necho tool\n"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// writeRelease writes a release directory into dir: two path artifacts
// (bin/web, bin/tool), a url artifact, a unit with "&&" and a file.
func writeRelease(t *testing.T, dir, target string) {
	t.Helper()
	files := map[string]string{
		"slipway.toml": `name = "web"
target = "` + target + `"

[health]
min_healthy_time = "10s"

[[health.check]]
name = "web-http"
http = "http://127.0.0.1:8080/health"

[[artifact]]
name = "web"
path = "bin/web"
mode = "0755"

[[artifact]]
name = "tool"
path = "bin/tool"

[[artifact]]
name = "geoip"
url = "https://downloads.example.com/geoip.mmdb"
sha256 = "` + sha("geoip") + `"
size = 4096
`,
		"units/web.service": "[Service]\nExecStart=/bin/sh -c 'test -x /srv/web && exec /srv/web <&-'\n",
		"files/web.conf":    "port = 8080\n",
		"bin/web":           webBlob,
		"bin/tool":          toolBlob,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// withLiveness gives the fake nodes the gossip liveness a server with
// [gossip] reports (new-1 has never been seen in gossip).
func withLiveness(f *fakeServer) {
	for i := range f.nodes {
		n := &f.nodes[i]
		switch n.Name {
		case "db-1":
			n.Liveness, n.LivenessSince = api.LivenessFailed, now.Add(-3*time.Hour)
		case "edge-1":
			n.Liveness, n.LivenessSince = api.LivenessLeft, now.Add(-90*time.Second)
		case "web-2":
			n.Liveness, n.LivenessSince = api.LivenessSuspect, now.Add(-4*time.Second)
		case "web-1":
			n.Liveness, n.LivenessSince = api.LivenessAlive, now.Add(-72*time.Hour)
		}
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		vars  map[string]string // over SLIPWAY_SERVER=<fake>, SLIPWAY_TOKEN=<admin>
		setup func(f *fakeServer)
	}{
		{name: "status", args: []string{"status"}},
		{name: "status-json", args: []string{"status", "--json"}},
		{name: "status-fail-on-unhealthy", args: []string{"status", "--fail-on-unhealthy"}},
		{name: "status-all-converged", args: []string{"status", "--fail-on-unhealthy"}, setup: func(f *fakeServer) {
			f.nodes = f.nodes[:1]
		}},
		{name: "status-empty", args: []string{"status"}, setup: func(f *fakeServer) { f.nodes = nil }},
		{name: "status-follower", args: []string{"status"}, setup: func(f *fakeServer) {
			f.ready = &api.Ready{Status: "ready", Server: &api.ServerName{Name: "coord-2", Address: "10.0.0.12:7420"},
				Leader: &api.ServerName{Name: "coord-1", Address: "10.0.0.11:7420"}}
		}},
		{name: "status-leader", args: []string{"status"}, setup: func(f *fakeServer) {
			f.ready = &api.Ready{Status: "ready", Server: &api.ServerName{Name: "coord-1", Address: "10.0.0.11:7420"},
				Leader: &api.ServerName{Name: "coord-1", Address: "10.0.0.11:7420"}, Leading: true}
		}},
		{name: "status-no-leader", args: []string{"status"}, setup: func(f *fakeServer) {
			f.ready = &api.Ready{Status: "ready", Server: &api.ServerName{Name: "coord-2", Address: "10.0.0.12:7420"}}
		}},
		{name: "nodes", args: []string{"nodes"}},
		{name: "nodes-liveness", args: []string{"nodes"}, setup: withLiveness},
		{name: "status-liveness", args: []string{"status"}, setup: withLiveness},
		{name: "node-show-liveness", args: []string{"node", "show", "db-1"}, setup: withLiveness},
		{name: "nodes-json", args: []string{"nodes", "--json"}},
		{name: "node-show", args: []string{"node", "show", "web-2"}},
		{name: "node-show-new", args: []string{"node", "show", "new-1"}},
		{name: "node-show-json", args: []string{"node", "show", "web-1", "--json"}},
		{name: "node-show-missing", args: []string{"node", "show", "nope"}},
		{name: "generations", args: []string{"generations", "web-2"}},
		{name: "generations-json", args: []string{"generations", "web-1", "--json"}},
		{name: "generations-no-report", args: []string{"generations", "new-1"}},
		{name: "rollback", args: []string{"rollback", "web-2"}},
		{name: "rollback-to", args: []string{"rollback", "web-2", "--to", "2"}},
		{name: "rollback-json", args: []string{"rollback", "web-2", "--to", "2", "--json"}},
		{name: "rollback-to-zero", args: []string{"rollback", "web-2", "--to", "0"}},
		{name: "rollback-to-unknown", args: []string{"rollback", "web-2", "--to", "9"}},
		{name: "rollback-missing-node", args: []string{"rollback", "nope"}},
		{name: "retry", args: []string{"retry", "web-2"}},
		{name: "retry-nothing-failed", args: []string{"retry", "web-1"}},
		{name: "retry-viewer", args: []string{"retry", "web-2"}, vars: map[string]string{"SLIPWAY_TOKEN": viewerToken}},
		{name: "events", args: []string{"events"}},
		{name: "events-since-limit", args: []string{"events", "--since", "1", "--limit", "2"}},
		{name: "events-json", args: []string{"events", "--since", "3", "--json"}},
		{name: "events-none", args: []string{"events", "--since", "5"}},
		{name: "notifications", args: []string{"notifications"}},
		{name: "notifications-json", args: []string{"notifications", "--limit", "1", "--json"}},
		{name: "notifications-none", args: []string{"notifications"}, setup: func(f *fakeServer) { f.notes = nil }},
		{name: "token-create", args: []string{"token", "create", "--ttl", "1h30m"}},
		{name: "token-create-json", args: []string{"token", "create", "--json"}},
		{name: "token-create-deployer", args: []string{"token", "create"}, vars: map[string]string{"SLIPWAY_TOKEN": deployerToken}},
		{name: "token-create-bad-ttl", args: []string{"token", "create", "--ttl", "-1h"}},
		{name: "token-create-node", args: []string{"token", "create", "--node", "web-1"}},
		{name: "node-reset", args: []string{"node", "reset", "web-1"}},
		{name: "node-reset-json", args: []string{"node", "reset", "web-1", "--json"}},
		{name: "node-reset-deployer", args: []string{"node", "reset", "web-1"}, vars: map[string]string{"SLIPWAY_TOKEN": deployerToken}},
		{name: "node-reset-unknown", args: []string{"node", "reset", "nope-1"}},
		{name: "deploy", args: []string{"deploy", "$DIR"}},
		{name: "deploy-json", args: []string{"deploy", "$DIR", "--json"}},
		{name: "deploy-target", args: []string{"deploy", "$DIR", "--target", "role=edge"}},
		{name: "deploy-every-node", args: []string{"deploy", "$DIR", "--target", ""}},
		{name: "deploy-dry-run", args: []string{"deploy", "$DIR", "--dry-run"}},
		{name: "deploy-dry-run-json", args: []string{"deploy", "$DIR", "--dry-run", "--json"}},
		{name: "deploy-bad-target", args: []string{"deploy", "$DIR", "--target", "role=web,,env=prod"}},
		{name: "deploy-not-a-release", args: []string{"deploy", "$DIR/units"}},
		{name: "deploy-viewer", args: []string{"deploy", "$DIR"}, vars: map[string]string{"SLIPWAY_TOKEN": viewerToken}},
		{name: "no-token", args: []string{"nodes"}, vars: map[string]string{"SLIPWAY_TOKEN": ""}},
		{name: "bad-token", args: []string{"nodes"}, vars: map[string]string{"SLIPWAY_TOKEN": "wrong-token-s3cr3t"}},
		{name: "unknown-flag", args: []string{"status", "--bogus"}},
		{name: "extra-arg", args: []string{"retry"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			f.blobs[sha(webBlob)] = []byte(webBlob)
			if tt.setup != nil {
				tt.setup(f)
			}
			dir := t.TempDir()
			writeRelease(t, dir, "role=web, env=prod")
			vars := map[string]string{"SLIPWAY_SERVER": f.URL(), "SLIPWAY_TOKEN": adminToken}
			for k, v := range tt.vars {
				vars[k] = v
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "$DIR", dir)
			}
			r := runCLI(context.Background(), testEnv(vars), args...)
			got := r.transcript()
			for _, tok := range []string{adminToken, deployerToken, viewerToken, "wrong-token-s3cr3t"} {
				if strings.Contains(got, tok) {
					t.Errorf("the output shows a token:\n%s", got)
				}
			}
			got = strings.ReplaceAll(got, dir, "$DIR")
			got = strings.ReplaceAll(got, f.URL(), "$SERVER")
			checkGolden(t, tt.name, got)
		})
	}
}
