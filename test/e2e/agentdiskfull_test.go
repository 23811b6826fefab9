package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// diskFullTOML declares one artifact, bin/big, of whatever size the test
// writes.
const diskFullTOML = `name = "diskfull"
[health]
min_healthy_time = "1s"
healthy_deadline = "20s"
[[artifact]]
name = "big"
path = "bin/big"
mode = "0644"
`

// writeBig writes release name with app.service saying version and an
// artifact of size random bytes.
func (n *node) writeBig(name, version string, size int) {
	n.t.Helper()
	n.write(name, rel{toml: diskFullTOML, units: map[string]string{"app.service": "[Unit]\nDescription=disk full e2e " + version + "\n" + sleeper}})
	b := make([]byte, size)
	_, _ = rand.Read(b)
	must(n.t, os.MkdirAll(filepath.Join(n.releases, name, "bin"), 0o755))
	must(n.t, os.WriteFile(filepath.Join(n.releases, name, "bin", "big"), b, 0o644))
}

// TestAgentDiskFull: on a real node whose /var/lib/slipway is an 8 MiB
// tmpfs, or an 8 MiB ext4 file system on a loop device, staging a release whose artifact is larger than the free space
// fails cleanly: apply exits non-zero naming the cause (no space left on
// device) and the path, the running generation is untouched (current,
// its unit running, status), the partial staging and the partial blob are
// removed (the space used outside state.db is what it was), and status tells the truth. A
// release that fits applies afterwards. With the file system full to the
// last byte, and with a release whose 3 MiB file is larger than the free space (2 MiB),
// the same holds.
func TestAgentDiskFull(t *testing.T) {
	for _, kind := range []string{"tmpfs", "ext4"} {
		t.Run(kind, func(t *testing.T) { agentDiskFull(t, kind) })
	}
}

// bootSmallStateNode boots a node whose /var/lib/slipway is an 8 MiB
// tmpfs mounted inside it, or an 8 MiB ext4 image on a loop device
// mounted on the host and bound in.
func bootSmallStateNode(t *testing.T, kind string) *node {
	if kind == "tmpfs" {
		n := bootNode(t, "dfull")
		n.sh("mkdir -p /var/lib/slipway && mount -t tmpfs -o size=8m,mode=0755 slipway-state /var/lib/slipway")
		return n
	}
	state := filepath.Join(t.TempDir(), "state")
	mountSmall(t, state, "ext4")
	rel := t.TempDir()
	n := nspawn.BootT(t, "dfullx", nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: rel, Node: nodeReleases, ReadOnly: true},
		{Host: state, Node: "/var/lib/slipway"},
	}})
	return &node{Node: n, t: t, releases: rel}
}

func agentDiskFull(t *testing.T, kind string) {
	n := bootSmallStateNode(t, kind)
	n.writeBig("small1", "v1", 1<<20)
	n.writeBig("huge", "v2", 12<<20)
	n.writeBig("small2", "v3", 1<<20)
	n.write("hugefile", rel{toml: strings.Replace(diskFullTOML, `name = "diskfull"`, "name = \"diskfull\"\n[[link]]\npath = \"/etc/diskfull.txt\"\nfile = \"big.txt\"", 1),
		units: map[string]string{"app.service": "[Unit]\nDescription=disk full e2e v2f\n" + sleeper},
		files: map[string]string{"big.txt": strings.Repeat("0123456789abcdef", 3<<20/16)}})
	must(t, os.MkdirAll(filepath.Join(n.releases, "hugefile", "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(n.releases, "hugefile", "bin", "big"), []byte("small\n"), 0o644))
	// Space used by everything but state.db, which records the failure
	// (on ext4 it grew from 32 KiB to 64 KiB doing so, once the partial
	// blob's space was given back).
	used := func() string {
		return strings.TrimSpace(n.sh("du -s -B1 --exclude=state.db /var/lib/slipway | cut -f1"))
	}
	leftovers := func() string {
		return strings.TrimSpace(n.sh("cd /var/lib/slipway && find . -name '.stage-*' -o -name '.fetch-*' -o -name '*.tmp*'"))
	}

	if o, stderr, code := n.apply("small1"); code != 0 || o.Outcome != "switched" || o.To != 1 {
		t.Fatalf("apply small1: exit %d %+v\n%s", code, o, stderr)
	}
	n.expectActive("app.service")

	refused := func(t *testing.T, release string) {
		n.t = t
		before, snap := used(), n.snapshot()
		o, stderr, code := n.apply(release)
		t.Logf("apply %s: exit %d, %+v", release, code, o)
		if code == 0 || o.Outcome == "switched" {
			t.Fatalf("apply %s on a full disk: exit %d %+v", release, code, o)
		}
		msg := o.Error + " " + o.Reason + " " + stderr
		if !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, "/var/lib/slipway/") {
			t.Errorf("the failure does not name the cause and the path: %+v\n%s", o, stderr)
		}
		st := n.statusJSON()
		if currentNumber(st) != 1 || st["switch_in_progress"] != nil {
			t.Errorf("status after the failure: current %d, switch in progress %v", currentNumber(st), st["switch_in_progress"])
		}
		if got := n.sh("systemctl show -p Description --value app.service"); !strings.Contains(got, "v1") {
			t.Errorf("app.service is now %q, want v1's", got)
		}
		n.expectActive("app.service")
		if l := leftovers(); l != "" {
			t.Errorf("left behind:\n%s", l)
		}
		if after := used(); after != before {
			t.Errorf("used %s bytes before, %s after", before, after)
		}
		if got := n.snapshot(); got != snap {
			t.Errorf("files changed: %s", lineDiff(snap, got))
		}
	}
	t.Run("artifact larger than the free space", func(t *testing.T) { refused(t, "huge") })
	t.Run("file larger than the free space", func(t *testing.T) {
		n.t = t
		n.sh("head -c $(( $(df --output=avail -B1 /var/lib/slipway | tail -1) - (2 << 20) )) /dev/zero > /var/lib/slipway/ballast")
		refused(t, "hugefile")
		n.sh("rm /var/lib/slipway/ballast")
	})
	t.Run("file system full to the last byte", func(t *testing.T) {
		n.t = t
		n.sh("dd if=/dev/zero of=/var/lib/slipway/filler bs=64k 2>/dev/null || true")
		refused(t, "small2")
		n.sh("rm /var/lib/slipway/filler")
	})
	t.Run("a release that fits applies once there is room", func(t *testing.T) {
		n.t = t
		o, stderr, code := n.apply("small2")
		if code != 0 || o.Outcome != "switched" {
			t.Fatalf("apply small2: exit %d %+v\n%s", code, o, stderr)
		}
		if got := n.sh("systemctl show -p Description --value app.service"); !strings.Contains(got, "v3") {
			t.Errorf("app.service is %q, want v3's", got)
		}
	})
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestAgentDiskFullThroughServer: a node whose agent runs as a service of
// a real slipway-server, with its state dir on an 8 MiB tmpfs, is sent a
// release whose artifact does not fit: the agent keeps the release before
// and reports "retrying" with ENOSPC and the path (a full disk may pass),
// the rollout fails at its deadline naming the node and that reason, the
// server's view and the agent's status agree on what runs, nothing is
// left behind; the next release that fits converges.
func TestAgentDiskFullThroughServer(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootAllT(t, []string{"dfsrv"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: releases, Node: nodeReleases, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	if _, stderr, err := raw[0].Exec(ctx, "/bin/sh", "-c", "mkdir -p /var/lib/slipway && mount -t tmpfs -o size=8m,mode=0755 slipway-state /var/lib/slipway"); err != nil {
		t.Fatalf("mount: %v %s", err, stderr)
	}
	a := startAgent(t, raw[0], s, releases)
	s.waitFleet(t, time.Minute, api.NodeNew, []string{a.Name})
	a.writeBig("small1", "v1", 1<<20)
	a.writeBig("huge", "v2", 12<<20)
	a.writeBig("small2", "v3", 1<<20)
	v1 := s.waitRollout(t, s.deployCLI(t, filepath.Join(releases, "small1")), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if v1.State != api.RolloutSucceeded {
		t.Fatalf("small1: %s (%s)", v1.State, v1.Reason)
	}
	huge := s.waitRollout(t, s.deployCLI(t, filepath.Join(releases, "huge")), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if huge.State != api.RolloutFailed || !strings.Contains(huge.Reason, "no space left on device") || !strings.Contains(huge.Reason, a.Name) {
		t.Errorf("rollout of huge: %s (%s), want failed naming %s and ENOSPC", huge.State, huge.Reason, a.Name)
	}
	// A full disk may pass: the agent reports it and tries again with a
	// growing backoff; the node never leaves small1. An attempt may be
	// under way as the rollout fails (its report, "switching", still names
	// the last attempt's cause): look between attempts.
	var node api.Node
	waitFor(t, 30*time.Second, "the agent between two attempts", func() error {
		var err error
		if node, err = s.client.Node(ctx, a.Name); err == nil && node.Report != nil && node.Report.State == api.AgentSwitching {
			err = fmt.Errorf("node %s: an attempt is under way", node.State)
		}
		return err
	})
	if node.Actual != v1.Manifest || node.Report == nil || node.Report.Outcome != "retrying" || node.Report.Target != huge.Manifest {
		t.Errorf("the server's view: %s, actual %s (small1 %s), report %+v", node.State, node.Actual, v1.Manifest, node.Report)
	} else if r := node.Report.Reason; !strings.Contains(r, "no space left on device") || !strings.Contains(r, "/var/lib/slipway/") {
		t.Errorf("the node's reason does not name the cause and the path: %q", r)
	}
	st := a.statusJSON()
	if cur, _ := st["current"].(map[string]any); cur["id"] != v1.Manifest || st["switch_in_progress"] != nil {
		t.Errorf("the agent's status: current %v, switch in progress %v; want small1 %s", cur["id"], st["switch_in_progress"], v1.Manifest)
	}
	if got := a.sh("systemctl show -p Description --value app.service"); !strings.Contains(got, "v1") {
		t.Errorf("app.service is %q, want v1's", got)
	}
	if l := strings.TrimSpace(a.sh("cd /var/lib/slipway && find . -name '.stage-*' -o -name '.fetch-*'")); l != "" {
		t.Errorf("left behind:\n%s", l)
	}
	v3 := s.waitRollout(t, s.deployCLI(t, filepath.Join(releases, "small2")), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if v3.State != api.RolloutSucceeded {
		t.Fatalf("small2 after the failure: %s (%s)", v3.State, v3.Reason)
	}
	s.waitFleet(t, time.Minute, api.NodeConverged, []string{a.Name})
}

// deployCLI deploys a release directory with `slipway deploy --detach`
// (which uploads its artifacts) and returns its rollout's ID.
func (s *server) deployCLI(t *testing.T, dir string) string {
	t.Helper()
	if out, stderr, err := s.slipway("deploy", "--detach", dir); err != nil {
		t.Fatalf("slipway deploy %s: %v\n%s%s", dir, err, out, stderr)
	}
	ros, err := s.client.Rollouts(context.Background())
	must(t, err)
	return ros[0].ID
}
