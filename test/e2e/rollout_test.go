package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/release"
)

// rolloutUnit is one service whose start fails on nodes whose name starts
// with failOn ("" = nowhere): the same unit text everywhere, like a release
// that breaks only on some machines.
func rolloutUnit(version, failOn string) string {
	pre := ""
	if failOn != "" {
		pre = fmt.Sprintf("ExecStartPre=/bin/sh -c 'case $(hostname) in %s*) echo failing here on purpose; exit 1;; esac'\n", failOn)
	}
	return "[Unit]\nDescription=rollout e2e " + version + "\n[Service]\n" + pre + "ExecStart=/bin/sleep infinity\n"
}

// deployWith publishes a release directory with a strategy through the API
// and returns its rollout ID.
func (s *server) deployWith(t testing.TB, dir string, strat api.Strategy) string {
	t.Helper()
	rel, err := release.Load(dir)
	must(t, err)
	canon, err := rel.Manifest.Canonical()
	must(t, err)
	r, err := s.client.CreateRelease(context.Background(), api.CreateReleaseRequest{Name: rel.Name, Target: "role=web", Manifest: canon, Strategy: &strat})
	must(t, err)
	return r.Rollout
}

func (s *server) waitRollout(t testing.TB, id string, timeout time.Duration, states ...string) api.Rollout {
	t.Helper()
	var ro api.Rollout
	waitFor(t, timeout, "rollout "+id+" to be "+strings.Join(states, " or "), func() error {
		var err error
		ro, err = s.client.Rollout(context.Background(), id)
		if err != nil {
			return err
		}
		for _, st := range states {
			if ro.State == st {
				return nil
			}
		}
		return fmt.Errorf("%s (%s): %s", ro.State, ro.Reason, waveSummary(ro))
	})
	return ro
}

func waveSummary(ro api.Rollout) string {
	var parts []string
	for _, w := range ro.Waves {
		var ns []string
		for _, n := range w.Nodes {
			ns = append(ns, n.Name+"="+n.State)
		}
		parts = append(parts, w.Name+"["+w.State+": "+strings.Join(ns, " ")+"]")
	}
	return strings.Join(parts, " ")
}

// TestRollouts runs rollouts over four real systemd nodes.
func TestRollouts(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	_, names := s.bootFleet(t, releases, "ro-a", "ro-b", "ro-c", "ro-d")
	sort.Strings(names)
	w := &node{t: t, releases: releases}
	toml := "name = \"app\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"20s\"\nconfirm_timeout = \"10s\"\n"
	mk := func(name, version, failOn string) string {
		w.write(name, rel{toml: toml, units: map[string]string{"app.service": rolloutUnit(version, failOn), "keep.service": sleeper}})
		return filepath.Join(releases, name)
	}
	desired := func() map[string]string {
		out := map[string]string{}
		nodes, err := s.client.Nodes(context.Background())
		must(t, err)
		for _, n := range nodes {
			out[n.Name] = n.Desired
		}
		return out
	}

	var v1 api.Rollout
	t.Run("canary then rolling batches of 2 succeeds", func(t *testing.T) {
		start := time.Now()
		id := s.deployWith(t, mk("v1", "v1", ""), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "2s"})
		v1 = s.waitRollout(t, id, 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
		if v1.State != api.RolloutSucceeded {
			t.Fatalf("rollout %s: %s", v1.State, waveSummary(v1))
		}
		if got := waveSummary(v1); len(v1.Waves) != 3 || len(v1.Waves[0].Nodes) != 1 || len(v1.Waves[1].Nodes) != 2 {
			t.Fatalf("waves: %s", got)
		}
		for i := 1; i < len(v1.Waves); i++ {
			if v1.Waves[i].StartedAt.Before(v1.Waves[i-1].FinishedAt) {
				t.Errorf("wave %d started before wave %d passed", i+1, i)
			}
		}
		t.Logf("REPORT canary+2 batches over 4 nodes: %s", time.Since(start).Round(time.Millisecond))
		s.waitFleet(t, time.Minute, api.NodeConverged, names)
	})

	t.Run("failing canary halts with every other node untouched", func(t *testing.T) {
		before := desired()
		id := s.deployWith(t, mk("v2-bad-canary", "v2", names[0]), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2})
		ro := s.waitRollout(t, id, 2*time.Minute, api.RolloutFailed, api.RolloutReverted, api.RolloutSucceeded)
		if ro.State != api.RolloutFailed || !strings.Contains(ro.Reason, names[0]) {
			t.Fatalf("rollout %s (%s): %s", ro.State, ro.Reason, waveSummary(ro))
		}
		after := desired()
		for _, n := range names[1:] {
			if after[n] != before[n] {
				t.Errorf("%s was touched: desired %s → %s", n, before[n], after[n])
			}
		}
		// Quarantined fleet-wide: deploying it again is refused.
		rel, _ := release.Load(filepath.Join(releases, "v2-bad-canary"))
		canon, _ := rel.Manifest.Canonical()
		if _, err := s.client.CreateRelease(context.Background(), api.CreateReleaseRequest{Name: "app", Target: "role=web", Manifest: canon}); err == nil || !strings.Contains(err.Error(), "quarantined fleet-wide") {
			t.Errorf("re-deploying the failed release: %v", err)
		}
	})

	t.Run("failure in wave 2 with auto_revert sends wave 1 back", func(t *testing.T) {
		before := desired()
		id := s.deployWith(t, mk("v3-bad-wave2", "v3", names[2]), api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AutoRevert: true})
		ro := s.waitRollout(t, id, 2*time.Minute, api.RolloutReverted, api.RolloutFailed, api.RolloutSucceeded)
		if ro.State != api.RolloutReverted {
			t.Fatalf("rollout %s (%s): %s", ro.State, ro.Reason, waveSummary(ro))
		}
		// Back to what they ran (v1), even ro-a, whose desired release was
		// the canary that failed on it before.
		for _, n := range names[:2] {
			if got := desired()[n]; got != v1.Manifest {
				t.Errorf("wave-1 node %s desired %s, want it back on v1 %s (was told %s)", n, got, v1.Manifest, before[n])
			}
		}
		// The agents follow: every node runs v1 again.
		waitFor(t, time.Minute, "wave 1 back on v1", func() error {
			nodes, err := s.client.Nodes(context.Background())
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Actual != v1.Manifest {
					return fmt.Errorf("%s runs %s", n.Name, n.Actual)
				}
			}
			return nil
		})
	})

	t.Run("server killed mid-rollout resumes and finishes", func(t *testing.T) {
		id := s.deployWith(t, mk("v4", "v4", ""), api.Strategy{Kind: api.StrategyRolling, BatchSize: 1, Stagger: "2s"})
		waitFor(t, time.Minute, "wave 2 to start", func() error {
			ro, err := s.client.Rollout(context.Background(), id)
			if err != nil {
				return err
			}
			if ro.Wave < 1 {
				return fmt.Errorf("wave %d: %s", ro.Wave, waveSummary(ro))
			}
			return nil
		})
		s.stop() // SIGKILL
		time.Sleep(3 * time.Second)
		s.t = t
		s.start()
		ro := s.waitRollout(t, id, 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
		if ro.State != api.RolloutSucceeded {
			t.Fatalf("after the restart: %s (%s): %s", ro.State, ro.Reason, waveSummary(ro))
		}
		evs, err := s.client.Events(context.Background(), 0, 1000)
		must(t, err)
		pubs := map[string]int{}
		for _, e := range evs {
			if e.Action == "rollout.publish" && e.Target == id {
				pubs[e.Detail]++
			}
		}
		for _, n := range names {
			if pubs[n] != 1 {
				t.Errorf("%s published %d times by %s, want exactly once", n, pubs[n], id)
			}
		}
	})
}

// TestRolloutAbortAndRollback: on three real systemd nodes, a canary
// rollout of a broken release is aborted while the canary is in the middle
// of its switch: the rollout, its waves and its nodes show aborted, every
// node's desired generation is its previous one again, the canary finishes
// (reverts) its switch and the fleet converges back. Rolling the aborted
// rollout back targets the good release, never the broken one; rolling back
// a first deploy is refused (409) naming the nodes. The CLI refuses a
// deploy (and a dry run) whose target selects no node before uploading
// anything, and a retry of a node where nothing failed.
func TestRolloutAbortAndRollback(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	_, names := s.bootFleet(t, releases, "ab-a", "ab-b", "ab-c")
	sort.Strings(names)
	w := &node{t: t, releases: releases}
	toml := "name = \"app\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"\nconfirm_timeout = \"10s\"\n"
	mk := func(name, unit string) string {
		w.write(name, rel{toml: toml, units: map[string]string{"app.service": unit}})
		return filepath.Join(releases, name)
	}
	nodes := func() map[string]api.Node {
		ns, err := s.client.Nodes(ctx)
		must(t, err)
		out := map[string]api.Node{}
		for _, n := range ns {
			out[n.Name] = n
		}
		return out
	}

	// v1 everywhere: a first deploy.
	v1Dir := mk("v1", rolloutUnit("v1", ""))
	v1 := s.waitRollout(t, s.deployWith(t, v1Dir, api.Strategy{}), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if v1.State != api.RolloutSucceeded {
		t.Fatalf("v1: %s (%s)", v1.State, v1.Reason)
	}
	s.waitFleet(t, time.Minute, api.NodeConverged, names)

	// The broken release takes 12 s to fail on every node: the canary is
	// mid-switch when the operator aborts.
	brokenDir := mk("broken", "[Unit]\nDescription=rollout e2e broken\n[Service]\nExecStartPre=/bin/sh -c 'sleep 12; echo broken on purpose; exit 1'\nExecStart=/bin/sleep infinity\n")
	id := s.deployWith(t, brokenDir, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 1})
	ro, err := s.client.Rollout(ctx, id)
	must(t, err)
	broken, canary := ro.Manifest, ro.Waves[0].Nodes[0].Name
	waitFor(t, time.Minute, canary+" to be switching to the broken release", func() error {
		n := nodes()[canary]
		if n.Report == nil || n.Report.State != api.AgentSwitching || n.Report.Target != broken {
			return fmt.Errorf("%s: %s %+v", canary, n.State, n.Report)
		}
		return nil
	})
	out, stderr, err := s.slipway("rollout", "abort", id)
	if err != nil {
		t.Fatalf("rollout abort: %v\n%s%s", err, out, stderr)
	}
	t.Logf("rollout abort:\n%s", out)

	t.Run("abort marks the rollout and sets desired back", func(t *testing.T) {
		ro, err := s.client.Rollout(ctx, id)
		must(t, err)
		if ro.State != api.RolloutAborted {
			t.Errorf("rollout %s", ro.State)
		}
		for _, wv := range ro.Waves {
			if wv.State != api.WaveAborted {
				t.Errorf("%s: %s, want aborted", wv.Name, wv.State)
			}
			for _, n := range wv.Nodes {
				want := "not published"
				if n.Name == canary {
					want = "it was switching to the release"
				}
				if n.State != api.RolloutNodeAborted || !strings.Contains(n.Reason, want) {
					t.Errorf("%s: %s: %s, want aborted: …%s…", wv.Name, n.Name, n.State, n.Reason)
				}
			}
		}
		for name, n := range nodes() {
			if n.Desired != v1.Manifest {
				t.Errorf("%s desired %s after the abort, want v1 %s (broken is %s)", name, n.Desired, v1.Manifest, broken)
			}
		}
		show, _, err := s.slipway("rollout", "show", id)
		must(t, err)
		if strings.Contains(show, "running  [") || strings.Contains(show, "  switching") {
			t.Errorf("rollout show still shows a running wave or a switching node:\n%s", show)
		}
	})

	t.Run("the canary finishes its switch and the fleet converges back", func(t *testing.T) {
		got := s.waitFleet(t, 2*time.Minute, api.NodeConverged, names)
		for _, n := range got {
			if n.Actual != v1.Manifest || n.Desired != v1.Manifest {
				t.Errorf("%s: desired %s actual %s, want v1", n.Name, n.Desired, n.Actual)
			}
		}
		n, err := s.client.Node(ctx, canary)
		must(t, err)
		quarantined := false
		for _, g := range n.Report.Generations {
			quarantined = quarantined || (g.ID == broken && g.Status == "quarantined")
		}
		if !quarantined {
			t.Errorf("%s does not report the broken release quarantined: %+v", canary, n.Report.Generations)
		}
		status, _, err := s.slipway("status")
		must(t, err)
		t.Logf("slipway status after the abort:\n%s", status)
	})

	t.Run("rollback of the aborted rollout targets v1, never the broken release", func(t *testing.T) {
		out, stderr, err := s.slipway("rollout", "rollback", id, "--json")
		if err != nil {
			t.Fatalf("rollout rollback: %v\n%s", err, stderr)
		}
		var rb api.Rollout
		must(t, json.Unmarshal([]byte(out), &rb))
		if rb.Manifest != v1.Manifest {
			t.Fatalf("rollback targets %s, want v1 %s (broken is %s)", rb.Manifest, v1.Manifest, broken)
		}
		if rb = s.waitRollout(t, rb.ID, time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted); rb.State != api.RolloutSucceeded {
			t.Fatalf("rollback rollout %s (%s)", rb.State, rb.Reason)
		}
		s.waitFleet(t, time.Minute, api.NodeConverged, names)
	})

	t.Run("rollback of a first deploy is refused naming the nodes", func(t *testing.T) {
		before, err := s.client.Rollouts(ctx)
		must(t, err)
		_, stderr, err := s.slipway("rollout", "rollback", v1.ID)
		if err == nil || !strings.Contains(stderr, "HTTP 409") || !strings.Contains(stderr, "no generation they ran and confirmed") {
			t.Fatalf("rollback of v1: %v\n%s", err, stderr)
		}
		for _, n := range names {
			if !strings.Contains(stderr, n+" (it had confirmed no generation") {
				t.Errorf("the refusal does not name %s:\n%s", n, stderr)
			}
		}
		if after, _ := s.client.Rollouts(ctx); len(after) != len(before) {
			t.Errorf("the refused rollback created a rollout")
		}
	})

	t.Run("deploy refuses a target that selects no node", func(t *testing.T) {
		rels, err := s.client.Releases(ctx)
		must(t, err)
		for _, args := range [][]string{{"--dry-run"}, nil} {
			_, stderr, err := s.slipway(append([]string{"deploy", v1Dir, "--target", "role=nope"}, args...)...)
			if err == nil || !strings.Contains(stderr, `target "role=nope" (from --target) selects none of the 3 enrolled nodes`) {
				t.Errorf("deploy %v: %v\n%s", args, err, stderr)
			}
		}
		if after, _ := s.client.Releases(ctx); len(after) != len(rels) {
			t.Errorf("a release was created")
		}
	})

	t.Run("retry of a node where nothing failed is refused", func(t *testing.T) {
		_, stderr, err := s.slipway("retry", names[1])
		if err == nil || !strings.Contains(stderr, "HTTP 409") || !strings.Contains(stderr, "has nothing failed to retry: it runs its desired generation") {
			t.Fatalf("retry: %v\n%s", err, stderr)
		}
	})
}
