package gossip

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// TestEventFanout measures (and logs; asserts only generous bounds) the time
// from PublishDesiredChanged at one member to the last member receiving it,
// with serf's LAN default timers (GossipInterval 200ms, 3 nodes a round).
// The 5ms test timers are no faster here: on two loaded cores the failure
// detector flaps and refutations crowd the broadcast queue. go test -run Fanout -v ./shared/gossip/
// (SLIPWAY_FANOUT_100=1 adds 100 members).
func TestEventFanout(t *testing.T) {
	// 100 members are opt-in: on a loaded 2-core machine their failure
	// detectors flap and the run takes minutes.
	sizes := []int{10}
	if os.Getenv("SLIPWAY_FANOUT_100") != "" {
		sizes = append(sizes, 100)
	}
	for _, timers := range []struct {
		name string
		iv   Intervals
	}{{"lan-defaults", Intervals{}}} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d", timers.name, n), func(t *testing.T) {
				ms := startCluster(t, n, []string{newKey(t)}, timers.iv)
				t0 := time.Now()
				eventually(t, 120*time.Second, "every member sees all alive", func() bool {
					for _, m := range ms {
						alive := 0
						for _, x := range m.Members() {
							if x.Status == StatusAlive {
								alive++
							}
						}
						if alive != n {
							return false
						}
					}
					return true
				})
				t.Logf("%d members converged in %v", n, time.Since(t0))
				var lasts []time.Duration
				for round := 1; round <= 5; round++ {
					sender := ms[(round*7)%n]
					sent := time.Now()
					if err := sender.PublishDesiredChanged(); err != nil {
						t.Fatal(err)
					}
					eventually(t, 30*time.Second, "event at every member", func() bool {
						for _, m := range ms {
							if ev, _ := m.rec.get(); len(ev) < round {
								return false
							}
						}
						return true
					})
					var last time.Duration
					var ds []time.Duration
					for _, m := range ms {
						_, at := m.rec.get()
						d := at[round-1].Sub(sent)
						ds = append(ds, d)
						last = max(last, d)
					}
					slices.Sort(ds)
					t.Logf("round %d: median %v, p90 %v, last %v", round, ds[len(ds)/2], ds[len(ds)*9/10], last)
					lasts = append(lasts, last)
				}
				slices.Sort(lasts)
				t.Logf("RESULT %s n=%d: time to every member, over 5 events: min %v median %v max %v",
					timers.name, n, lasts[0], lasts[len(lasts)/2], lasts[len(lasts)-1])
			})
		}
	}
}
