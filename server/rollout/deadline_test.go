package rollout_test

import (
	"context"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestDeadlineFailureSaysWhatTheAgentSays: a node whose agent keeps
// retrying the release (found on a real node: its disk was full) fails the
// rollout at its deadline with the agent's reason, not only "node
// pending".
func TestDeadlineFailureSaysWhatTheAgentSays(t *testing.T) {
	s := newSim(t, 1)
	v1 := manifest("v1")
	s.down["n1"] = true // it never switches
	rel, err := s.release(v1, api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	why := "stage generation 2: artifact \"big\": fetch: write /var/lib/slipway/store/.fetch-1: no space left on device"
	if err := s.reg.Report(context.Background(), "n1", api.Report{State: api.AgentIdle, Target: v1.id, Outcome: "retrying", Reason: why}); err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutFailed)
	if want := "; its agent says: retrying: " + why; !strings.Contains(ro.Reason, "not confirmed healthy within") || !strings.Contains(ro.Reason, want) {
		t.Errorf("reason %q, want the deadline and %q", ro.Reason, want)
	}
}
