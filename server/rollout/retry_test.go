package rollout_test

import (
	"context"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestRetryOfFailedRolloutWaitsForTheNode: `rollout retry` of a rollout
// halted by a failing canary sends the release again and waits for the
// node, which (fixed meanwhile) confirms it; the rollout goes on. Before,
// the first step after the retry saw the node's report of the earlier
// failure, still there until its agent acts on the retry, and failed the
// rollout again at once. Found writing the server crash point for retry.
func TestRetryOfFailedRolloutWaitsForTheNode(t *testing.T) {
	s := newSim(t, 3)
	ctx := context.Background()
	v1 := manifest("v1")
	s.fails[v1.id] = map[string]bool{"n1": true}
	rel, err := s.release(v1, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "1s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutFailed)
	delete(s.fails, v1.id)
	ro, err := s.ros.RolloutRetry(ctx, "token:test", rel.Rollout, "")
	if err != nil || ro.State != api.RolloutRunning {
		t.Fatalf("retry: %s, %v", ro.State, err)
	}
	if err := s.ros.Tick(ctx); err != nil { // before the agent acts on the retry
		t.Fatal(err)
	}
	if ro, _ = s.ros.Rollout(ctx, rel.Rollout); ro.State != api.RolloutRunning {
		t.Fatalf("after the retry, before the node acted: %s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
	ro = s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutFailed)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("%s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
}

// TestRetryOfStillFailingNodeFailsAgain: retried while still broken, the
// node fails the rollout again as soon as its agent reports the new
// failure (as a real agent does, it reports switching first), not at the
// deadline.
func TestRetryOfStillFailingNodeFailsAgain(t *testing.T) {
	s := newSim(t, 3)
	ctx := context.Background()
	v1 := manifest("v1")
	s.fails[v1.id] = map[string]bool{"n1": true}
	rel, err := s.release(v1, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutFailed)
	if _, err := s.ros.RolloutRetry(ctx, "token:test", rel.Rollout, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.reg.Report(ctx, "n1", api.Report{State: api.AgentSwitching, Target: v1.id}); err != nil {
		t.Fatal(err)
	}
	start := s.now
	ro := s.run(rel.Rollout, api.RolloutFailed)
	if took := s.now.Sub(start); took > 10*time.Second {
		t.Errorf("the rollout failed again after %s of simulated time: at the deadline, not on the report\n%s", took, describe(ro))
	}
}
