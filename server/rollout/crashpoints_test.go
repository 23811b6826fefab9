package rollout_test

import (
	"context"
	"slices"
	"testing"

	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestCrashPointsAreListed: rollout.CrashPoints, which the server's crash
// hook (SLIPWAY_SERVER_CRASH_AT) and the end-to-end server crash test
// iterate, names every transition the Crash hook is called with, and each
// of them is reached by one of these rollouts: a canary with an analysis
// window, a canary awaiting promotion (with a node slower than the
// other of its wave) then rolled back, a canary promoted out of the
// rollback's pin, paused, resumed and aborted, a canary that fails
// (reverted), one that fails and is retried, one that waits for its
// maintenance window and is resumed with --now.
func TestCrashPointsAreListed(t *testing.T) {
	reached := map[string]int{}
	record := func(s *sim) { s.crash = func(p string) { reached[p]++ } }
	ctx := context.Background()

	s := newSim(t, 4)
	record(s)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 1, Analysis: "2s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)

	rel, err = s.release(manifest("v2"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutAwaiting)
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel.Rollout, "promote"); err != nil {
		t.Fatal(err)
	}
	// n3 is slow: n2, in its wave, is seen healthy alone first.
	s.down["n3"] = true
	for range 3 {
		if err := s.ros.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		s.agents()
	}
	s.down["n3"] = false
	s.run(rel.Rollout, api.RolloutSucceeded)

	rb, err := s.ros.RolloutRollback(ctx, "token:test", rel.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rb.ID, api.RolloutSucceeded)
	if _, err := s.ros.RolloutAction(ctx, "token:test", rb.ID, "promote"); err == nil {
		t.Fatal("promote of a finished rollout succeeded")
	}
	rel, err = s.release(manifest("v2b"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutHeld) // the rollback pinned the group
	for _, a := range []string{"promote", "pause", "resume", "abort"} {
		if a == "pause" {
			s.run(rel.Rollout, api.RolloutAwaiting)
		}
		if _, err := s.ros.RolloutAction(ctx, "token:test", rel.Rollout, a); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}

	v3 := manifest("v3")
	s.fails[v3.id] = map[string]bool{"n1": true}
	rel, err = s.release(v3, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, AutoRevert: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutReverted)

	v4 := manifest("v4")
	s.fails[v4.id] = map[string]bool{"n1": true}
	rel, err = s.release(v4, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "1s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutFailed)
	delete(s.fails, v4.id)
	if _, err := s.ros.RolloutRetry(ctx, "token:test", rel.Rollout, ""); err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)

	rel, err = s.release(manifest("v5"), api.Strategy{Windows: []string{"Mon 01:00-02:00 UTC"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutWaiting)
	if _, err := s.ros.RolloutResumeNow(ctx, "token:test", rel.Rollout); err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)

	for p, n := range reached {
		if !slices.Contains(rollout.CrashPoints, p) {
			t.Errorf("transition %q (reached %d times) is not in rollout.CrashPoints", p, n)
		}
	}
	for _, p := range rollout.CrashPoints {
		if reached[p] == 0 {
			t.Errorf("rollout.CrashPoints lists %q, which no rollout reached: %v", p, reached)
		}
	}
}
