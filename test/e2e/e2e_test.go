// Package e2e runs slipway on real systemd nodes (systemd-nspawn, see
// test/nspawn): the agent switches real units over D-Bus inside the node.
// The tests need root; with SLIPWAY_E2E=1 (make test, CI) a missing
// prerequisite fails instead of skipping.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/test/nspawn"
)

// binDir holds the binaries built for the nodes (static, CGO off).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "slipway-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./agent/cmd/slipway-agent", "./test/cmd/slipway-testsvc",
		"./server/cmd/slipway-server", "./operator/cmd/slipway")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build binaries: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

// node wraps a booted node with the agent binary and a releases directory
// bound in.
type node struct {
	*nspawn.Node
	t        testing.TB
	releases string // host side of /releases
}

const (
	nodeBin      = "/opt/slipway/bin"
	nodeReleases = "/releases"
	agentBin     = nodeBin + "/slipway-agent"
)

func bootNode(t testing.TB, name string) *node {
	t.Helper()
	rel := t.TempDir()
	n := nspawn.BootT(t, name, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: rel, Node: nodeReleases, ReadOnly: true},
	}})
	return &node{Node: n, t: t, releases: rel}
}

// outcome is the JSON printed by apply/rollback/recover --json.
type outcome struct {
	Op      string `json:"op"`
	Outcome string `json:"outcome"`
	From    int    `json:"from"`
	To      int    `json:"to"`
	ID      string `json:"id"`
	Reason  string `json:"reason"`
	Error   string `json:"error"`
	Plan    struct {
		Added, Changed, Removed, Unchanged []string
	} `json:"plan"`
	Timings  map[string]time.Duration `json:"timings_ns"`
	Duration time.Duration            `json:"duration_ns"`
}

// agent runs slipway-agent with args inside the node and returns stdout,
// stderr and the exit code.
func (n *node) agent(args ...string) (string, string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stdout, stderr, err := n.Exec(ctx, append([]string{agentBin, "--log-format", "json"}, args...)...)
	code := 0
	var ee *nspawn.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.Code
	case err != nil:
		n.t.Fatalf("slipway-agent %v: %v", args, err)
	}
	return stdout, stderr, code
}

// apply runs `apply --json` on a release already written under releases.
func (n *node) apply(release string, extra ...string) (outcome, string, int) {
	n.t.Helper()
	args := append([]string{"apply", "--json"}, extra...)
	stdout, stderr, code := n.agent(append(args, filepath.Join(nodeReleases, release))...)
	var o outcome
	if strings.TrimSpace(stdout) != "" {
		if err := json.Unmarshal([]byte(stdout), &o); err != nil {
			n.t.Fatalf("apply %s: bad JSON %q: %v\nstderr:\n%s", release, stdout, err, stderr)
		}
	}
	return o, stderr, code
}

// sh runs a shell command in the node and fails the test on error.
func (n *node) sh(script string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := n.Exec(ctx, "/bin/sh", "-c", script)
	if err != nil {
		n.t.Fatalf("sh %q: %v\n%s", script, err, stderr)
	}
	return out
}

// unit reads properties of a unit with systemctl show.
func (n *node) unit(name string) map[string]string {
	n.t.Helper()
	out := n.sh("systemctl show " + name + " -p LoadState -p ActiveState -p SubState -p MainPID -p InvocationID -p Result")
	props := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	return props
}

// rel describes a release directory to write.
type rel struct {
	toml  string
	units map[string]string
	files map[string]string
	web   bool // copy slipway-testsvc to bin/web
}

// write creates release dir name under the node's releases directory.
func (n *node) write(name string, r rel) {
	n.t.Helper()
	dir := filepath.Join(n.releases, name)
	must(n.t, os.MkdirAll(filepath.Join(dir, "units"), 0o755))
	must(n.t, os.WriteFile(filepath.Join(dir, "slipway.toml"), []byte(r.toml), 0o644))
	for u, text := range r.units {
		must(n.t, os.WriteFile(filepath.Join(dir, "units", u), []byte(text), 0o644))
	}
	for f, text := range r.files {
		p := filepath.Join(dir, "files", f)
		must(n.t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(n.t, os.WriteFile(p, []byte(text), 0o644))
	}
	if r.web {
		b, err := os.ReadFile(filepath.Join(binDir, "slipway-testsvc"))
		must(n.t, err)
		must(n.t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
		must(n.t, os.WriteFile(filepath.Join(dir, "bin", "web"), b, 0o755))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor retries f until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}
