package rollout_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/window"
)

// sim is a fleet of simulated agents around a real registry and store.
type sim struct {
	t      *testing.T
	st     store.Store
	blobs  *blobstore.Store
	reg    *registry.Registry
	ros    *rollout.Machine
	now    time.Time
	nodes  []string
	tokens map[string]string
	actual map[string]string          // node -> manifest ID it runs
	fails  map[string]map[string]bool // manifest ID -> nodes where it fails
	down   map[string]bool            // nodes that do not answer
	seen   map[string]map[string]int  // node -> desired ID -> times it saw it published anew
	last   map[string]string          // node -> desired ETag last seen
	crash  func(point string)
	// groupWindows are the target groups' maintenance windows.
	groupWindows map[string]window.Set
	// notify are the [[notify]] rules.
	notify []rollout.NotifyRule
	// prom answers the analysis gates' queries.
	prom *analysis.Prometheus
}

var errCrash = errors.New("injected crash")

func newSim(t *testing.T, n int) *sim {
	t.Helper()
	st, blobs := registrytest.Stores(t)
	s := &sim{t: t, st: st, blobs: blobs, now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), tokens: map[string]string{},
		actual: map[string]string{}, fails: map[string]map[string]bool{}, down: map[string]bool{}, seen: map[string]map[string]int{}, last: map[string]string{}}
	s.restart()
	return withNodes(t, s, n)
}

// withNodes enrols n nodes into s.
func withNodes(t *testing.T, s *sim, n int) *sim {
	t.Helper()
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		jt, err := s.reg.CreateJoinToken(ctx, "token:test", 0, "")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.reg.Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: map[string]string{"role": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		s.nodes = append(s.nodes, name)
		s.tokens[name] = resp.NodeToken
		s.seen[name] = map[string]int{}
		if err := s.reg.Report(ctx, name, api.Report{State: api.AgentIdle}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// restart builds a new registry and rollout machine over the same store:
// a server restart.
func (s *sim) restart() {
	s.open(time.Hour)
}

// open builds a new registry (nodes unseen for offlineAfter are offline)
// and rollout machine over s's store.
func (s *sim) open(offlineAfter time.Duration) {
	s.reg = registry.New(s.st, s.blobs, registry.Config{Now: func() time.Time { return s.now }, OfflineAfter: offlineAfter}, zerolog.Nop())
	s.ros = rollout.New(s.reg, rollout.Config{GroupWindows: s.groupWindows, Notify: s.notify, Prometheus: s.prom}, zerolog.Nop())
	s.ros.Crash = func(p string) {
		if s.crash != nil {
			s.crash(p)
		}
	}
}

func manifest(tag string) json {
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web " + tag + "\n"},
		Health: generation.Health{HealthyDeadline: generation.Duration(time.Minute)}, ConfirmTimeout: generation.Duration(10 * time.Second)}
	b, _ := m.Canonical()
	id, _ := m.ID()
	return json{b, id}
}

type json struct {
	raw []byte
	id  string
}

// release deploys m. A crash injected while the server starts the rollout
// (after the release and rollout were committed) restarts the registry;
// the deploy then reports the rollout it made, as a retried CLI would see
// with `slipway rollouts`.
func (s *sim) release(m json, strat api.Strategy, queue bool) (rel api.Release, err error) {
	defer func() {
		if r := recover(); r != nil {
			if r != errCrash {
				panic(r)
			}
			s.restart()
			ros, lerr := s.ros.Rollouts(context.Background())
			if lerr != nil || len(ros) == 0 {
				s.t.Fatalf("after a crash in CreateRelease: %v %v", ros, lerr)
			}
			rel, err = api.Release{ID: ros[0].Release, Rollout: ros[0].ID}, nil
		}
	}()
	return s.ros.CreateRelease(context.Background(), "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m.raw, Strategy: &strat, Queue: queue})
}

// agents lets every node that is up act on its desired generation once.
func (s *sim) agents() {
	ctx := context.Background()
	for _, n := range s.nodes {
		if s.down[n] {
			continue
		}
		d, err := s.reg.Desired(ctx, n)
		if err != nil {
			s.t.Fatal(err)
		}
		if d == nil || d.ETag() == s.last[n] {
			continue
		}
		s.last[n] = d.ETag()
		s.seen[n][d.ID]++
		if s.fails[d.ID][n] {
			_ = s.reg.Report(ctx, n, api.Report{State: api.AgentFailed, Target: d.ID, CurrentID: s.actual[n], Outcome: "reverted", Reason: "unit web.service failed"})
			continue
		}
		if _, err := s.reg.Confirm(ctx, n, api.ConfirmRequest{ID: d.ID, Number: 1}); err != nil {
			s.t.Fatal(err)
		}
		s.actual[n] = d.ID
		_ = s.reg.Report(ctx, n, api.Report{State: api.AgentIdle, CurrentID: d.ID, Current: 1, Outcome: "switched"})
	}
}

// tick ticks the engine (restarting the registry when the crash hook
// panics), lets the agents act, and moves the clock on by a second.
func (s *sim) tick() {
	func() {
		defer func() {
			if r := recover(); r != nil {
				if r != errCrash {
					panic(r)
				}
				s.restart()
			}
		}()
		if err := s.ros.Tick(context.Background()); err != nil {
			s.t.Fatal(err)
		}
		s.ros.WaitMeasurements() // the next tick records them
	}()
	s.agents()
	s.now = s.now.Add(time.Second)
}

// run ticks the engine and the agents until the rollout reaches a state in
// until, restarting the registry whenever the crash hook panics.
func (s *sim) run(id string, until ...string) api.Rollout {
	s.t.Helper()
	for i := 0; i < 300; i++ {
		s.tick()
		ro, err := s.ros.Rollout(context.Background(), id)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, u := range until {
			if ro.State == u {
				return ro
			}
		}
	}
	ro, _ := s.ros.Rollout(context.Background(), id)
	s.t.Fatalf("rollout %s never reached %v: %s (%s)\n%s", id, until, ro.State, ro.Reason, describe(ro))
	return ro
}

func describe(ro api.Rollout) string {
	var b strings.Builder
	for i, w := range ro.Waves {
		fmt.Fprintf(&b, "  %d %s %s:", i, w.Name, w.State)
		for _, n := range w.Nodes {
			fmt.Fprintf(&b, " %s=%s", n.Name, n.State)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (s *sim) desired(n string) string {
	d, _ := s.reg.Desired(context.Background(), n)
	if d == nil {
		return ""
	}
	return d.ID
}

// The canary-then-batches rollout succeeds; killed at each of its
// transitions in turn, it still ends the same: every node published
// exactly once, none skipped.
func TestCanaryThenBatchesSurvivesCrashes(t *testing.T) {
	clean := newSim(t, 5)
	var points []string
	clean.crash = func(p string) { points = append(points, p) }
	v1 := manifest("v1")
	strat := api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}
	rel, err := clean.release(v1, strat, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := clean.run(rel.Rollout, api.RolloutAwaiting)
	if got := ro.Waves[0].Nodes[0].State; got != api.RolloutNodeHealthy || clean.desired("n2") != "" {
		t.Fatalf("after the canary: %s\n%s", ro.State, describe(ro))
	}
	if _, err := clean.ros.RolloutAction(context.Background(), "token:test", rel.Rollout, "promote"); err != nil {
		t.Fatal(err)
	}
	ro = clean.run(rel.Rollout, api.RolloutSucceeded)
	if len(ro.Waves) != 3 {
		t.Fatalf("waves %s", describe(ro))
	}
	t.Logf("%d transitions in a clean run: %v", len(points), points)
	if len(points) < 6 {
		t.Fatalf("too few transitions to be meaningful: %v", points)
	}

	for crashAt := 1; crashAt <= len(points); crashAt++ {
		t.Run(fmt.Sprintf("crash at %d (%s)", crashAt, points[crashAt-1]), func(t *testing.T) {
			s := newSim(t, 5)
			count := 0
			s.crash = func(p string) {
				count++
				if count == crashAt {
					panic(errCrash)
				}
			}
			rel, err := s.release(v1, strat, false)
			if err != nil {
				t.Fatal(err)
			}
			s.run(rel.Rollout, api.RolloutAwaiting)
			func() {
				defer func() {
					if r := recover(); r != nil && r != errCrash {
						panic(r)
					}
				}()
				if _, err := s.ros.RolloutAction(context.Background(), "token:test", rel.Rollout, "promote"); err != nil {
					t.Fatal(err)
				}
			}()
			ro := s.run(rel.Rollout, api.RolloutSucceeded)
			for _, n := range s.nodes {
				if s.seen[n][v1.id] != 1 || s.actual[n] != v1.id {
					t.Errorf("%s: published %d times, runs %q", n, s.seen[n][v1.id], s.actual[n])
				}
			}
			evs, _ := s.reg.Events(context.Background(), 0, 1000)
			pubs := map[string]int{}
			for _, e := range evs {
				if e.Action == "rollout.publish" {
					pubs[e.Detail]++
				}
			}
			for _, n := range s.nodes {
				if pubs[n] != 1 {
					t.Errorf("%s: %d rollout.publish events, want 1\n%s", n, pubs[n], describe(ro))
				}
			}
		})
	}
}

// A release failing on the canary halts with every other node untouched,
// and is quarantined fleet-wide.
func TestFailingCanaryHalts(t *testing.T) {
	s := newSim(t, 4)
	v1, v2 := manifest("v1"), manifest("v2")
	rel, _ := s.release(v1, api.Strategy{}, false)
	s.run(rel.Rollout, api.RolloutSucceeded)
	s.fails[v2.id] = map[string]bool{"n1": true}
	rel2, err := s.release(v2, api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, AutoRevert: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel2.Rollout, api.RolloutFailed, api.RolloutReverted)
	if !strings.Contains(ro.Reason, "n1: unit web.service failed") {
		t.Errorf("reason %q", ro.Reason)
	}
	for _, n := range []string{"n2", "n3", "n4"} {
		if s.desired(n) != v1.id || s.seen[n][v2.id] != 0 {
			t.Errorf("%s was touched: desired %s", n, s.desired(n))
		}
	}
	if _, err := s.release(v2, api.Strategy{}, false); !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "quarantined fleet-wide") {
		t.Fatalf("re-deploying the failed manifest: %v", err)
	}
	// An operator retry lifts the quarantine and retries the canary.
	delete(s.fails, v2.id)
	if ro.State == api.RolloutFailed {
		if _, err := s.ros.RolloutRetry(context.Background(), "token:test", rel2.Rollout, ""); err != nil {
			t.Fatal(err)
		}
		s.run(rel2.Rollout, api.RolloutAwaiting)
	}
}

// A release failing in wave 2 with auto_revert sends wave 1 back at once.
func TestFailureInWave2RevertsWave1(t *testing.T) {
	s := newSim(t, 4)
	v1, v2 := manifest("v1"), manifest("v2")
	rel, _ := s.release(v1, api.Strategy{}, false)
	s.run(rel.Rollout, api.RolloutSucceeded)
	// First a canary that fails on n1 and halts without reverting: n1's
	// desired stays on that broken release while it runs v1. A later
	// revert must send n1 back to what it ran (v1), not to what it was told.
	bad := manifest("bad")
	s.fails[bad.id] = map[string]bool{"n1": true}
	relBad, _ := s.release(bad, api.Strategy{Kind: api.StrategyCanary, Canary: 1}, false)
	s.run(relBad.Rollout, api.RolloutFailed)
	if s.desired("n1") != bad.id || s.actual["n1"] != v1.id {
		t.Fatalf("setup: n1 desired %s actual %s", s.desired("n1"), s.actual["n1"])
	}
	s.fails[v2.id] = map[string]bool{"n3": true}
	rel2, _ := s.release(v2, api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AutoRevert: true}, false)
	ro := s.run(rel2.Rollout, api.RolloutReverted)
	for _, n := range s.nodes {
		if s.desired(n) != v1.id {
			t.Errorf("%s desired %s after the revert, want v1", n, s.desired(n))
		}
	}
	for _, n := range []string{"n1", "n2"} {
		if got := ro.Waves[0].Nodes[map[string]int{"n1": 0, "n2": 1}[n]].State; got != api.RolloutNodeReverted {
			t.Errorf("%s: %s", n, got)
		}
	}
	s.run(rel2.Rollout, api.RolloutReverted) // the agents follow
	for _, n := range []string{"n1", "n2", "n4"} {
		if s.actual[n] != v1.id {
			t.Errorf("%s runs %s, want v1", n, s.actual[n])
		}
	}
}

func TestNodeDownPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   string // final rollout state
		node   string // state of the down node
	}{
		{api.NodeDownSkip, api.RolloutSucceeded, api.RolloutNodeSkipped},
		{api.NodeDownFail, api.RolloutFailed, api.RolloutNodeFailed},
		{api.NodeDownWait, api.RolloutSucceeded, api.RolloutNodeHealthy},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			s := newSim(t, 3)
			s.open(time.Minute)
			s.down["n3"] = true
			s.now = s.now.Add(2 * time.Minute) // n3 has not reported since: offline
			for _, n := range []string{"n1", "n2"} {
				_ = s.reg.Report(context.Background(), n, api.Report{State: api.AgentIdle})
			}
			rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyRolling, BatchSize: 3, OnNodeDown: tc.policy}, false)
			if err != nil {
				t.Fatal(err)
			}
			if tc.policy == api.NodeDownWait {
				ro := s.run(rel.Rollout, api.RolloutRunning)
				for i := 0; i < 5; i++ {
					s.ros.Tick(context.Background())
					s.agents()
				}
				if ro, _ = s.ros.Rollout(context.Background(), rel.Rollout); ro.State != api.RolloutRunning || ro.Waves[0].Nodes[2].State != api.RolloutNodeDown {
					t.Fatalf("waiting for the down node: %s\n%s", ro.State, describe(ro))
				}
				s.down["n3"] = false
				_ = s.reg.Report(context.Background(), "n3", api.Report{State: api.AgentIdle})
			}
			ro := s.run(rel.Rollout, tc.want)
			if got := ro.Waves[0].Nodes[2].State; got != tc.node {
				t.Fatalf("n3: %s, want %s\n%s", got, tc.node, describe(ro))
			}
		})
	}
}

func TestOneRolloutPerGroupQueueAndPin(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, 2)
	v1, v2, v3 := manifest("v1"), manifest("v2"), manifest("v3")
	rel1, _ := s.release(v1, api.Strategy{Kind: api.StrategyCanary, Canary: 1}, false)
	s.run(rel1.Rollout, api.RolloutAwaiting)
	if _, err := s.release(v2, api.Strategy{}, false); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("second release while one runs: %v", err)
	}
	rel2, err := s.release(v2, api.Strategy{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if ro, _ := s.ros.Rollout(ctx, rel2.Rollout); ro.State != api.RolloutQueued {
		t.Fatalf("queued release: %s", ro.State)
	}
	s.ros.RolloutAction(ctx, "token:test", rel1.Rollout, "promote")
	s.run(rel1.Rollout, api.RolloutSucceeded)
	s.run(rel2.Rollout, api.RolloutSucceeded) // the queued one starts by itself
	// Roll the group back to v1: it pins the group.
	rb, err := s.ros.RolloutRollback(ctx, "token:test", rel2.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rb.ID, api.RolloutSucceeded)
	for _, n := range s.nodes {
		if s.actual[n] != v1.id {
			t.Errorf("%s runs %s after the group rollback", n, s.actual[n])
		}
	}
	rel3, err := s.release(v3, api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if ro, _ := s.ros.Rollout(ctx, rel3.Rollout); ro.State != api.RolloutHeld {
		t.Fatalf("release on a pinned group: %s", ro.State)
	}
	for i := 0; i < 3; i++ {
		s.ros.Tick(ctx)
		s.agents()
	}
	if s.desired("n1") != v1.id {
		t.Fatalf("a held release took over the pinned group")
	}
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel3.Rollout, "promote"); err != nil {
		t.Fatal(err)
	}
	s.run(rel3.Rollout, api.RolloutSucceeded)
	// Pause and resume.
	rel4, _ := s.release(manifest("v4"), api.Strategy{Kind: api.StrategyRolling}, false)
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel4.Rollout, "pause"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		s.ros.Tick(ctx)
		s.agents()
	}
	if ro, _ := s.ros.Rollout(ctx, rel4.Rollout); ro.State != api.RolloutPaused || ro.Wave != 0 {
		t.Fatalf("paused rollout moved on: %s wave %d", ro.State, ro.Wave)
	}
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel4.Rollout, "resume"); err != nil {
		t.Fatal(err)
	}
	s.run(rel4.Rollout, api.RolloutSucceeded)
	if _, err := s.ros.RolloutAction(ctx, "token:test", rel4.Rollout, "pause"); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("pausing a finished rollout: %v", err)
	}
}

var _ = bytes.Equal
var _ = sort.Strings
var _ = sha256.Sum256
var _ = hex.EncodeToString
