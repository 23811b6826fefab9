package registry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestRoutineReportsCoalesced: a report that says what the last one said
// writes nothing, yet Node and Nodes show when the node was last seen; the
// flush writes every changed last seen in one transaction, and a restart
// shows them; a report that changes something, or comes from a node that
// was offline, is written at once.
func TestRoutineReportsCoalesced(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"web-1", "web-2"} {
		f.enrol(n, nil)
	}
	idle := api.Report{State: api.AgentIdle, Units: []api.UnitReport{{Name: "web.service", Active: "active"}}}
	rep := func(name string, r api.Report) {
		t.Helper()
		r.Time = f.now
		must(t, f.reg.Report(f.ctx, name, r))
	}
	rep("web-1", idle)
	rep("web-2", idle)

	// Routine: nothing written, last seen and report time move.
	f.now = f.now.Add(time.Minute)
	rev := f.rev()
	rep("web-1", idle)
	rep("web-2", idle)
	if f.rev() != rev {
		t.Fatalf("routine reports wrote the store (rev %d → %d)", rev, f.rev())
	}
	n := f.node("web-1")
	if !n.LastSeen.Equal(f.now) || !n.Report.Time.Equal(f.now) {
		t.Errorf("node shows last seen %s, report time %s; want %s", n.LastSeen, n.Report.Time, f.now)
	}
	ns, err := f.reg.Nodes(f.ctx)
	must(t, err)
	for _, n := range ns {
		if !n.LastSeen.Equal(f.now) {
			t.Errorf("Nodes: %s last seen %s, want %s", n.Name, n.LastSeen, f.now)
		}
	}

	// One flush, one transaction; nothing left for the next.
	must(t, f.reg.FlushSeen(f.ctx))
	if f.rev() != rev+1 {
		t.Fatalf("flush: rev %d → %d, want one transaction", rev, f.rev())
	}
	must(t, f.reg.FlushSeen(f.ctx))
	if f.rev() != rev+1 {
		t.Fatal("a flush with nothing new wrote")
	}
	f.st.Close()
	f.open()
	if n := f.node("web-2"); !n.LastSeen.Equal(f.now) || n.State == api.NodeOffline {
		t.Errorf("after a restart web-2 last seen %s (%s), want %s", n.LastSeen, n.State, f.now)
	}

	// A change of units is written at once, and so is a report after the
	// node was offline.
	rev = f.rev()
	rep("web-1", api.Report{State: api.AgentIdle, Units: []api.UnitReport{{Name: "web.service", Active: "failed"}}})
	if f.rev() == rev {
		t.Error("a report that changed the units was not written")
	}
	f.now = f.now.Add(2 * time.Hour) // OfflineAfter is 1h
	if st := f.node("web-2").State; st != api.NodeOffline {
		t.Fatalf("web-2 %s after 2h, want offline", st)
	}
	rev = f.rev()
	rep("web-2", idle)
	if f.rev() == rev {
		t.Error("the report of a node back from offline was not written")
	}
	if st := f.node("web-2").State; st == api.NodeOffline {
		t.Error("web-2 still offline after it reported")
	}
}

// TestConfirmRepeated: confirming the generation the node confirmed last
// again writes nothing and adds no event, but counts as the node seen; a
// confirm of another generation, or the same with another number, writes.
func TestConfirmRepeated(t *testing.T) {
	f := newFixture(t)
	id := f.webWithOneNode("v1")
	confirm := func(n int) {
		t.Helper()
		if ok, err := f.reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: id, Number: n}); err != nil || !ok {
			t.Fatalf("confirm: %v %v", ok, err)
		}
	}
	confirm(1)
	evs, err := f.reg.Events(f.ctx, 0, 1000)
	must(t, err)
	rev := f.rev()
	f.now = f.now.Add(time.Minute)
	confirm(1)
	confirm(1)
	if f.rev() != rev {
		t.Fatalf("a repeated confirm wrote the store (rev %d → %d)", rev, f.rev())
	}
	again, err := f.reg.Events(f.ctx, 0, 1000)
	must(t, err)
	if len(again) != len(evs) {
		t.Errorf("repeated confirms added %d events", len(again)-len(evs))
	}
	if n := f.node("web-1"); !n.LastSeen.Equal(f.now) || n.Confirmed != id {
		t.Errorf("after a repeated confirm: last seen %s (want %s), confirmed %q", n.LastSeen, f.now, n.Confirmed)
	}
	confirm(2) // the node numbered it anew (e.g. after a local revert and switch)
	if f.rev() == rev {
		t.Error("a confirm with another number wrote nothing")
	}
}

// TestFlusher: RunFlusher writes routine last-seen times every
// SeenFlushEvery, and once more when it stops.
func TestFlusher(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
		stop  bool // stop the flusher before looking
	}{
		{"periodic", 10 * time.Millisecond, false},
		{"at shutdown", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.enrol("web-1", nil)
			reg := registry.New(f.st, noBlobs{}, registry.Config{Now: func() time.Time { return f.now }, OfflineAfter: time.Hour, SeenFlushEvery: tc.every}, zerolog.Nop())
			must(t, reg.Report(f.ctx, "web-1", api.Report{State: api.AgentIdle}))
			ctx, cancel := context.WithCancel(f.ctx)
			done := make(chan error, 1)
			go func() { done <- reg.RunFlusher(ctx) }()
			defer func() { cancel(); <-done }()
			f.now = f.now.Add(time.Minute)
			rev := f.rev()
			must(t, reg.Report(f.ctx, "web-1", api.Report{State: api.AgentIdle}))
			if tc.stop {
				cancel()
				must(t, <-done)
				done <- nil
			}
			deadline := time.Now().Add(10 * time.Second)
			for f.rev() == rev && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			// A new registry over the store sees what was flushed.
			fresh := registry.New(f.st, noBlobs{}, registry.Config{Now: func() time.Time { return f.now }, OfflineAfter: time.Hour}, zerolog.Nop())
			n, err := fresh.Node(f.ctx, "web-1")
			must(t, err)
			if !n.LastSeen.Equal(f.now) {
				t.Errorf("flushed last seen %s, want %s", n.LastSeen, f.now)
			}
		})
	}
}

// TestChangedReportReadsNoStoredNode: a report that differs from the one
// the registry knows is stored is written at once without first reading
// the node record to compare (a deploy's reports all differ), and the
// write takes the record from the node cache, which holds the one the last
// report wrote: no read of the store's node record at all.
func TestChangedReportReadsNoStoredNode(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", nil)
	rep := func(r api.Report) {
		t.Helper()
		r.Time = f.now
		must(t, f.reg.Report(f.ctx, "web-1", r))
	}
	rep(api.Report{State: api.AgentIdle})
	for i, st := range []string{api.AgentSwitching, api.AgentIdle, api.AgentSwitching} {
		f.now = f.now.Add(time.Second)
		before, rev := f.st.nodeGets.Load(), f.rev()
		rep(api.Report{State: st, Outcome: fmt.Sprint("step ", i)})
		if f.rev() == rev {
			t.Fatalf("report %d (%s) was not written", i, st)
		}
		if got := f.st.nodeGets.Load() - before; got != 0 {
			t.Errorf("report %d (%s) read the node record from the store %d times, want 0 (cached)", i, st, got)
		}
	}
}
