package nspawn

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeouts of the test helpers.
const (
	// RootTimeout bounds EnsureRoot in RootT: a first build downloads and
	// unpacks ~100 packages.
	RootTimeout = 10 * time.Minute
	// BootTimeout bounds a node's boot in BootT, from systemd-nspawn's
	// start to "running".
	BootTimeout = 2 * time.Minute
)

// Prerequisites returns why nodes cannot be booted on this host ("" if
// they can): the harness needs root and systemd-nspawn (and debootstrap
// while there is no cached root).
func Prerequisites() string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		missing = append(missing, "systemd-nspawn (Debian package systemd-container)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		missing = append(missing, "nsenter (util-linux)")
	}
	if len(missing) == 0 {
		return ""
	}
	return "end-to-end nodes need " + strings.Join(missing, " and ")
}

// requireE2E skips the test if nodes cannot be booted here, unless
// SLIPWAY_E2E=1 (as in CI), where a missing prerequisite fails the test:
// end-to-end tests never skip silently there.
func requireE2E(t testing.TB) {
	t.Helper()
	reason := Prerequisites()
	if reason == "" {
		return
	}
	if os.Getenv("SLIPWAY_E2E") == "1" {
		t.Fatalf("%s, and SLIPWAY_E2E=1 forbids skipping", reason)
	}
	t.Skipf("%s (set SLIPWAY_E2E=1 to make this a failure)", reason)
}

// rootOnce shares one EnsureRoot per test binary.
var rootOnce struct {
	sync.Mutex
	path string
}

// RootT returns the cached node root, building it first if needed (progress
// goes to the test log). It skips or fails the test like BootT when nodes
// cannot be booted here.
func RootT(t testing.TB) string {
	t.Helper()
	requireE2E(t)
	rootOnce.Lock()
	defer rootOnce.Unlock()
	if rootOnce.path != "" {
		return rootOnce.path
	}
	ctx, cancel := context.WithTimeout(context.Background(), RootTimeout)
	defer cancel()
	root, err := EnsureRoot(ctx, DefaultCacheDir(), logWriter{t})
	if err != nil {
		t.Fatalf("node root: %v", err)
	}
	rootOnce.path = root
	return root
}

// UniqueName returns base with a short random suffix: machine names must be
// unique on the host while a test runs. base must leave room for the
// suffix (7 characters) within 64.
func UniqueName(base string) string {
	return base + "-" + randomHex(3)
}

// BootT boots a node for the test t and waits until it is running. The
// node's name is name with a random suffix (see Node.Name); its console
// log is in the test's temporary directory and is dumped into the test log
// if the test fails. The node is stopped when the test ends. BootT skips
// the test when nodes cannot be booted here (not root, no systemd-nspawn),
// unless SLIPWAY_E2E=1, where that fails it.
func BootT(t testing.TB, name string, opts Options) *Node {
	t.Helper()
	root := RootT(t)
	n, err := bootForTest(t, root, UniqueName(name), opts)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bootForTest boots and waits for one node, registering its cleanup as soon
// as it exists. It may run on any goroutine: it reports by its error, not
// through t (apart from the cleanup).
func bootForTest(t testing.TB, root, name string, opts Options) (*Node, error) {
	if opts.Console == "" {
		opts.Console = filepath.Join(t.TempDir(), name+".console.log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	start := time.Now()
	n, err := Boot(ctx, root, name, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultStopTimeout)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("console of node %s (%s):\n%s", n.Name, n.ConsolePath(), n.consoleTail(200))
		}
	})
	leader := time.Since(start)
	if err := n.WaitRunning(ctx); err != nil {
		return n, err
	}
	t.Logf("node %s: systemd after %s, running after %s", n.Name,
		leader.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return n, nil
}

// BootAllT boots one node per name at the same time, like BootT, and
// returns them in the order of names once all are running.
func BootAllT(t testing.TB, names []string, opts Options) []*Node {
	t.Helper()
	root := RootT(t)
	nodes := make([]*Node, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			nodes[i], errs[i] = bootForTest(t, root, UniqueName(name), opts)
		})
	}
	wg.Wait()
	failed := false
	for _, err := range errs {
		if err != nil {
			t.Error(err)
			failed = true
		}
	}
	if failed {
		t.FailNow()
	}
	return nodes
}

// logWriter writes each line to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
