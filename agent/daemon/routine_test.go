package daemon

import (
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// reportsDuring counts the reports posted over d.
func reportsDuring(srv *fakeServer, d time.Duration) int {
	_, _, _, before, _ := srv.counts()
	time.Sleep(d)
	_, _, _, after, _ := srv.counts()
	return after - before
}

// TestRoutineReportsRideOnLongPoll: against a server that counts a
// routine report carried by the long-poll, an idle agent whose long-polls
// come at least as often as its reports stops posting its unchanged timed
// reports (but for one every FullEvery intervals), and posts at once a
// report whose content changed; against a server that does not answer the
// header (an older one), or with long-polls spaced wider than the report
// interval, it posts every timed report as before.
func TestRoutineReportsRideOnLongPoll(t *testing.T) {
	const window = 2 * time.Second // 20 report intervals of 100ms
	intervals := int(window / (100 * time.Millisecond))

	for _, tc := range []struct {
		name     string
		routine  bool
		pollWait time.Duration
	}{
		{"old server", false, 50 * time.Millisecond},
		{"polls wider than reports", true, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, joinToken)
			srv.routine = tc.routine
			n := newNode(t, srv, srv.start())
			n.cfg.PollWait = tc.pollWait
			switchToFirst(t, n, srv)
			if got := reportsDuring(srv, window); got < intervals/3 {
				t.Errorf("%d reports posted in %s, want about %d", got, window, intervals)
			}
		})
	}

	t.Run("routine server", func(t *testing.T) {
		srv := newFakeServer(t, joinToken)
		srv.routine = true
		n := newNode(t, srv, srv.start())
		n.cfg.PollWait = 50 * time.Millisecond
		switchToFirst(t, n, srv)
		waitFor(t, "a routine report counted on the long-poll", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return srv.ridden > 0
		})
		// One full post per FullEvery intervals, and slack for one more.
		if got, most := reportsDuring(srv, window), intervals/routinereport.FullEvery+1; got > most {
			t.Errorf("%d reports posted in %s while nothing changed, want at most %d", got, window, most)
		}
		if err := n.sd.set("web.service", "failed"); err != nil {
			t.Fatal(err)
		}
		n.waitReport("the unit's change posted", func(r api.Report) bool {
			return len(r.Units) == 1 && r.Units[0].Active == "failed"
		})
	})
}
