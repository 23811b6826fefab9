package rollout_test

import (
	"context"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestResumeOfAwaitingRolloutAwaitsAgain: a canary rollout paused while it
// awaited promotion awaits it again when resumed, and a promote then
// finishes it. (It became "running" with nothing to run and refused
// promote: stuck, its group blocked. Found writing the server crash
// points for operator actions.)
func TestResumeOfAwaitingRolloutAwaitsAgain(t *testing.T) {
	s := newSim(t, 3)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutAwaiting)
	ctx := context.Background()
	for _, tc := range []struct{ action, want string }{{"pause", api.RolloutPaused}, {"resume", api.RolloutAwaiting}, {"promote", api.RolloutRunning}} {
		ro, err := s.ros.RolloutAction(ctx, "token:test", rel.Rollout, tc.action)
		if err != nil || ro.State != tc.want {
			t.Fatalf("%s: %s, %v; want %s\n%s", tc.action, ro.State, err, tc.want, describe(ro))
		}
	}
	ro := s.run(rel.Rollout, api.RolloutSucceeded)
	for _, n := range s.nodes {
		if s.actual[n] != ro.Manifest {
			t.Errorf("%s runs %q, want %s", n, s.actual[n], ro.Manifest)
		}
	}
}
