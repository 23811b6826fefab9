package nspawn

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTwoNodes boots two real nodes at once and checks what end-to-end
// suites rely on: both run, they share nothing (overlay, network), Exec
// reports exit codes, binds are read-only when asked, Stop powers off.
func TestTwoNodes(t *testing.T) {
	shared := t.TempDir()
	const hello = "hello from the host\n"
	if err := os.WriteFile(filepath.Join(shared, "hello"), []byte(hello), 0o644); err != nil {
		t.Fatal(err)
	}
	root := RootT(t)
	start := time.Now()
	nodes := BootAllT(t, []string{"e2e-a", "e2e-b"}, Options{
		Binds: []Bind{{Host: shared, Node: "/mnt/shared", ReadOnly: true}},
		Env:   []string{"SLIPWAY_TEST=yes"},
	})
	t.Logf("both nodes running %s after the first boot started", time.Since(start).Round(time.Millisecond))
	a, b := nodes[0], nodes[1]
	ctx := t.Context()

	t.Run("running", func(t *testing.T) {
		for _, n := range nodes {
			out, _, err := n.Exec(ctx, "systemctl", "is-system-running")
			if err != nil || strings.TrimSpace(out) != "running" {
				t.Errorf("%s: is-system-running = %q, %v", n.Name, out, err)
			}
			if out, _, err := n.Exec(ctx, "hostname"); err != nil || strings.TrimSpace(out) != n.Name {
				t.Errorf("%s: hostname = %q, %v", n.Name, out, err)
			}
			if out, _, err := n.Exec(ctx, "sh", "-c", "echo $SLIPWAY_TEST:$PATH:${HOME-unset}"); err != nil ||
				strings.TrimSpace(out) != "yes:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:unset" {
				t.Errorf("%s: environment = %q, %v", n.Name, out, err)
			}
		}
		idA, errA := a.ReadFile("/etc/machine-id")
		idB, errB := b.ReadFile("/etc/machine-id")
		if errA != nil || errB != nil || len(strings.TrimSpace(string(idA))) != 32 || string(idA) == string(idB) {
			t.Errorf("machine IDs %q (%v), %q (%v): want two different ones", idA, errA, idB, errB)
		}
	})

	t.Run("overlay", func(t *testing.T) {
		const probe = "/var/tmp/slipway-overlay-probe"
		if _, _, err := a.Exec(ctx, "sh", "-c", "echo written-in-a > "+probe); err != nil {
			t.Fatal(err)
		}
		if got, err := a.ReadFile(probe); err != nil || string(got) != "written-in-a\n" {
			t.Errorf("a: ReadFile = %q, %v", got, err)
		}
		_, _, err := b.Exec(ctx, "test", "-e", probe)
		if ee := (*ExitError)(nil); !errors.As(err, &ee) || ee.Code != 1 {
			t.Errorf("b: test -e %s = %v, want exit status 1", probe, err)
		}
		if _, err := b.ReadFile(probe); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("b: ReadFile = %v, want not exist", err)
		}
		if _, err := os.Stat(filepath.Join(root, probe)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cached root: %v, want not exist", err)
		}
		// WriteFile goes into b's overlay only.
		if err := b.WriteFile("/var/tmp/from-host", []byte("via WriteFile"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, _, err := b.Exec(ctx, "stat", "-c", "%a %U", "/var/tmp/from-host"); err != nil || strings.TrimSpace(out) != "600 root" {
			t.Errorf("b: stat = %q, %v", out, err)
		}
		if _, err := os.Stat(filepath.Join(root, "var/tmp/from-host")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cached root: %v, want not exist", err)
		}
		// Paths resolve inside the node: the node has no /etc/hostname
		// (the host does), and a symlink to it must not reach the host.
		if _, _, err := a.Exec(ctx, "ln", "-sf", "/etc/hostname", "/var/tmp/escape"); err != nil {
			t.Fatal(err)
		}
		if got, err := a.ReadFile("/var/tmp/escape"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a: ReadFile through an absolute symlink = %q, %v; want not exist (resolved in the node)", got, err)
		}
		if got, err := a.ReadFile("/../../../etc/os-release"); err != nil || !strings.Contains(string(got), "bookworm") {
			t.Errorf("a: ReadFile(/../../../etc/os-release) = %q, %v", got, err)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		if _, _, err := a.Exec(ctx, "true"); err != nil {
			t.Errorf("true: %v", err)
		}
		out, errOut, err := a.Exec(ctx, "sh", "-c", "echo out; echo err >&2; exit 3")
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 3 || ee.Stderr != "err\n" || out != "out\n" || errOut != "err\n" {
			t.Errorf("exit 3: out %q, err %q, %#v", out, errOut, err)
		}
		if _, _, err := a.Exec(ctx, "/no/such/binary"); !errors.As(err, &ee) || ee.Code == 0 {
			t.Errorf("missing binary: %v, want *ExitError", err)
		}
	})

	t.Run("bind read-only", func(t *testing.T) {
		for _, n := range nodes {
			if got, err := n.ReadFile("/mnt/shared/hello"); err != nil || string(got) != hello {
				t.Errorf("%s: ReadFile = %q, %v", n.Name, got, err)
			}
			_, _, err := n.Exec(ctx, "touch", "/mnt/shared/new")
			var ee *ExitError
			if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "Read-only file system") {
				t.Errorf("%s: touch in a read-only bind: %v", n.Name, err)
			}
		}
		if entries, _ := os.ReadDir(shared); len(entries) != 1 {
			t.Errorf("host dir changed: %v", entries)
		}
	})

	t.Run("private network", func(t *testing.T) {
		port := 20000 + rand.IntN(10000)
		marker := "probe-from-" + a.Name
		// A socket unit in a answers every connection with the marker.
		units := map[string]string{
			"/run/systemd/system/probe.socket": fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\nAccept=yes\n", port),
			"/run/systemd/system/probe@.service": fmt.Sprintf("[Service]\nExecStart=/bin/echo %s\n"+
				"StandardInput=socket\nStandardOutput=socket\n", marker),
		}
		for path, text := range units {
			if err := a.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, argv := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "start", "probe.socket"}} {
			if _, _, err := a.Exec(ctx, argv...); err != nil {
				t.Fatal(err)
			}
		}
		dial := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && cat <&3", port)
		if out, _, err := a.Exec(ctx, "bash", "-c", dial); err != nil || strings.TrimSpace(out) != marker {
			t.Errorf("a: connect to its own 127.0.0.1:%d = %q, %v", port, out, err)
		}
		if out, _, err := b.Exec(ctx, "bash", "-c", dial); err == nil || strings.Contains(out, marker) {
			t.Errorf("b: connect to 127.0.0.1:%d = %q, %v; want refused", port, out, err)
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			k, _ := c.Read(buf)
			c.Close()
			if strings.Contains(string(buf[:k]), marker) {
				t.Errorf("host reached a's 127.0.0.1:%d", port)
			}
		}
		for _, n := range nodes {
			out, _, err := n.Exec(ctx, "ip", "-o", "link", "show")
			if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, ": lo:") {
				t.Errorf("%s: links = %q, %v; want lo only", n.Name, out, err)
			}
		}
	})

	t.Run("own cgroups", func(t *testing.T) {
		cgA, errA := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", a.Leader))
		cgB, errB := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", b.Leader))
		if errA != nil || errB != nil || !strings.Contains(string(cgA), "/"+cgroupGroup+"/"+a.Name+"/") ||
			!strings.Contains(string(cgB), "/"+cgroupGroup+"/"+b.Name+"/") {
			t.Errorf("leaders' cgroups:\n%s\n%s\n(%v, %v)", cgA, cgB, errA, errB)
		}
		// The same unit in both nodes: stopping it in one must leave the
		// other alone.
		for _, n := range nodes {
			if _, _, err := n.Exec(ctx, "systemd-run", "--unit=cg-probe", "sleep", "600"); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := a.Exec(ctx, "systemctl", "stop", "cg-probe"); err != nil {
			t.Fatal(err)
		}
		if out, _, err := b.Exec(ctx, "systemctl", "is-active", "cg-probe"); err != nil || strings.TrimSpace(out) != "active" {
			t.Errorf("b: cg-probe after stopping a's = %q, %v", out, err)
		}
		if out, _, err := b.Exec(ctx, "systemctl", "show", "-P", "MainPID", "cg-probe"); err != nil || strings.TrimSpace(out) == "0" {
			t.Errorf("b: cg-probe main PID = %q, %v", out, err)
		}
	})

	t.Run("start", func(t *testing.T) {
		cmd, err := a.Start(ctx, "sh", "-c", "echo started-in-background")
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(a.ConsoleLog(), "started-in-background") {
			t.Errorf("Start output not in the console log")
		}
		// A long-running one dies with the node.
		if _, err := a.Start(ctx, "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("stop", func(t *testing.T) {
		leader := a.Leader
		start := time.Now()
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("%s powered off in %s", a.Name, took.Round(time.Millisecond))
		// Not a benchmark: a node that takes its whole DefaultTimeoutStopSec
		// (10 s) waited for a process started with Start that Stop should
		// have ended first.
		if took > 8*time.Second {
			t.Errorf("Stop took %s: a process outside the node's view held up its shutdown", took)
		}
		if err := a.Stop(ctx); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if a.running() || alive(leader) {
			t.Errorf("node still there after Stop")
		}
		if _, err := os.Stat(filepath.Join("/run/systemd/nspawn/propagate", a.Name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("propagation dir left behind: %v", err)
		}
		for _, dir := range a.cgroups {
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("cgroup %s left behind: %v", dir, err)
			}
		}
		if len(a.cgroups) == 0 {
			t.Errorf("node had no cgroups of its own")
		}
		if !strings.Contains(a.ConsoleLog(), "Powering off") && !strings.Contains(a.ConsoleLog(), "has been shut down") {
			t.Errorf("console log shows no power-off:\n%s", a.consoleTail(10))
		}
		// b is unaffected.
		if out, _, err := b.Exec(ctx, "systemctl", "is-system-running"); err != nil || strings.TrimSpace(out) != "running" {
			t.Errorf("b after a stopped: %q, %v", out, err)
		}
	})
}

// TestBootT checks the single-node helper end to end.
func TestBootT(t *testing.T) {
	n := BootT(t, "e2e-single", Options{StopTimeout: 5 * time.Second})
	if !strings.HasPrefix(n.Name, "e2e-single-") {
		t.Errorf("name %q", n.Name)
	}
	if !strings.Contains(n.ConsoleLog(), "Welcome to") {
		t.Errorf("console log lacks the boot banner:\n%s", n.consoleTail(20))
	}
}
