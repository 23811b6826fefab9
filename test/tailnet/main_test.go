// Package tailnet is the mesh end-to-end suite: a real tailnet (Tailscale's
// test control server with DERP and STUN), slipway-server on its own tsnet
// node, and real systemd nodes (systemd-nspawn) whose agents run their own
// tsnet nodes and serf members, all inside one network namespace the suite
// creates: the test process re-executes itself in it (TestMain), so the
// control server, the DERP server, slipway-server and every node share
// only that namespace's loopback (plus a veth pair whose two ends are both
// inside it, for a default route), and no packet of the suite can leave it.
//
// TestHostTailscaled runs real tailscaled daemons instead (built from the
// module at go.mod's version and cached under /var/cache/slipway/
// tailscaled): the server's host with a TUN device in that namespace, the
// agents' in userspace networking with SOCKS5 proxies on its loopback.
//
// It needs root, iproute2 (`ip netns`) and what test/nspawn needs; without
// them it skips, or fails under SLIPWAY_E2E=1.
package tailnet

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// envNetns names the namespace the re-executed test process runs in.
const envNetns = "SLIPWAY_TAILNET_NETNS"

var (
	binDir   string // slipway-agent, slipway-server, slipway
	netnsDir string // /run/netns/<name>: nodes join it
	skipWhy  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if ns := os.Getenv(envNetns); ns != "" {
		netnsDir = filepath.Join("/run/netns", ns)
		binDir = os.Getenv("SLIPWAY_TAILNET_BIN")
		return m.Run()
	}
	if os.Geteuid() != 0 {
		skipWhy = "not root: the suite creates a network namespace and boots systemd-nspawn nodes"
	} else if _, err := exec.LookPath("ip"); err != nil {
		skipWhy = "ip (iproute2) missing"
	}
	if skipWhy != "" {
		return m.Run() // every test skips (or fails under SLIPWAY_E2E=1)
	}

	dir, err := os.MkdirTemp("", "slipway-tailnet-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	build := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./agent/cmd/slipway-agent", "./server/cmd/slipway-server", "./operator/cmd/slipway")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tailnet: build binaries: %v\n%s", err, out)
		return 1
	}

	ns := fmt.Sprintf("slipway-tn-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tailnet: ip netns add %s: %v\n%s", ns, err, out)
		return 1
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "tailnet: ip netns del %s: %v\n%s", ns, err, out)
		}
	}()
	// Loopback, plus a veth pair with both ends inside the namespace and
	// a default route over it: Tailscale pauses its control client while
	// it sees no network with a default route, and packets sent "out"
	// land on the other end (no address there) and are dropped — nothing
	// leaves the namespace.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "tn0", "type", "veth", "peer", "name", "tn1"},
		{"addr", "add", "10.254.0.1/24", "dev", "tn0"},
		{"link", "set", "tn0", "up"},
		{"link", "set", "tn1", "up"},
		{"route", "add", "default", "via", "10.254.0.2", "dev", "tn0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "tailnet: ip -n %s %v: %v\n%s", ns, args, err, out)
			return 1
		}
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// nsenter, not `ip netns exec`: that one also remounts /sys in a new
	// mount namespace, which hides the cgroup hierarchy nspawn needs.
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, exe}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envNetns+"="+ns, "SLIPWAY_TAILNET_BIN="+dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// An interrupt goes to the re-executed tests; this process stays to
	// delete the namespace when they are gone.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "tailnet: re-exec in %s: %v\n", ns, err)
		return 1
	}
	go func() {
		for sig := range sigs {
			_ = cmd.Process.Signal(sig)
		}
	}()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "tailnet: re-exec in %s: %v\n", ns, err)
		return 1
	}
	return 0
}

// needSuite skips (or fails under SLIPWAY_E2E=1) when the suite cannot run.
func needSuite(t *testing.T) {
	t.Helper()
	if skipWhy == "" {
		return
	}
	if os.Getenv("SLIPWAY_E2E") == "1" {
		t.Fatalf("%s, and SLIPWAY_E2E=1 forbids skipping", skipWhy)
	}
	t.Skip(skipWhy)
}
