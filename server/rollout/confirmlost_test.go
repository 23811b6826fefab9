package rollout_test

import (
	"context"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestLostConfirmAnswerIsNotHealthy: the canary reports that it runs the
// release (still switching: it waits for the confirm) and asks for the
// confirm; the server confirms, but its answer is lost (a one-way
// partition, found by TestPartitions on real nodes). The agent cannot
// know it was confirmed: it reverts after confirm_timeout. Until the agent
// reports that it committed, the rollout must not count the canary
// healthy: else the canary passes (and the release goes on to the fleet)
// while the canary reverts it.
func TestLostConfirmAnswerIsNotHealthy(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, 3)
	v1, v2 := manifest("v1"), manifest("v2")
	rel, _ := s.release(v1, api.Strategy{}, false)
	s.run(rel.Rollout, api.RolloutSucceeded)
	rel2, err := s.release(v2, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ros.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ro, err := s.ros.Rollout(ctx, rel2.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	canary := ro.Waves[0].Nodes[0].Name
	if s.desired(canary) != v2.id {
		t.Fatalf("canary %s not published v2: %s", canary, describe(ro))
	}
	// The agent flipped to v2 (generation 2), verified it and asks for
	// the confirm: its report says so.
	if err := s.reg.Report(ctx, canary, api.Report{State: api.AgentSwitching, Phase: "confirm", Target: v2.id, CurrentID: v2.id, Current: 2, LastGood: 1}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.reg.Confirm(ctx, canary, api.ConfirmRequest{ID: v2.id, Number: 2}); err != nil || !ok {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	// The answer is lost. The engine ticks while the agent waits.
	for range 5 {
		if err := s.ros.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		s.now = s.now.Add(2e9)
	}
	ro, _ = s.ros.Rollout(ctx, rel2.Rollout)
	if st := ro.Waves[0].Nodes[0].State; st == api.RolloutNodeHealthy || ro.State != api.RolloutRunning {
		t.Fatalf("before the agent committed, the rollout is %s with the canary %s; want running, the canary switching:\n%s", ro.State, st, describe(ro))
	}
	// confirm_timeout passes: the agent reverts and, the link back, says so.
	if err := s.reg.Report(ctx, canary, api.Report{State: api.AgentFailed, Target: v2.id, CurrentID: v1.id, Current: 1, LastGood: 1,
		Outcome: "reverted", Reason: "no confirm from the server within confirm_timeout 10s"}); err != nil {
		t.Fatal(err)
	}
	ro = s.run(rel2.Rollout, api.RolloutFailed, api.RolloutReverted, api.RolloutAwaiting, api.RolloutSucceeded)
	if ro.State != api.RolloutFailed || ro.Waves[0].Nodes[0].State != api.RolloutNodeFailed {
		t.Fatalf("after the canary reverted: rollout %s (%s), want failed with the canary failed:\n%s", ro.State, ro.Reason, describe(ro))
	}
	for _, n := range s.nodes {
		if n != canary && s.seen[n][v2.id] != 0 {
			t.Errorf("%s was sent v2", n)
		}
	}
}

// TestCommittedAfterConfirmIsHealthy: the same switch with the confirm
// answer delivered: the agent commits and reports idle on v2, and only
// then the canary is healthy.
func TestCommittedAfterConfirmIsHealthy(t *testing.T) {
	s := newSim(t, 3)
	v1, v2 := manifest("v1"), manifest("v2")
	rel, _ := s.release(v1, api.Strategy{}, false)
	s.run(rel.Rollout, api.RolloutSucceeded)
	rel2, err := s.release(v2, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel2.Rollout, api.RolloutAwaiting, api.RolloutFailed, api.RolloutSucceeded)
	if ro.State != api.RolloutAwaiting || ro.Waves[0].Nodes[0].State != api.RolloutNodeHealthy {
		t.Fatalf("rollout %s, canary %s; want awaiting promotion with a healthy canary:\n%s", ro.State, ro.Waves[0].Nodes[0].State, describe(ro))
	}
}
