package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// Partitions (issue 15, item 3): nodes booted with their own veth link,
// slipway-server in a network namespace of the test's (partNet), the
// agents talking HTTP to it over that real network; links are cut, healed
// and made lossy with nftables rules in the namespace.

// ptFleet is the server, its network and the nodes of a partition test.
type ptFleet struct {
	t        *testing.T
	s        *server
	net      *partNet
	nodes    map[string]*fleetNode
	addr     map[string]string // node name → its address
	names    []string          // sorted
	releases string
	w        *node // writes release directories
}

// ptConfirm is the confirm_timeout of the partition releases: short, so a
// cut link reverts quickly.
const ptConfirm = 8 * time.Second

// ptOffline is the server's offline_after in the partition tests: a node
// cut off for longer shows offline.
const ptOffline = 20 * time.Second

func bootPartitionFleet(t *testing.T, names ...string) *ptFleet {
	t.Helper()
	net := newPartNet(t)
	s := startServerIn(t, t.TempDir(), partListen, net.name, ptOffline)
	releases := t.TempDir()
	raw := nspawn.BootAllT(t, names, nspawn.Options{Network: nspawn.NetworkVeth, Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
	}})
	f := &ptFleet{t: t, s: s, net: net, nodes: map[string]*fleetNode{}, addr: map[string]string{}, releases: releases,
		w: &node{t: t, releases: releases}}
	for i, n := range raw {
		f.addr[n.Name] = net.attach(n, 10+i)
		// Short long-polls and reports: a request stuck on a cut link
		// is given up sooner.
		if _, stderr, err := n.Exec(context.Background(), "mkdir", "-p", "/etc/slipway"); err != nil {
			t.Fatalf("mkdir: %v %s", err, stderr)
		}
		must(t, n.WriteFile("/etc/slipway/agent.toml", []byte("poll_wait = \"5s\"\nreport_interval = \"5s\"\n"), 0o644))
		f.nodes[n.Name] = startAgentAt(t, n, s, releases, "http://"+partListen)
		f.names = append(f.names, n.Name)
	}
	slices.Sort(f.names)
	s.waitFleet(t, 2*time.Minute, api.NodeNew, f.names)
	return f
}

// release writes release directory name: app.service at version, keep.service,
// with min_healthy_time minHealthy and confirm_timeout confirm.
func (f *ptFleet) release(name, version string, minHealthy, confirm time.Duration) string {
	toml := fmt.Sprintf("name = \"app\"\n[health]\nmin_healthy_time = %q\nhealthy_deadline = \"60s\"\nconfirm_timeout = %q\n", minHealthy, confirm)
	f.w.write(name, rel{toml: toml, units: map[string]string{"app.service": rolloutUnit(version, ""), "keep.service": sleeper}})
	return filepath.Join(f.releases, name)
}

func (f *ptFleet) serverNodes() map[string]api.Node {
	f.t.Helper()
	ns, err := f.s.client.Nodes(context.Background())
	must(f.t, err)
	out := map[string]api.Node{}
	for _, n := range ns {
		out[n.Name] = n
	}
	return out
}

// deployConverged deploys dir all-at-once and waits until every node runs
// it, confirmed; it returns the manifest ID.
func (f *ptFleet) deployConverged(dir string) string {
	f.t.Helper()
	ro := f.s.waitRollout(f.t, f.s.deployWith(f.t, dir, api.Strategy{Kind: api.StrategyAllAtOnce}), 3*time.Minute,
		api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
	if ro.State != api.RolloutSucceeded {
		f.t.Fatalf("rollout of %s: %s (%s): %s", filepath.Base(dir), ro.State, ro.Reason, waveSummary(ro))
	}
	f.s.waitFleet(f.t, time.Minute, api.NodeConverged, f.names)
	return ro.Manifest
}

// agentPhase is the phase of the switch in progress on n ("" for none).
func agentPhase(n *fleetNode) string {
	j, _ := n.statusJSON()["switch_in_progress"].(map[string]any)
	if j == nil {
		return ""
	}
	return fmt.Sprint(j["phase"])
}

// currentID is the manifest ID of the generation n runs.
func currentID(n *fleetNode) string {
	cur, _ := n.statusJSON()["current"].(map[string]any)
	id, _ := cur["id"].(string)
	return id
}

// flips reads the agent's journal and returns, per manifest ID, the
// generations the agent switched to (flipped `current` to) for it.
func flips(n *fleetNode) map[string][]int {
	n.t.Helper()
	res := map[string][]int{}
	for _, f := range parseAgentJournal(n.sh("journalctl --no-pager -o cat -u slipway-agent.service")).flips {
		res[f.id] = append(res[f.id], f.gen)
	}
	return res
}

// expectSwitchedAtMostOnce fails the test if a node switched to one
// release more than once.
func (f *ptFleet) expectSwitchedAtMostOnce() map[string]map[string][]int {
	f.t.Helper()
	all := map[string]map[string][]int{}
	for _, name := range f.names {
		fl := flips(f.nodes[name])
		all[name] = fl
		for id, gens := range fl {
			if len(gens) > 1 {
				f.t.Errorf("%s switched to %s %d times (generations %v)", name, id, len(gens), gens)
			}
		}
	}
	return all
}

// expectClean fails the test unless every node has settled: no switch in
// progress, and the server's actual generation is the one the agent runs.
func (f *ptFleet) expectClean(timeout time.Duration) map[string]api.Node {
	f.t.Helper()
	var got map[string]api.Node
	waitFor(f.t, timeout, "every node settled and reported", func() error {
		got = f.serverNodes()
		for _, name := range f.names {
			n := f.nodes[name]
			if p := agentPhase(n); p != "" {
				return fmt.Errorf("%s: switch in progress (%s)", name, p)
			}
			if cur := currentID(n); got[name].Actual != cur || (got[name].State != api.NodeConverged && got[name].State != api.NodeFailed) {
				return fmt.Errorf("%s runs %s, the server says %s (%s)", name, cur, got[name].Actual, got[name].State)
			}
		}
		return nil
	})
	return got
}

// TestPartitions: three real systemd nodes on their own veth links talk to
// slipway-server over a real network. A link cut after the flip makes the
// agent revert after confirm_timeout; a link cut before the flip means no
// switch; healed, the agent reports and converges; asymmetric loss and 30%
// packet loss end in a rollout that completes or halts cleanly, with no
// node switched twice. Subtests build on each other.
func TestPartitions(t *testing.T) {
	f := bootPartitionFleet(t, "pt-a", "pt-b", "pt-c")
	v1 := f.deployConverged(f.release("v1", "v1", time.Second, ptConfirm))

	t.Run("cut after the flip: the agent reverts after confirm_timeout", func(t *testing.T) {
		f.setT(t)
		ptCutAfterFlip(f, v1)
	})
	t.Run("cut before the flip: no switch; healed: it reports and converges", func(t *testing.T) {
		f.setT(t)
		ptCutBeforeFlip(f)
	})
	t.Run("one-way cut after the flip: the server's answers are lost, the agent reverts", func(t *testing.T) {
		f.setT(t)
		ptOneWayAfterFlip(f)
	})
	t.Run("cut longer than offline_after: the rollout waits for the node, healed it converges", func(t *testing.T) {
		f.setT(t)
		ptLongCut(f)
	})
	t.Run("asymmetric loss: the rollout completes or halts cleanly", func(t *testing.T) {
		f.setT(t)
		ptLossy(f, "v5", loss{up: 0, down: 50}, api.Strategy{Kind: api.StrategyRolling, BatchSize: 1})
	})
	t.Run("30% packet loss: the rollout completes or halts cleanly", func(t *testing.T) {
		f.setT(t)
		ptLossy(f, "v6", loss{up: 30, down: 30}, api.Strategy{Kind: api.StrategyRolling, BatchSize: 2})
	})
	t.Run("10% packet loss while nodes download a 9 MB artifact: the rollout completes or halts cleanly", func(t *testing.T) {
		f.setT(t)
		ptArtifactLoss(f, loss{up: 10, down: 10})
	})
	f.setT(t)
}

// setT makes t the test every helper of f reports to (a subtest's).
func (f *ptFleet) setT(t *testing.T) {
	f.t, f.w.t, f.net.t = t, t, t
	for _, n := range f.nodes {
		n.t = t
	}
}

// ptCutAfterFlip: a canary of v2 flips; its link is cut while it verifies;
// it reverts to v1 after confirm_timeout on its own; healed, it reports the
// revert and the server sees it failed, running v1; it never switches to
// v2 again, and the other nodes were never told to.
func ptCutAfterFlip(f *ptFleet, v1 string) {
	t := f.t
	// min_healthy_time 5s: the verify phase is long enough to cut in.
	id := f.s.deployWith(t, f.release("v2", "v2", 5*time.Second, ptConfirm), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2})
	ro, err := f.s.client.Rollout(context.Background(), id)
	must(t, err)
	canary := ro.Waves[0].Nodes[0].Name
	n := f.nodes[canary]
	waitFor(t, time.Minute, canary+" to flip to v2", func() error {
		if p := agentPhase(n); p != "units" && p != "verify" {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})
	f.net.cut(f.addr[canary])
	cut := time.Now()
	if p := agentPhase(n); p != "units" && p != "verify" {
		t.Fatalf("%s was in phase %q when the link was cut, want units or verify: the test was too slow", canary, p)
	}
	if ok := f.net.reach(n.node.Node, 3); ok != 0 {
		t.Fatalf("%s reached the server %d times of 3 with its link cut", canary, ok)
	}
	var res map[string]any
	waitFor(t, ptConfirm+time.Minute, canary+" to revert on its own", func() error {
		res, _ = n.statusJSON()["last_result"].(map[string]any)
		if res == nil || res["outcome"] != "reverted" {
			return fmt.Errorf("last result %v", res)
		}
		return nil
	})
	took := time.Since(cut)
	t.Logf("REPORT link cut after the flip → reverted after %s (confirm_timeout %s, min_healthy_time 5s): %v", took.Round(time.Millisecond), ptConfirm, res["reason"])
	if took < ptConfirm {
		t.Errorf("reverted %s after the cut, before confirm_timeout %s", took, ptConfirm)
	}
	if !strings.Contains(fmt.Sprint(res["reason"]), "confirm") {
		t.Errorf("revert reason %q does not name the missing confirm", res["reason"])
	}
	if cur := currentID(n); cur != v1 {
		t.Errorf("%s runs %s after the revert, want v1 %s", canary, cur, v1)
	}
	n.expectActive("app.service", "keep.service")

	f.net.heal(f.addr[canary])
	waitFor(t, time.Minute, "the server to see "+canary+" failed on v1", func() error {
		sn := f.serverNodes()[canary]
		if sn.State != api.NodeFailed || sn.Actual != v1 {
			return fmt.Errorf("%s, actual %s", sn.State, sn.Actual)
		}
		return nil
	})
	ro = f.s.waitRollout(t, id, time.Minute, api.RolloutFailed, api.RolloutReverted, api.RolloutSucceeded)
	if ro.State == api.RolloutSucceeded {
		t.Errorf("the rollout succeeded although its canary reverted: %s", waveSummary(ro))
	}
	for name, sn := range f.serverNodes() {
		if name != canary && sn.Desired != v1 {
			t.Errorf("%s desired %s, want still v1 (the canary failed)", name, sn.Desired)
		}
	}
	time.Sleep(5 * time.Second) // a few polls: a wrong retry of v2 would show
	fl := f.expectSwitchedAtMostOnce()
	if len(fl[canary][ro.Manifest]) != 1 {
		t.Errorf("%s switched to v2 %d times, want once: %v", canary, len(fl[canary][ro.Manifest]), fl[canary])
	}
}

// ptCutBeforeFlip: with one node's link cut, v3 is deployed: the others
// switch, the cut node does not (it cannot know); healed, it switches once,
// reports and the fleet converges.
func ptCutBeforeFlip(f *ptFleet) {
	t := f.t
	// Every node on a good release first (the canary above failed).
	f.deployConverged(f.release("v3", "v3", time.Second, ptConfirm))
	cutNode := f.names[1]
	n := f.nodes[cutNode]
	before := currentID(n)
	gensBefore := n.sh("/opt/slipway/bin/slipway-agent generations")
	f.net.cut(f.addr[cutNode])
	if ok := f.net.reach(n.node.Node, 3); ok != 0 {
		t.Fatalf("%s reached the server %d times of 3 with its link cut", cutNode, ok)
	}
	id := f.s.deployWith(t, f.release("v4", "v4", time.Second, ptConfirm), api.Strategy{Kind: api.StrategyAllAtOnce})
	ro, err := f.s.client.Rollout(context.Background(), id)
	must(t, err)
	v4 := ro.Manifest
	waitFor(t, 2*time.Minute, "the other nodes to run v4", func() error {
		for name, sn := range f.serverNodes() {
			if name != cutNode && (sn.State != api.NodeConverged || sn.Actual != v4) {
				return fmt.Errorf("%s: %s, actual %s", name, sn.State, sn.Actual)
			}
		}
		return nil
	})
	// Two confirm windows: long enough for any wrong switch to show.
	deadline := time.Now().Add(2 * ptConfirm)
	for time.Now().Before(deadline) {
		if p := agentPhase(n); p != "" {
			t.Fatalf("%s started a switch (phase %s) with its link cut", cutNode, p)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if cur := currentID(n); cur != before {
		t.Errorf("%s runs %s with its link cut, want %s", cutNode, cur, before)
	}
	if got := n.sh("/opt/slipway/bin/slipway-agent generations"); got != gensBefore {
		t.Errorf("%s's generations changed with its link cut:\nbefore\n%s\nafter\n%s", cutNode, gensBefore, got)
	}
	if sn := f.serverNodes()[cutNode]; sn.Actual != before || sn.Desired != v4 {
		t.Errorf("server: %s actual %s desired %s, want actual %s desired v4", cutNode, sn.Actual, sn.Desired, before)
	}

	healed := time.Now()
	f.net.heal(f.addr[cutNode])
	if ok := f.net.reach(n.node.Node, 3); ok != 3 {
		t.Fatalf("%s reached the server %d times of 3 after the heal", cutNode, ok)
	}
	f.s.waitFleet(t, 2*time.Minute, api.NodeConverged, f.names)
	t.Logf("REPORT link healed → %s switched, reported and converged in %s", cutNode, time.Since(healed).Round(time.Millisecond))
	ro = f.s.waitRollout(t, id, time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
	t.Logf("rollout of v4: %s %s", ro.State, waveSummary(ro))
	if cur := currentID(n); cur != v4 {
		t.Errorf("%s runs %s after the heal, want v4 %s", cutNode, cur, v4)
	}
	fl := f.expectSwitchedAtMostOnce()
	if len(fl[cutNode][v4]) != 1 {
		t.Errorf("%s switched to v4 %d times, want once", cutNode, len(fl[cutNode][v4]))
	}
}

// ptLossy deploys release name with strat while every node's traffic
// suffers l: the rollout must end (succeeded, or halted: failed or
// reverted); healed, every node settles on the old or the new release as
// the server says, none switched twice, and a good release afterwards
// converges the fleet.
func ptLossy(f *ptFleet, name string, l loss, strat api.Strategy) {
	t := f.t
	old := f.serverNodes()
	for _, a := range f.addr {
		f.net.set(a, l)
	}
	// Each connect needs its SYN and SYN-ACK through: with this loss
	// some of 20 get through and some do not.
	if ok := f.net.reach(f.nodes[f.names[0]].node.Node, 20); ok == 0 || ok == 20 {
		t.Fatalf("%d of 20 connects got through with loss up %d%% down %d%%", ok, l.up, l.down)
	} else {
		t.Logf("%d of 20 connects got through within 500 ms", ok)
	}
	start := time.Now()
	id := f.s.deployWith(t, f.release(name, name, time.Second, 15*time.Second), strat)
	ro := f.s.waitRollout(t, id, 5*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
	t.Logf("REPORT loss up %d%% down %d%%, %s: rollout %s after %s (%s): %s", l.up, l.down, strat.Kind, ro.State,
		time.Since(start).Round(time.Millisecond), ro.Reason, waveSummary(ro))
	f.net.healAll()
	got := f.expectClean(2 * time.Minute)
	for _, nn := range f.names {
		sn := got[nn]
		if sn.Actual != ro.Manifest && sn.Actual != old[nn].Actual {
			t.Errorf("%s runs %s, neither the new %s nor its old %s", nn, sn.Actual, ro.Manifest, old[nn].Actual)
		}
		if ro.State == api.RolloutSucceeded && (sn.Actual != ro.Manifest || sn.State != api.NodeConverged) {
			t.Errorf("rollout succeeded but %s is %s on %s", nn, sn.State, sn.Actual)
		}
		t.Logf("%s: %s, runs %s (new %s)", nn, sn.State, sn.Actual, ro.Manifest)
	}
	f.expectSwitchedAtMostOnce()
	// Healed, a good release converges the whole fleet again.
	f.deployConverged(f.release(name+"-after", name+"-after", time.Second, ptConfirm))
	f.expectSwitchedAtMostOnce()
}

// ptOneWayAfterFlip: a canary flips to v7; then every packet from the
// server to it is lost while its packets still reach the server (the
// server may even see its report and confirm request): it cannot hear a
// confirm, so it reverts after confirm_timeout; healed, the server sees it
// failed on the old release, whatever it answered before, and the rollout
// does not count it healthy.
func ptOneWayAfterFlip(f *ptFleet) {
	t := f.t
	old := f.deployConverged(f.release("v7-base", "v7-base", time.Second, ptConfirm))
	id := f.s.deployWith(t, f.release("v7", "v7", 5*time.Second, ptConfirm), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2})
	ro, err := f.s.client.Rollout(context.Background(), id)
	must(t, err)
	canary := ro.Waves[0].Nodes[0].Name
	n := f.nodes[canary]
	waitFor(t, time.Minute, canary+" to flip to v7", func() error {
		if p := agentPhase(n); p != "units" && p != "verify" {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})
	f.net.set(f.addr[canary], loss{up: 0, down: 100})
	waitFor(t, ptConfirm+time.Minute, canary+" to revert on its own", func() error {
		res, _ := n.statusJSON()["last_result"].(map[string]any)
		if res == nil || res["outcome"] != "reverted" || agentPhase(n) != "" {
			return fmt.Errorf("last result %v", res)
		}
		return nil
	})
	if cur := currentID(n); cur != old {
		t.Errorf("%s runs %s after the revert, want %s", canary, cur, old)
	}
	f.net.heal(f.addr[canary])
	waitFor(t, time.Minute, "the server to see "+canary+" failed on its old release", func() error {
		sn := f.serverNodes()[canary]
		if sn.State != api.NodeFailed || sn.Actual != old {
			return fmt.Errorf("%s, actual %s, confirmed %s", sn.State, sn.Actual, sn.Confirmed)
		}
		return nil
	})
	ro = f.s.waitRollout(t, id, 2*time.Minute, api.RolloutFailed, api.RolloutReverted, api.RolloutSucceeded, api.RolloutAwaiting)
	t.Logf("rollout: %s (%s): %s; server: %+v", ro.State, ro.Reason, waveSummary(ro), f.serverNodes()[canary])
	for _, w := range ro.Waves {
		for _, rn := range w.Nodes {
			if rn.Name == canary && rn.State == api.RolloutNodeHealthy {
				t.Errorf("the rollout counts %s healthy on v7, which it reverted", canary)
			}
		}
	}
	if ro.State == api.RolloutSucceeded {
		t.Errorf("the rollout succeeded although its canary reverted: %s", waveSummary(ro))
	}
	f.expectSwitchedAtMostOnce()
	f.deployConverged(f.release("v7-after", "v7-after", time.Second, ptConfirm))
}

// ptLongCut: a node cut off until the server shows it offline; a rollout
// (all-at-once, on_node_down wait) publishes to the others and waits for
// it; healed, the server publishes to it, it switches once and the rollout
// succeeds.
func ptLongCut(f *ptFleet) {
	t := f.t
	base := f.deployConverged(f.release("v8-base", "v8-base", time.Second, ptConfirm))
	cutNode := f.names[2]
	n := f.nodes[cutNode]
	f.net.cut(f.addr[cutNode])
	cut := time.Now()
	waitFor(t, ptOffline+time.Minute, "the server to show "+cutNode+" offline", func() error {
		if sn := f.serverNodes()[cutNode]; sn.State != api.NodeOffline {
			return fmt.Errorf("%s", sn.State)
		}
		return nil
	})
	t.Logf("REPORT link cut → the server shows the node offline after %s (offline_after %s)", time.Since(cut).Round(time.Millisecond), ptOffline)
	id := f.s.deployWith(t, f.release("v8", "v8", time.Second, ptConfirm), api.Strategy{Kind: api.StrategyAllAtOnce})
	var ro api.Rollout
	waitFor(t, 2*time.Minute, "the others on v8 and "+cutNode+" down in the rollout", func() error {
		var err error
		if ro, err = f.s.client.Rollout(context.Background(), id); err != nil {
			return err
		}
		for _, rn := range ro.Waves[0].Nodes {
			want := api.RolloutNodeHealthy
			if rn.Name == cutNode {
				want = api.RolloutNodeDown
			}
			if rn.State != want {
				return fmt.Errorf("%s", waveSummary(ro))
			}
		}
		return nil
	})
	if ro.State != api.RolloutRunning {
		t.Errorf("rollout %s while %s is down, want running (on_node_down wait)", ro.State, cutNode)
	}
	if sn := f.serverNodes()[cutNode]; sn.Desired != base {
		t.Errorf("%s desired %s while down, want still %s (not published)", cutNode, sn.Desired, base)
	}
	healed := time.Now()
	f.net.heal(f.addr[cutNode])
	ro = f.s.waitRollout(t, id, 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout %s (%s): %s", ro.State, ro.Reason, waveSummary(ro))
	}
	f.s.waitFleet(t, time.Minute, api.NodeConverged, f.names)
	t.Logf("REPORT link healed → %s published, switched and confirmed, rollout succeeded in %s", cutNode, time.Since(healed).Round(time.Millisecond))
	if cur := currentID(n); cur != ro.Manifest {
		t.Errorf("%s runs %s, want v8 %s", cutNode, cur, ro.Manifest)
	}
	fl := f.expectSwitchedAtMostOnce()
	if len(fl[cutNode][ro.Manifest]) != 1 {
		t.Errorf("%s switched to v8 %d times, want once", cutNode, len(fl[cutNode][ro.Manifest]))
	}
}

// ptArtifactLoss deploys (with the CLI, which uploads the artifact) a
// release whose service is a 9 MB artifact the nodes download from the
// server over links losing l of their packets: the rollout must end,
// every node settle on the old or the new release, none switch twice.
func ptArtifactLoss(f *ptFleet, l loss) {
	t := f.t
	old := f.serverNodes()
	toml := strings.Replace(webTOML, "[health]\n", fmt.Sprintf("[health]\nconfirm_timeout = %q\n", 15*time.Second), 1)
	f.w.write("v9", rel{toml: toml, units: map[string]string{"web.service": webUnit("v9"), "keep.service": sleeper}, web: true})
	for _, a := range f.addr {
		f.net.set(a, l)
	}
	start := time.Now()
	out, stderr, err := f.s.slipway("deploy", "--detach", filepath.Join(f.releases, "v9"))
	if err != nil {
		t.Fatalf("slipway deploy: %v\n%s%s", err, out, stderr)
	}
	m := regexp.MustCompile(`rollout (\S+) started`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rollout in the deploy's output:\n%s", out)
	}
	ro := f.s.waitRollout(t, m[1], 5*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
	t.Logf("REPORT loss up %d%% down %d%%, 9 MB artifact: rollout %s after %s (%s): %s", l.up, l.down, ro.State,
		time.Since(start).Round(time.Millisecond), ro.Reason, waveSummary(ro))
	f.net.healAll()
	got := f.expectClean(2 * time.Minute)
	for _, nn := range f.names {
		if sn := got[nn]; sn.Actual != ro.Manifest && sn.Actual != old[nn].Actual {
			t.Errorf("%s runs %s, neither the new %s nor its old %s", nn, sn.Actual, ro.Manifest, old[nn].Actual)
		}
		if ro.State == api.RolloutSucceeded {
			if got := f.nodes[nn].get("http://127.0.0.1:8080/"); got != "v9" {
				t.Errorf("%s: web says %q, want v9", nn, got)
			}
		}
	}
	f.expectSwitchedAtMostOnce()
}
