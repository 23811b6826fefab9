package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
)

func (s *sim) pendingNotes() []string {
	s.t.Helper()
	ns, err := s.reg.PendingNotifications(context.Background(), 1000)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, n := range ns {
		l := n.Notifier + " " + n.Kind + " " + n.Rollout + " " + n.State
		if n.Node != "" {
			l += " " + n.Node
		}
		out = append(out, l)
	}
	return out
}

// TestNotificationsOwedByTransitions: each transition a rule wants leaves
// one outbox entry per rule, written with it; rules filter by kind and
// target group.
func TestNotificationsOwedByTransitions(t *testing.T) {
	s := newSim(t, 3)
	s.notify = []rollout.NotifyRule{
		{Name: "all"},
		{Name: "bad-news", Kinds: []string{api.NotifyHalted, api.NotifyReverted, api.NotifyNodeFailed}},
		{Name: "db-only", Groups: []string{"role=db"}},
	}
	s.restart()
	v1 := manifest("v1")
	rel, err := s.release(v1, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "2s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)
	v2 := manifest("v2")
	s.fails[v2.id] = map[string]bool{"n1": true}
	rel2, err := s.release(v2, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, AutoRevert: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel2.Rollout, api.RolloutReverted)
	want := []string{
		"all rollout.started ro1 running",
		"all rollout.wave.passed ro1 running", // the canary's analysis
		"all rollout.wave.passed ro1 running",
		"all rollout.succeeded ro1 succeeded",
		"all rollout.started ro2 running",
		"all rollout.node.failed ro2 running n1",
		"bad-news rollout.node.failed ro2 running n1",
		"all rollout.reverted ro2 reverted",
		"bad-news rollout.reverted ro2 reverted",
	}
	if got := s.pendingNotes(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outbox:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Delivered, an entry leaves the pending outbox and stays visible.
	ctx := context.Background()
	ns, _ := s.reg.PendingNotifications(ctx, 1)
	n := ns[0]
	n.Delivery, n.Attempts = api.DeliveryDelivered, 1
	if err := s.reg.RecordDelivery(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := s.reg.RecordDelivery(ctx, n); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("recorded twice: %v", err)
	}
	all, err := s.reg.Notifications(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := all[len(all)-1]
	if len(all) != len(want) || last.ID != n.ID || last.Delivery != api.DeliveryDelivered || len(s.pendingNotes()) != len(want)-1 {
		t.Fatalf("after delivering %s: %d listed, oldest %+v, %d pending", n.ID, len(all), last, len(s.pendingNotes()))
	}
	if _, err := s.reg.Notifications(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "n", "n0", "x1", "n-1", "n+1", fmt.Sprintf("n%d", 1<<40)} {
		if err := s.reg.RecordDelivery(ctx, api.Notification{ID: bad, Delivery: api.DeliveryDelivered}); err == nil {
			t.Errorf("RecordDelivery(%q) succeeded", bad)
		}
	}
}

// TestNotificationSurvivesCrashAtTransition: killed right after the
// transition committed, the notification it owes is in the outbox once.
func TestNotificationSurvivesCrashAtTransition(t *testing.T) {
	s := newSim(t, 2)
	s.notify = []rollout.NotifyRule{{Name: "ops", Kinds: []string{api.NotifySucceeded}}}
	s.restart()
	crashed := false
	s.crash = func(p string) {
		if p == rollout.CrashSucceeded && !crashed {
			crashed = true
			panic(errCrash)
		}
	}
	rel, err := s.release(manifest("v1"), api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)
	if got := s.pendingNotes(); !crashed || len(got) != 1 || got[0] != "ops rollout.succeeded ro1 succeeded" {
		t.Fatalf("crashed %v; outbox %v", crashed, got)
	}
}
