package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/release"
)

// serverCrashCase kills slipway-server at one rollout transition.
type serverCrashCase struct {
	at     string // SLIPWAY_SERVER_CRASH_AT
	strat  api.Strategy
	failOn string // node name prefix whose switch fails ("": none)
	// action is what the operator does: once the rollout awaits
	// promotion (pause, resume after a pause, promote, abort) or has
	// succeeded (rollback). "": nothing.
	action string
	want   string // the final state of the rollout (of the rollback's)
}

func serverCrashCases() []serverCrashCase {
	analysis := api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "2s"}
	manual := api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2}
	reverting := api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "2s", AutoRevert: true}
	// A one-minute window twelve hours away: closed for the whole test;
	// finishRollout starts each wave with resume --now.
	h := (time.Now().UTC().Hour() + 12) % 24
	windowed := analysis
	windowed.Windows = []string{fmt.Sprintf("* %02d:00-%02d:01 UTC", h, h)}
	cases := []serverCrashCase{
		// The first wave starts inside the deploy request: the server dies
		// before it answers.
		{at: rollout.CrashWaveStart, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashWaveStart + ":2", strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashObserve, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashWaveAnalysing, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashAwaitingPromotion, strat: manual, want: api.RolloutSucceeded},
		{at: rollout.CrashAnalysisPassed, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashWavePassed, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashSucceeded, strat: analysis, want: api.RolloutSucceeded},
		{at: rollout.CrashHalted, strat: reverting, failOn: "scr-b", want: api.RolloutReverted},
		// The first wave waits inside the deploy request: the server dies
		// before it answers.
		{at: rollout.CrashWindowWait, strat: windowed, want: api.RolloutSucceeded},
		// scr-a fails until the test removes its marker, then the rollout
		// (failed) is retried.
		{at: rollout.CrashRetry, strat: analysis, action: "retry", want: api.RolloutSucceeded},
		// Operator actions: the server dies before it answers them.
		{at: rollout.CrashPause, strat: manual, action: "pause", want: api.RolloutSucceeded},
		{at: rollout.CrashResume, strat: manual, action: "resume", want: api.RolloutSucceeded},
		{at: rollout.CrashPromote, strat: manual, action: "promote", want: api.RolloutSucceeded},
		{at: rollout.CrashRollback, strat: analysis, action: "rollback", want: api.RolloutSucceeded},
		// After the rollback the group is pinned: the release is held
		// until promoted, then awaits promotion as usual.
		{at: rollout.CrashAbort, strat: manual, action: "abort", want: api.RolloutAborted},
	}
	return cases
}

// crashUnit is the release's one service: its start fails on nodes named
// failOn*, and on a node scr-x while the server's socket directory (bound
// in at /run/slipway-server) holds a file fail-scr-x; it takes 5 s on scr-c, so that scr-b is seen healthy alone in
// their wave (the transition "observe").
func crashUnit(version, failOn string) string {
	pre := "ExecStartPre=/bin/sh -c 'case $(hostname) in scr-c*) sleep 5;; esac'\n" +
		"ExecStartPre=/bin/sh -c 'test ! -e /run/slipway-server/fail-$(hostname | cut -c1-5)'\n"
	if failOn != "" {
		pre += fmt.Sprintf("ExecStartPre=/bin/sh -c 'case $(hostname) in %s*) echo failing here on purpose; exit 1;; esac'\n", failOn)
	}
	return "[Unit]\nDescription=server crash e2e " + version + "\n[Service]\n" + pre + "ExecStart=/bin/sleep infinity\n"
}

// TestServerCrashPoints kills slipway-server (SIGKILL, by its own
// SLIPWAY_SERVER_CRASH_AT hook) right after each transition of a canary
// rollout over four real systemd nodes is committed, restarts it on the
// same state directory, and checks that the rollout ends as it would have:
// in the expected state, every node published exactly once (the audit log's
// rollout.publish events, and one generation of the release on each
// node), none skipped, each node running what the server wants of it (its
// agent's status, and the server's view), and no audit event of the
// rollout written twice. Every point of rollout.CrashPoints is covered.
func TestServerCrashPoints(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range serverCrashCases() {
		covered[strings.SplitN(c.at, ":", 2)[0]] = true
	}
	for _, p := range rollout.CrashPoints {
		if !covered[p] {
			t.Fatalf("no case kills the server at %q", p)
		}
	}
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	fleet, names := s.bootFleet(t, releases, "scr-a", "scr-b", "scr-c", "scr-d")
	sort.Strings(names)
	w := &node{t: t, releases: releases}
	toml := "name = \"crashapp\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"40s\"\nconfirm_timeout = \"10s\"\n"
	mk := func(version, failOn string) string {
		w.write(version, rel{toml: toml, units: map[string]string{"crashapp.service": crashUnit(version, failOn)}})
		return filepath.Join(releases, version)
	}
	v0 := s.waitRollout(t, s.deployWith(t, mk("v0", ""), api.Strategy{}), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if v0.State != api.RolloutSucceeded {
		t.Fatalf("v0: %s (%s)", v0.State, v0.Reason)
	}
	s.waitFleet(t, time.Minute, api.NodeConverged, names)
	good := v0.Manifest
	for i, c := range serverCrashCases() {
		t.Run(c.at, func(t *testing.T) {
			s.t, w.t = t, t
			for _, n := range fleet {
				n.t = t
			}
			ro := s.crashDuring(t, c, mk(fmt.Sprintf("v%d", i+1), c.failOn))
			switch ro.State {
			case api.RolloutSucceeded:
				s.expectServerCrashOutcome(t, fleet, ro, func(string) string { return ro.Manifest })
				good = ro.Manifest
			case api.RolloutAborted:
				// The canary confirmed the release and keeps it; the
				// others were never published to.
				canary := ro.Waves[0].Nodes[0].Name
				s.expectServerCrashOutcome(t, fleet, ro, func(n string) string {
					if n == canary {
						return ro.Manifest
					}
					return good
				})
			default:
				s.expectServerCrashOutcome(t, fleet, ro, func(string) string { return good })
			}
		})
	}
}

// crashDuring deploys dir with c's strategy on a server armed to die at
// c.at, waits for it to die there, restarts it unarmed and waits for the
// rollout to end (promoting it when it awaits promotion).
func (s *server) crashDuring(t *testing.T, c serverCrashCase, dir string) api.Rollout {
	s.env = []string{daemon.CrashEnv + "=" + c.at}
	s.start()
	s.env = nil
	r, err := release.Load(dir)
	must(t, err)
	canon, err := r.Manifest.Canonical()
	must(t, err)
	ctx := context.Background()
	if c.action == "retry" {
		must(t, os.WriteFile(filepath.Join(s.sockDir, "fail-scr-a"), nil, 0o644))
	}
	before, err := s.client.Rollouts(ctx)
	must(t, err)
	created, deployErr := s.client.CreateRelease(ctx, api.CreateReleaseRequest{Name: r.Name, Target: "role=web", Manifest: canon, Strategy: &c.strat})
	pid := s.cmd.Process.Pid
	if c.action != "" {
		must(t, deployErr)
		s.awaitAction(t, created.Rollout, c.action)
		before, err = s.client.Rollouts(ctx)
		must(t, err)
		s.act(t, created.Rollout, c.action)
	}
	waitFor(t, 3*time.Minute, "slipway-server to kill itself at "+c.at, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return nil
		}
		return fmt.Errorf("still running")
	})
	s.stop()
	if !strings.Contains(s.log.String(), daemon.CrashEnv+" reached") || !strings.Contains(s.log.String(), `"crash_point":"`+strings.SplitN(c.at, ":", 2)[0]+`"`) {
		t.Fatalf("slipway-server died, but not at %s:\n%s", c.at, tail(s.log.String(), 20))
	}
	s.start()
	id := created.Rollout
	if deployErr != nil || c.action == "rollback" {
		// The server died answering the deploy: what it committed is
		// there, as `slipway rollouts` shows a retrying operator.
		after, err := s.client.Rollouts(ctx)
		must(t, err)
		if len(after) != len(before)+1 {
			t.Fatalf("the request failed and left %d new rollouts", len(after)-len(before))
		}
		id = after[0].ID
		t.Logf("the request got no answer; its rollout %s was committed", id)
	}
	ro := s.finishRollout(t, id)
	if ro.State != c.want {
		t.Fatalf("rollout %s after the crash: %s (%s), want %s: %s", id, ro.State, ro.Reason, c.want, waveSummary(ro))
	}
	return ro
}

// awaitAction waits until rollout id is where the operator acts: awaiting
// promotion (promoting it out of a rollback's pin first), or succeeded
// for a rollback.
func (s *server) awaitAction(t *testing.T, id, action string) {
	ctx := context.Background()
	if action == "retry" {
		if ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed); ro.State != api.RolloutFailed {
			t.Fatalf("rollout %s: %s (%s), want failed on scr-a", id, ro.State, ro.Reason)
		}
		return
	}
	if action == "rollback" {
		if ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed); ro.State != api.RolloutSucceeded {
			t.Fatalf("rollout %s: %s (%s)", id, ro.State, ro.Reason)
		}
		return
	}
	if ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutAwaiting, api.RolloutHeld); ro.State == api.RolloutHeld {
		_, err := s.client.RolloutAction(ctx, id, "promote")
		must(t, err)
		s.waitRollout(t, id, 3*time.Minute, api.RolloutAwaiting)
	}
}

// act runs the operator's action on rollout id; the server is expected to
// die answering it (for resume: answering the resume after a pause).
func (s *server) act(t *testing.T, id, action string) {
	if action == "resume" {
		_, err := s.client.RolloutAction(context.Background(), id, "pause")
		must(t, err)
	}
	if action == "retry" {
		must(t, os.Remove(filepath.Join(s.sockDir, "fail-scr-a")))
		if _, err := s.client.RolloutRetry(context.Background(), id, api.RolloutRetryRequest{}); err == nil {
			t.Fatalf("retry of %s was answered: the server did not die there", id)
		}
		return
	}
	if _, err := s.client.RolloutAction(context.Background(), id, action); err == nil {
		t.Fatalf("%s of %s was answered: the server did not die there", action, id)
	}
}

// finishRollout drives rollout id to its end as an operator would after
// the restart: resume it if paused, promote it if it awaits promotion.
func (s *server) finishRollout(t *testing.T, id string) api.Rollout {
	for {
		ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutAborted,
			api.RolloutAwaiting, api.RolloutPaused, api.RolloutWaiting)
		switch ro.State {
		case api.RolloutPaused:
			_, err := s.client.RolloutAction(context.Background(), id, "resume")
			must(t, err)
		case api.RolloutWaiting:
			_, err := s.client.RolloutResume(context.Background(), id, api.RolloutResumeRequest{Now: true})
			must(t, err)
		case api.RolloutAwaiting:
			_, err := s.client.RolloutAction(context.Background(), id, "promote")
			must(t, err)
		default:
			return ro
		}
	}
}

// expectServerCrashOutcome checks a rollout that the server resumed after
// a crash: each node published at most once and, if the rollout
// succeeded, all of them; no audit event of the rollout twice; every node
// ends on want (desired, actual in the server's view, current in its
// agent's status), with at most one generation of the rollout's release.
func (s *server) expectServerCrashOutcome(t *testing.T, fleet []*fleetNode, ro api.Rollout, want func(node string) string) {
	ctx := context.Background()
	var published []string
	for _, wv := range ro.Waves {
		for _, n := range wv.Nodes {
			if !n.PublishedAt.IsZero() {
				published = append(published, n.Name)
			}
		}
	}
	seen := map[string]int{}
	retried := map[string]bool{} // an operator retry switches a node twice
	var pubs []string
	terminalEvents := 0
	for _, e := range s.allEvents(t) {
		if e.Target != ro.ID || !strings.HasPrefix(e.Action, "rollout.") {
			continue
		}
		seen[e.Action+" "+e.Detail]++
		switch e.Action {
		case "rollout.publish":
			pubs = append(pubs, e.Detail)
		case "rollout.retry":
			for _, n := range strings.Split(e.Detail, ", ") {
				retried[n] = true
			}
		case "rollout." + ro.State, "rollout.abort":
			terminalEvents++
		}
	}
	for ev, n := range seen {
		if n > 1 {
			t.Errorf("audit event %q of %s written %d times", ev, ro.ID, n)
		}
	}
	sort.Strings(pubs)
	sort.Strings(published)
	if !slices.Equal(pubs, published) {
		t.Errorf("rollout.publish events for %v, the rollout published to %v", pubs, published)
	}
	if ro.State == api.RolloutSucceeded && len(published) != len(fleet) {
		t.Errorf("the rollout succeeded having published to %v of %d nodes", published, len(fleet))
	}
	if terminalEvents != 1 {
		t.Errorf("%d rollout.%s events, want 1", terminalEvents, ro.State)
	}
	// A node still switching to the release when the rollout halted
	// finishes that switch, then follows its desired generation back.
	waitFor(t, 2*time.Minute, "every node to run what it should, idle", func() error {
		ns, err := s.client.Nodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if w := want(n.Name); n.Desired != w || n.Actual != w || n.State != api.NodeConverged {
				return fmt.Errorf("%s: desired %s actual %s (%s), want %s", n.Name, n.Desired, n.Actual, n.State, w)
			}
		}
		for _, n := range fleet {
			st := n.statusJSON()
			cur, _ := st["current"].(map[string]any)
			if cur["id"] != want(n.Name) || st["switch_in_progress"] != nil {
				return fmt.Errorf("%s's agent runs %v (switch in progress: %v)", n.Name, cur["id"], st["switch_in_progress"])
			}
		}
		return nil
	})
	for _, n := range fleet {
		got, err := s.client.Node(ctx, n.Name)
		must(t, err)
		gens := 0
		for _, g := range got.Report.Generations {
			if g.ID == ro.Manifest {
				gens++
			}
		}
		most := 1
		if retried[n.Name] {
			most = 2
		}
		if !ro.Rollback && (gens > most || (ro.State == api.RolloutSucceeded && gens < 1)) {
			t.Errorf("%s has %d generations of %s: %+v", n.Name, gens, ro.Manifest, got.Report.Generations)
		}
	}
}

// allEvents reads the whole audit log.
func (s *server) allEvents(t *testing.T) []api.Event {
	var all []api.Event
	var since int64
	for {
		evs, err := s.client.Events(context.Background(), since, 1000)
		must(t, err)
		all = append(all, evs...)
		if len(evs) < 1000 {
			return all
		}
		since = evs[len(evs)-1].Seq
	}
}
