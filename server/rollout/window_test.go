package rollout_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/window"
)

// The sim's clock starts Sunday 2026-11-22 12:00 UTC.

// tickAt sets the clock and ticks once (agents act too).
func (s *sim) tickAt(at time.Time) api.Rollout {
	s.t.Helper()
	s.now = at
	if err := s.ros.Tick(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	s.agents()
	return s.rollout()
}

func (s *sim) rollout() api.Rollout {
	s.t.Helper()
	ros, err := s.ros.Rollouts(context.Background())
	if err != nil || len(ros) == 0 {
		s.t.Fatalf("rollouts: %v %v", ros, err)
	}
	return ros[0]
}

func (s *sim) published() []string {
	var out []string
	for _, n := range s.nodes {
		if s.desired(n) != "" {
			out = append(out, n)
		}
	}
	return out
}

// events returns the audit log's actions with their details.
func (s *sim) events() []string {
	s.t.Helper()
	evs, err := s.reg.Events(context.Background(), 0, 10000)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Actor+" "+e.Action+" "+e.Detail)
	}
	return out
}

func hasEvent(evs []string, prefix string) bool {
	for _, e := range evs {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

func clock(h, m, sec int) time.Time { return time.Date(2026, 11, 22, h, m, sec, 0, time.UTC) }

// TestWindowHoldsFirstWave: outside its window a rollout publishes to no
// node, says why and when the window opens, and starts at the window's
// first second.
func TestWindowHoldsFirstWave(t *testing.T) {
	s := newSim(t, 3)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, Windows: []string{"Sun 12:30-13:00 UTC"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.tickAt(clock(12, 0, 1))
	want := "wave 1 waits for a maintenance window (the release's Sun 12:30-13:00 UTC); next opens Sun 2026-11-22 12:30 UTC"
	if ro.State != api.RolloutWaiting || ro.Reason != want || !ro.WindowOpensAt.Equal(clock(12, 30, 0)) || len(s.published()) != 0 {
		t.Fatalf("rollout %s (%s) opens at %s, published to %v; want waiting-window (%s), nothing published", ro.State, ro.Reason, ro.WindowOpensAt, s.published(), want)
	}
	if ro = s.tickAt(clock(12, 29, 59)); ro.State != api.RolloutWaiting || len(s.published()) != 0 {
		t.Fatalf("a second before the window: %s, published to %v", ro.State, s.published())
	}
	if ro = s.tickAt(clock(12, 30, 0)); ro.State != api.RolloutRunning || !ro.WindowOpensAt.IsZero() || len(s.published()) != 2 {
		t.Fatalf("at the window's start: %s (%s), published to %v", ro.State, ro.Reason, s.published())
	}
	ro = s.run(rel.Rollout, api.RolloutSucceeded)
	evs := s.events()
	for _, e := range []string{"server rollout.window.wait wave 1 waits", "server rollout.window.open wave 1 starts inside the release's Sun 12:30-13:00 UTC"} {
		if !hasEvent(evs, e) {
			t.Errorf("no event %q in\n%s", e, strings.Join(evs, "\n"))
		}
	}
}

// TestWindowClosesBetweenWavesAndResumeNow: a wave started inside the
// window finishes after it closes; the next one waits; resume --now
// starts that wave only (audited), and the one after waits again.
func TestWindowClosesBetweenWavesAndResumeNow(t *testing.T) {
	s := newSim(t, 4)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyRolling, BatchSize: 1, Stagger: "70s", Windows: []string{"Sun 12:00-12:02 UTC", "Sun 12:10-12:20 UTC"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutWaiting)
	if ro.Wave != 2 || ro.Waves[1].State != api.WavePassed || ro.Waves[2].State != api.WavePending || !ro.WindowOpensAt.Equal(clock(12, 10, 0)) {
		t.Fatalf("waiting at wave %d, opens %s:\n%s", ro.Wave+1, ro.WindowOpensAt, describe(ro))
	}
	ctx := context.Background()
	if _, err := s.ros.RolloutResumeNow(ctx, "token:alice", "ro999"); err == nil {
		t.Fatal("resume --now of an unknown rollout succeeded")
	}
	ro, err = s.ros.RolloutResumeNow(ctx, "token:alice", rel.Rollout)
	if err != nil || ro.State != api.RolloutRunning || ro.WindowOverride != 3 {
		t.Fatalf("resume --now: %s override %d, %v", ro.State, ro.WindowOverride, err)
	}
	ro = s.run(rel.Rollout, api.RolloutWaiting)
	if ro.Wave != 3 || ro.Waves[2].State != api.WavePassed || len(s.published()) != 3 {
		t.Fatalf("after the overridden wave: wave %d, published to %v\n%s", ro.Wave+1, s.published(), describe(ro))
	}
	if _, err := s.ros.RolloutAction(ctx, "token:alice", rel.Rollout, "promote"); err == nil {
		t.Fatal("promote of a waiting rollout succeeded")
	}
	for _, tc := range []struct{ action, want string }{{"pause", api.RolloutPaused}, {"resume", api.RolloutRunning}} {
		if ro, err := s.ros.RolloutAction(ctx, "token:alice", rel.Rollout, tc.action); err != nil || ro.State != tc.want {
			t.Fatalf("%s: %s, %v", tc.action, ro.State, err)
		}
	}
	if ro = s.tickAt(s.now.Add(time.Second)); ro.State != api.RolloutWaiting {
		t.Fatalf("resumed without --now outside the window: %s, want waiting-window again", ro.State)
	}
	if ro = s.tickAt(clock(12, 10, 0)); ro.State != api.RolloutRunning || len(s.published()) != 4 {
		t.Fatalf("at 12:10: %s (%s), published to %v\n%s", ro.State, ro.Reason, s.published(), describe(ro))
	}
	s.run(rel.Rollout, api.RolloutSucceeded)
	if _, err := s.ros.RolloutResumeNow(ctx, "token:alice", rel.Rollout); err == nil {
		t.Fatal("resume --now of a finished rollout succeeded")
	}
	evs := s.events()
	if !hasEvent(evs, "token:alice rollout.resume now: wave 3 may start outside the maintenance windows") {
		t.Fatalf("the override is not audited:\n%s", strings.Join(evs, "\n"))
	}
}

// TestGroupAndReleaseWindows: both sets must be open; the group's alone
// holds a release without windows; a rollback never waits.
func TestGroupAndReleaseWindows(t *testing.T) {
	s := newSim(t, 2)
	v0, err := s.release(manifest("v0"), api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(v0.Rollout, api.RolloutSucceeded)
	group, err := window.ParseSet([]string{"Sun 12:15-12:45 UTC"})
	if err != nil {
		t.Fatal(err)
	}
	s.groupWindows = map[string]window.Set{"role=web": group}
	s.restart()
	rel, err := s.release(manifest("v1"), api.Strategy{Windows: []string{"Sun 12:10-12:40 UTC"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.tickAt(clock(12, 12, 0))
	if ro.State != api.RolloutWaiting || !ro.WindowOpensAt.Equal(clock(12, 15, 0)) ||
		!strings.Contains(ro.Reason, "the release's Sun 12:10-12:40 UTC and the target group's Sun 12:15-12:45 UTC") {
		t.Fatalf("%s opens %s: %s", ro.State, ro.WindowOpensAt, ro.Reason)
	}
	s.now = clock(12, 15, 0)
	s.run(rel.Rollout, api.RolloutSucceeded)

	s.now = clock(12, 45, 0)
	rel2, err := s.release(manifest("v2"), api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if ro = s.tickAt(clock(12, 45, 1)); ro.ID != rel2.Rollout || ro.State != api.RolloutWaiting || !strings.HasPrefix(ro.Reason, "wave 1 waits for a maintenance window (the target group's Sun 12:15-12:45 UTC)") {
		t.Fatalf("release without windows at 12:45: %s %s (%s)", ro.ID, ro.State, ro.Reason)
	}
	if _, err := s.ros.RolloutAction(context.Background(), "token:test", rel2.Rollout, "abort"); err != nil {
		t.Fatal(err)
	}
	rb, err := s.ros.RolloutRollback(context.Background(), "token:test", rel.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	if ro := s.run(rb.ID, api.RolloutSucceeded, api.RolloutWaiting); ro.State != api.RolloutSucceeded {
		t.Fatalf("rollback outside the group's window: %s (%s)", ro.State, ro.Reason)
	}
}

// TestWindowsNeverOverlap: the reason says so and names the way out.
func TestWindowsNeverOverlap(t *testing.T) {
	s := newSim(t, 1)
	group, _ := window.ParseSet([]string{"Mon 01:00-02:00 UTC"})
	s.groupWindows = map[string]window.Set{"role=web": group}
	s.restart()
	if _, err := s.release(manifest("v1"), api.Strategy{Windows: []string{"Tue 01:00-02:00 UTC"}}, false); err != nil {
		t.Fatal(err)
	}
	ro := s.tickAt(clock(12, 0, 0))
	if ro.State != api.RolloutWaiting || !ro.WindowOpensAt.IsZero() || !strings.Contains(ro.Reason, "never overlap; start it with `slipway rollout resume --now "+ro.ID+"`") {
		t.Fatalf("%s opens %s: %s", ro.State, ro.WindowOpensAt, ro.Reason)
	}
}

// TestWindowWaitSurvivesRestart: killed right after it began to wait, the
// restarted server still waits, then runs each node once.
func TestWindowWaitSurvivesRestart(t *testing.T) {
	s := newSim(t, 2)
	s.crash = func(p string) {
		if p == "window-wait" {
			s.crash = nil
			panic(errCrash)
		}
	}
	rel, err := s.release(manifest("v1"), api.Strategy{Windows: []string{"Sun 12:10-13:00 UTC"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutWaiting)
	if s.crash != nil {
		t.Fatal("the crash at window-wait was not reached")
	}
	if len(s.published()) != 0 {
		t.Fatalf("published to %v while waiting", s.published())
	}
	s.now = ro.WindowOpensAt
	ro = s.run(rel.Rollout, api.RolloutSucceeded)
	for _, n := range s.nodes {
		if s.seen[n][ro.Manifest] != 1 {
			t.Errorf("%s saw the release published %d times, want 1", n, s.seen[n][ro.Manifest])
		}
	}
}
