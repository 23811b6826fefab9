package meshbench

import (
	"runtime"
	"testing"
	"time"
)

// TestSmoke runs the benchmark's harness small: two agents per mode, one
// publish each (polling only with a 1s poll interval), every agent must
// pull it, and nothing the fleets started may outlive them. It checks the
// harness, never a timing: the figures are only logged.
func TestSmoke(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, m := range []mode{modeLongPoll, modeWake, modePoll} {
		t.Run(m.slug(), func(t *testing.T) {
			spec := fleetSpec{n: 2, mode: m, pollInterval: defaultPollInterval}
			if m == modePoll {
				spec.pollInterval = time.Second
			}
			r := runCase(t, spec, 1, false, 0)
			if len(r.rounds) != 1 || len(r.rounds[0].pulls) != spec.n {
				t.Fatalf("want 1 publish pulled by %d agents, got %+v", spec.n, r.rounds)
			}
			for i, p := range r.rounds[0].pulls {
				if p <= 0 {
					t.Errorf("agent %d pulled %v after the publish: before it?", i, p)
				}
			}
			t.Logf("setup %v, pulls %v, rollout succeeded after %v, %d goroutines, heap %.0f MiB",
				r.setup.Round(time.Millisecond), r.rounds[0].pulls, r.rounds[0].succeeded.Round(time.Millisecond), r.goroutines, r.heapMiB)
		})
	}
	checkGoroutines(t, before)
}
