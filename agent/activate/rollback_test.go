package activate

import (
	"context"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/state"
)

// TestInterruptedRollbackKeepsItsTarget: a rollback killed after its flip
// is undone by the restart — the node goes back to the generation it
// rolled back from — and its target, which ran healthy before, is not
// quarantined (it was killed, it did not fail): the last result says so
// and the rollback can simply be run again. A rollback whose target
// really fails its checks still quarantines it, also when the agent is
// killed while reverting it.
func TestInterruptedRollbackKeepsItsTarget(t *testing.T) {
	for _, tc := range []struct {
		name        string
		targetFails bool   // gone.service (only in old) fails to start
		point       string // where the rollback is killed ("": not killed)
		recovered   string // outcome of the Recover after the restart
		quarantined bool   // old (generation 1) ends quarantined
	}{
		{name: "killed after the flip", point: CrashFlipped, recovered: "rollback-undone"},
		{name: "killed in the units phase", point: CrashUnits, recovered: "rollback-undone"},
		{name: "killed while verifying", point: CrashVerify, recovered: "rollback-undone"},
		{name: "target failed, killed while reverting", targetFails: true, point: CrashRevertFlipped, recovered: "reverted", quarantined: true},
		{name: "target failed, not killed", targetFails: true, recovered: "nothing-to-recover", quarantined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rcpt := newSecretsEnv(t)
			old, new, _, _ := crashReleases(e, rcpt)
			if o, err := e.apply(old); err != nil || o.To != 1 {
				t.Fatalf("apply old: %+v %v", o, err)
			}
			if o, err := e.apply(new); err != nil || o.To != 2 {
				t.Fatalf("apply new: %+v %v", o, err)
			}
			e.sd.failing["gone.service"] = tc.targetFails
			rollback := func() { _, _ = e.a.Rollback(context.Background(), 0) }
			if tc.point != "" {
				e.crashAt(tc.point, 1, map[string]bool{})
				if got := crashes(rollback); got != tc.point {
					t.Fatalf("the rollback did not reach %s", tc.point)
				}
			} else {
				rollback()
			}
			e.restart()
			o, err := e.a.Recover(context.Background())
			if err != nil || o.Outcome != tc.recovered {
				t.Fatalf("recover: %+v %v; want outcome %s", o, err, tc.recovered)
			}
			quarantined := 0
			if tc.quarantined {
				quarantined = 1
			}
			e.expectRuns(new, quarantined)
			s := e.snap()
			g, err := s.Generation(1)
			if err != nil {
				t.Fatal(err)
			}
			if _, q := s.Quarantined(g.ID); q != tc.quarantined || (g.Status == state.StatusQuarantined) != tc.quarantined {
				t.Fatalf("generation 1 is %s (quarantined: %v), want quarantined %v", g.Status, q, tc.quarantined)
			}
			if tc.quarantined {
				return
			}
			if r := s.Result; r == nil || r.Outcome != "rollback-undone" || r.From != 1 || r.To != 2 ||
				!strings.Contains(r.Reason, "rollback to generation 1 was interrupted") || !strings.Contains(r.Reason, "not quarantined") {
				t.Errorf("last result %+v: want rollback-undone 1 → 2 saying the rollback was interrupted and 1 is not quarantined", r)
			}
			// The operator runs the rollback again, and it goes through.
			if o, err := e.a.Rollback(context.Background(), 0); err != nil || o.Outcome != "switched" || o.To != 1 {
				t.Fatalf("rollback again: %+v %v", o, err)
			}
			e.expectRuns(old, 0)
		})
	}
}
