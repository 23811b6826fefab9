package rollout_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// nodeOf returns node name's entry in ro.
func nodeOf(t *testing.T, ro api.Rollout, name string) api.RolloutNode {
	t.Helper()
	for _, w := range ro.Waves {
		for _, n := range w.Nodes {
			if n.Name == name {
				return n
			}
		}
	}
	t.Fatalf("node %s not in rollout %s", name, ro.ID)
	return api.RolloutNode{}
}

// TestAbortSetsUnconfirmedNodesBack: a rolling rollout aborted while its
// second wave switches. The first wave confirmed the release and keeps
// it; the node switching (mid-switch, as it reports) and the one that
// failed go back to their previous desired generation; the wave never
// started is never published. No wave stays running, no node switching,
// and nothing moves after the abort.
func TestAbortSetsUnconfirmedNodesBack(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, 5)
	v1, v2 := manifest("v1"), manifest("v2")
	rel1, _ := s.release(v1, api.Strategy{}, false)
	s.run(rel1.Rollout, api.RolloutSucceeded)

	s.fails[v2.id] = map[string]bool{"n4": true}
	s.down["n3"] = true // n3 takes v2 and hangs mid-switch
	rel2, err := s.release(v2, api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, MaxFailures: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	var ro api.Rollout
	for i := 0; i < 20; i++ { // until wave 2 (n3, n4) is published and n4 failed
		if err := s.ros.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		s.agents()
		ro, _ = s.ros.Rollout(ctx, rel2.Rollout)
		if ro.Wave == 1 && nodeOf(t, ro, "n4").State == api.RolloutNodeFailed {
			break
		}
	}
	if nodeOf(t, ro, "n3").State != api.RolloutNodeSwitching || nodeOf(t, ro, "n4").State != api.RolloutNodeFailed {
		t.Fatalf("setup:\n%s", describe(ro))
	}
	// n3 reports it is between the two, mid-switch to v2.
	must(t, s.reg.Report(ctx, "n3", api.Report{State: api.AgentSwitching, Phase: "verify", Target: v2.id, CurrentID: v2.id, Current: 2, LastGood: 1,
		Generations: []api.GenerationReport{{Number: 1, ID: v1.id, Status: "good"}, {Number: 2, ID: v2.id, Status: "staged"}}}))

	ro, err = s.ros.RolloutAction(ctx, "token:test", rel2.Rollout, "abort")
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := map[string]string{
		"n1": api.RolloutNodeHealthy, "n2": api.RolloutNodeHealthy,
		"n3": api.RolloutNodeAborted, "n4": api.RolloutNodeFailed, "n5": api.RolloutNodeAborted,
	}
	wantDesired := map[string]string{"n1": v2.id, "n2": v2.id, "n3": v1.id, "n4": v1.id, "n5": v1.id}
	check := func(step string, ro api.Rollout) {
		t.Helper()
		if ro.State != api.RolloutAborted {
			t.Errorf("%s: rollout %s", step, ro.State)
		}
		for i, w := range ro.Waves {
			if want := []string{api.WavePassed, api.WaveAborted, api.WaveAborted}[i]; w.State != want {
				t.Errorf("%s: wave %d %s, want %s", step, i+1, w.State, want)
			}
		}
		for n, want := range wantNodes {
			if got := nodeOf(t, ro, n).State; got != want {
				t.Errorf("%s: %s %s, want %s", step, n, got, want)
			}
			if got := s.desired(n); got != wantDesired[n] {
				t.Errorf("%s: %s desired %s, want %s", step, n, got, wantDesired[n])
			}
		}
	}
	check("abort", ro)
	for n, want := range map[string]string{
		"n3": "desired set back to " + v1.id + "; it was switching to the release",
		"n4": "unit web.service failed; desired set back to " + v1.id,
		"n5": "not published",
	} {
		if r := nodeOf(t, ro, n).Reason; !strings.Contains(r, want) {
			t.Errorf("%s reason %q, want it to say %q", n, r, want)
		}
	}
	for _, want := range []string{"keep it: n1, n2", "previous desired generation: n3, n4", "1 node(s) were never sent"} {
		if !strings.Contains(ro.Reason, want) {
			t.Errorf("rollout reason %q lacks %q", ro.Reason, want)
		}
	}
	if s.seen["n5"][v2.id] != 0 {
		t.Error("n5 was sent the release")
	}
	// The node view: n3 wants v1 again and says what it runs.
	n3, err := s.reg.Node(ctx, "n3")
	if err != nil {
		t.Fatal(err)
	}
	if n3.Desired != v1.id || n3.Actual != v2.id || n3.State != api.NodeSwitching {
		t.Errorf("n3: desired %s actual %s state %s", n3.Desired, n3.Actual, n3.State)
	}
	// Ticks after the abort change nothing; a second abort is refused.
	for i := 0; i < 3; i++ {
		must(t, s.ros.Tick(ctx))
		s.agents()
	}
	ro, _ = s.ros.Rollout(ctx, rel2.Rollout)
	check("after ticks", ro)
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel2.Rollout, "abort"); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("second abort: %v", err)
	}
}

// TestAbortFirstDeploy: nodes that had no desired generation before an
// aborted rollout have none after it.
func TestAbortFirstDeploy(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, 2)
	s.down["n1"] = true
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyCanary, Canary: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.desired("n1") == "" {
		t.Fatal("the canary was not published")
	}
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel.Rollout, "abort"); err != nil {
		t.Fatal(err)
	}
	for _, n := range s.nodes {
		if d := s.desired(n); d != "" {
			t.Errorf("%s desired %s after the abort, want none", n, d)
		}
		if v, _ := s.reg.Node(ctx, n); v.State != api.NodeNew {
			t.Errorf("%s state %s, want new", n, v.State)
		}
	}
}

// TestRollbackOnlyToConfirmed: a rollback sends nodes to what they ran and
// confirmed, never to a release that failed on them or that they were
// only switching to; where a node has no such generation it is refused
// with the nodes named, changing nothing.
func TestRollbackOnlyToConfirmed(t *testing.T) {
	ctx := context.Background()
	t.Run("first deploy has nothing to go back to", func(t *testing.T) {
		s := newSim(t, 2)
		rel, _ := s.release(manifest("v1"), api.Strategy{}, false)
		s.run(rel.Rollout, api.RolloutSucceeded)
		before, _ := s.ros.Rollouts(ctx)
		_, err := s.ros.RolloutRollback(ctx, "token:test", rel.Rollout)
		if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "n1 (it had confirmed no generation") || !strings.Contains(err.Error(), "n2 (") {
			t.Fatalf("rollback of a first deploy: %v", err)
		}
		if after, _ := s.ros.Rollouts(ctx); len(after) != len(before) {
			t.Error("a refused rollback created a rollout")
		}
	})
	t.Run("aborted broken release is never the target", func(t *testing.T) {
		s := newSim(t, 3)
		v1, bad, v3 := manifest("v1"), manifest("bad"), manifest("v3")
		rel1, _ := s.release(v1, api.Strategy{}, false)
		s.run(rel1.Rollout, api.RolloutSucceeded)
		// The broken canary: n1 takes it and is mid-switch (it runs it, not
		// confirmed) when the operator aborts.
		s.down["n1"] = true
		relBad, _ := s.release(bad, api.Strategy{Kind: api.StrategyCanary, Canary: 1}, false)
		must(t, s.reg.Report(ctx, "n1", api.Report{State: api.AgentSwitching, Target: bad.id, CurrentID: bad.id, Current: 2, LastGood: 1,
			Generations: []api.GenerationReport{{Number: 1, ID: v1.id, Status: "good"}, {Number: 2, ID: bad.id, Status: "staged"}}}))
		if _, err := s.ros.RolloutAction(ctx, "token:test", relBad.Rollout, "abort"); err != nil {
			t.Fatal(err)
		}
		// The next release reaches n1 while it still runs the broken one.
		rel3, err := s.release(v3, api.Strategy{}, false)
		if err != nil {
			t.Fatal(err)
		}
		ro3, _ := s.ros.Rollout(ctx, rel3.Rollout)
		if p := nodeOf(t, ro3, "n1").Previous; p != v1.id {
			t.Fatalf("n1's previous is %s, want v1 %s (bad is %s)", p, v1.id, bad.id)
		}
		s.down["n1"] = false
		s.run(rel3.Rollout, api.RolloutSucceeded)
		rb, err := s.ros.RolloutRollback(ctx, "token:test", rel3.Rollout)
		if err != nil {
			t.Fatal(err)
		}
		if rb.Manifest != v1.id {
			t.Fatalf("rollback to %s, want v1", rb.Manifest)
		}
		s.run(rb.ID, api.RolloutSucceeded)
		for _, n := range s.nodes {
			if s.actual[n] != v1.id {
				t.Errorf("%s runs %s after the rollback", n, s.actual[n])
			}
		}
		// The aborted rollout's rollback: n1 went back already; its
		// previous is v1, which it confirmed.
		rb2, err := s.ros.RolloutRollback(ctx, "token:test", relBad.Rollout)
		if err != nil || rb2.Manifest != v1.id {
			t.Fatalf("rollback of the aborted rollout: %v to %s", err, rb2.Manifest)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
