package registry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/waves"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Rollout keys.
const (
	kRollouts   = "rollouts/"   // rollouts/<seq 12 digits> -> rolloutRec
	kGroups     = "groups/"     // groups/<escaped selector> -> groupRec
	kQuarantine = "quarantine/" // quarantine/<manifest id> -> quarantineRec
	kCntRollout = "counters/rollout"
)

type rolloutRec struct {
	api.Rollout
	Stagger  time.Duration `json:"stagger_ns,omitempty"`
	Analysis time.Duration `json:"analysis_ns,omitempty"`
	Deadline time.Duration `json:"deadline_ns"`
	Queued   bool          `json:"queued_first,omitempty"`
	// NodesAt says where the waves' nodes are kept (rolloutstore.go);
	// NodeCounts counts a finished rollout's nodes by state.
	NodesAt    string         `json:"nodes_at,omitempty"`
	NodeCounts map[string]int `json:"node_counts,omitempty"`
}

type groupRec struct {
	Active string   `json:"active,omitempty"` // rollout running for the group
	Queue  []string `json:"queue,omitempty"`  // rollouts waiting, in order
	Pin    string   `json:"pin,omitempty"`    // rollback rollout pinning the group
}

type quarantineRec struct {
	Rollout string    `json:"rollout"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

func groupKey(group string) string {
	if group == "" {
		return kGroups + "*"
	}
	return kGroups + url.PathEscape(group)
}

func rolloutKey(id string) (string, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(id, "ro"), 10, 64)
	if err != nil || !strings.HasPrefix(id, "ro") || n <= 0 {
		return "", fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	return fmt.Sprintf("%s%012d", kRollouts, n), nil
}

func terminal(state string) bool {
	switch state {
	case api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutAborted:
		return true
	}
	return false
}

// CrashHook, when set, is called after every committed rollout transition
// with its name; tests panic in it to simulate a server killed right there.
type CrashHook func(point string)

// newRollout plans a rollout inside t and returns it; the caller stores it.
func (r *Registry) newRollout(t *txn, release api.Release, m *generation.Manifest, s api.Strategy, d waves.Durations, queue bool, actor string, rollback bool) (*rolloutRec, error) {
	seq, err := t.next(kCntRollout)
	if err != nil {
		return nil, err
	}
	now := r.cfg.Now().UTC()
	ro := &rolloutRec{Rollout: api.Rollout{
		ID: fmt.Sprintf("ro%d", seq), Release: release.ID, Group: release.Target, Manifest: release.Manifest,
		Strategy: s, State: api.RolloutRunning, Waves: waves.Plan(s, release.Nodes), CreatedAt: now, UpdatedAt: now, CreatedBy: actor, Rollback: rollback,
	}, Stagger: d.Stagger, Analysis: d.Analysis, Deadline: d.NodeDeadline}
	if ro.Deadline == 0 {
		ro.Deadline = m.Health.HealthyDeadline.Or(generation.DefaultHealthyDeadline) + m.ConfirmTimeout.Or(generation.DefaultConfirmTimeout) + 30*time.Second
	}
	var g groupRec
	if _, err := t.get(groupKey(ro.Group), &g); err != nil {
		return nil, err
	}
	active := ""
	if g.Active != "" {
		var cur rolloutRec
		if k, err := rolloutKey(g.Active); err == nil {
			if ok, err := t.get(k, &cur); err != nil {
				return nil, err
			} else if ok && !terminal(cur.State) {
				active = g.Active
			}
		}
	}
	switch {
	case rollback:
		if active != "" {
			if err := r.stopRollout(t, active, api.RolloutAborted, "superseded by rollback "+ro.ID); err != nil {
				return nil, err
			}
		}
		g.Active, g.Pin = ro.ID, ro.ID
	case active != "" && !queue:
		return nil, fmt.Errorf("%w: rollout %s is %s for target group %q; wait for it, abort it, or deploy with --queue", ErrConflict, active, "active", ro.Group)
	case active != "" || len(g.Queue) > 0:
		ro.State, ro.Reason = api.RolloutQueued, "waits for rollout "+active
		g.Queue = append(g.Queue, ro.ID)
	case g.Pin != "":
		ro.State, ro.Reason = api.RolloutHeld, "the group is pinned by rollback "+g.Pin+"; promote this rollout to run it"
	default:
		g.Active = ro.ID
	}
	if err := t.put(groupKey(ro.Group), g); err != nil {
		return nil, err
	}
	if err := saveRollout(t, fmt.Sprintf("%s%012d", kRollouts, seq), ro); err != nil {
		return nil, err
	}
	return ro, r.event(t, actor, "rollout.create", ro.ID, fmt.Sprintf("%s of %s to %d node(s) in %d wave(s), %s", ro.Strategy.Kind, release.ID, len(release.Nodes), len(ro.Waves), ro.State))
}

// stopRollout ends a rollout (aborted, failed, reverted, succeeded) and
// starts the next queued rollout of its group.
func (r *Registry) stopRollout(t *txn, id, state, reason string) error {
	k, err := rolloutKey(id)
	if err != nil {
		return err
	}
	var ro rolloutRec
	if ok, err := r.loadRollout(t, k, &ro); err != nil || !ok {
		return errors.Join(err, fmt.Errorf("rollout %s: %w", id, ErrNotFound))
	}
	if state == api.RolloutAborted {
		summary, err := r.abortNodes(t, &ro)
		if err != nil {
			return err
		}
		if summary != "" {
			reason += ": " + summary
		}
	}
	ro.State, ro.Reason, ro.UpdatedAt = state, reason, r.cfg.Now().UTC()
	if err := saveRollout(t, k, &ro); err != nil {
		return err
	}
	return r.releaseGroup(t, &ro)
}

// releaseGroup clears ro as the group's active rollout and starts the next
// queued one (held instead if the group is pinned).
func (r *Registry) releaseGroup(t *txn, ro *rolloutRec) error {
	var g groupRec
	if _, err := t.get(groupKey(ro.Group), &g); err != nil {
		return err
	}
	if g.Active == ro.ID {
		g.Active = ""
	}
	if g.Active == "" && len(g.Queue) > 0 {
		next := g.Queue[0]
		g.Queue = g.Queue[1:]
		k, err := rolloutKey(next)
		if err != nil {
			return err
		}
		var nr rolloutRec
		if ok, err := r.loadRollout(t, k, &nr); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("queued rollout %s: %w", next, ErrNotFound))
		}
		if g.Pin != "" {
			nr.State, nr.Reason = api.RolloutHeld, "the group is pinned by rollback "+g.Pin+"; promote this rollout to run it"
		} else {
			nr.State, nr.Reason = api.RolloutRunning, ""
			g.Active = nr.ID
		}
		nr.UpdatedAt = r.cfg.Now().UTC()
		if err := saveRollout(t, k, &nr); err != nil {
			return err
		}
		if err := r.event(t, "server", "rollout."+nr.State, nr.ID, "was queued behind "+ro.ID); err != nil {
			return err
		}
	}
	return t.put(groupKey(ro.Group), g)
}

// Rollouts lists rollouts, newest first.
func (r *Registry) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	ros, err := r.listRollouts(ctx, true)
	if err != nil {
		return nil, err
	}
	out := make([]api.Rollout, 0, len(ros))
	for i := len(ros) - 1; i >= 0; i-- {
		out = append(out, ros[i].Rollout)
	}
	return out, nil
}

// Rollout returns one rollout.
func (r *Registry) Rollout(ctx context.Context, id string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	ro, ok, err := r.readRollout(ctx, k)
	if err != nil {
		return api.Rollout{}, err
	}
	if !ok {
		return api.Rollout{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	return ro.Rollout, nil
}

// Manifest returns a published manifest.
func (r *Registry) Manifest(ctx context.Context, id string) ([]byte, error) {
	e, err := r.st.Get(ctx, kManifests+id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("manifest %q: %w", id, ErrNotFound)
	}
	return e.Value, err
}

// Tick advances every active rollout by one step each. It is idempotent:
// every step reads the current state and persists its transition together
// with its effects in one transaction, so a server killed at any point
// resumes where it stood: no node is switched twice, none is skipped. A
// tick costs what changed: it lists only the active rollouts
// (rolloutstore.go) and looks again only at their nodes that changed.
func (r *Registry) Tick(ctx context.Context) error {
	ids, err := r.activeRollouts(ctx)
	if err != nil {
		return err
	}
	r.watch.retain(ids)
	r.analysis.retain(ids)
	keys := make(map[string]bool, len(ids))
	for _, id := range ids {
		if k, err := rolloutKey(id); err == nil {
			keys[k] = true
		}
	}
	r.roCache.retain(keys)
	var errs []error
	for _, id := range ids {
		if err := r.step(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Registry) crash(point string) {
	if r.Crash != nil {
		r.Crash(point)
	}
}

// step advances one rollout.
func (r *Registry) step(ctx context.Context, id string) error {
	k, err := rolloutKey(id)
	if err != nil {
		return err
	}
	var point string
	var saved *rolloutRec
	changed, full := r.watch.take(id)
	results := r.analysis.take(id)
	var due []dueQuery
	rev, err := r.updateRev(ctx, func(t *txn) error {
		point, saved, due = "", nil, nil
		var ro rolloutRec
		if ok, err := r.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, ErrNotFound))
		}
		before := t.rollouts[k].ro // as loaded; advance changes ro only
		p, err := r.advance(t, &ro, observed{full: full, changed: changed, measured: results, due: &due})
		if err != nil {
			return err
		}
		if sameRollout(before, &ro) {
			return nil
		}
		point, saved = p, &ro
		ro.UpdatedAt = r.cfg.Now().UTC()
		return saveRollout(t, k, &ro)
	})
	if err != nil {
		r.watch.putBack(id, changed, full)
	}
	r.analysis.settle(id, results, err == nil)
	if err == nil {
		r.analysis.start(ctx, r.cfg.Prometheus, due)
	}
	if err == nil && saved != nil && rev != 0 {
		r.roCache.keep(k, rev, saved, nodesKeys)
	}
	if err == nil && point != "" {
		r.crash(point)
	}
	return err
}

// observed says which nodes of a rollout a step looks at again: all
// (full), or those changed since the last step (and those whose deadline
// passed).
type observed struct {
	full    bool
	changed map[string]struct{}
	// measured are analysis measurements to record; due collects those to
	// take once the step committed (analysis.go).
	measured []measured
	due      *[]dueQuery
}

func (o observed) has(name string) bool {
	if o.full {
		return true
	}
	_, ok := o.changed[name]
	return ok
}

// mayChange reports whether a step must look at node n of ro: a node that
// waits for something of its own (switching, down, healthy in a canary
// analysis) when it changed since the last step or its deadline passed.
func mayChange(ro *rolloutRec, n *api.RolloutNode, analysing bool, obs observed, now time.Time) bool {
	switch n.State {
	case api.RolloutNodeSwitching:
		return obs.has(n.Name) || now.Sub(n.PublishedAt) > ro.Deadline
	case api.RolloutNodeDown:
		return obs.has(n.Name)
	case api.RolloutNodeHealthy:
		return analysing && obs.has(n.Name)
	}
	return false
}

// committedOn reports whether a node (its view and last report) runs
// generation id and is done switching to it: the server confirmed it (or
// the node converged on it) and the agent no longer reports the switch in
// progress. A confirm alone is not enough: its answer may never reach the
// agent (a one-way partition), which then reverts after confirm_timeout.
func committedOn(view api.Node, rep *api.Report, id string) bool {
	return view.Actual == id && rep != nil && rep.State != api.AgentSwitching &&
		(view.Confirmed == id || view.State == api.NodeConverged)
}

// nodeState is what the rollout needs to know of a node right now. It
// peeks: a node's record and desired generation change under a running
// rollout all the time (reports, confirms), and a step that made them
// conditions would retry for every agent that wrote meanwhile, rereading
// every node it looks at (at 10,000 agents a step retried for tens of
// seconds). A write it misses marks the node, so the next step sees it.
func (r *Registry) nodeState(t *txn, name string) (api.Node, *api.Report, error) {
	var n nodeRec
	ok, err := t.peek(kNodes+name, &n)
	if err != nil {
		return api.Node{}, nil, err
	}
	if !ok {
		return api.Node{Name: name, State: api.NodeOffline}, nil, nil
	}
	if err := r.seen.load(t.ctx, r.st); err != nil {
		return api.Node{}, nil, err
	}
	var d desiredRec
	hasD, err := t.peek(kDesired+name, &d)
	if err != nil {
		return api.Node{}, nil, err
	}
	return r.view(n, d, hasD), n.Report, nil
}

// canaryWindow reports whether ro's current wave is a canary wave with an
// analysis window (strategy analysis) before the next wave.
func (ro *rolloutRec) canaryWindow() bool {
	return ro.Waves[ro.Wave].Name == "canary" && ro.Wave < len(ro.Waves)-1 && ro.Analysis > 0
}

func analysingWhat(ro *rolloutRec) string {
	var what []string
	if ro.canaryWindow() {
		what = append(what, "analysis window "+ro.Analysis.String())
	}
	for _, g := range ro.Strategy.AnalysisGates {
		what = append(what, "gate "+g.Name)
	}
	return ro.Waves[ro.Wave].Name + " healthy; " + strings.Join(what, ", ")
}

// wavePassed ends ro's current wave once its nodes confirmed (and its
// analysis passed): a canary wave awaits promotion, the last wave ends
// the rollout, any other one lets the next start.
func (r *Registry) wavePassed(t *txn, ro *rolloutRec) (string, error) {
	w := &ro.Waves[ro.Wave]
	last := ro.Wave == len(ro.Waves)-1
	if w.Name == "canary" && !last {
		w.State = api.WavePassed
		ro.State, ro.Reason = api.RolloutAwaiting, "canaries healthy; promote to continue"
		if err := r.notify(t, ro, api.NotifyWavePassed, "", w.Name+": canaries healthy; awaiting promotion"); err != nil {
			return "", err
		}
		return "awaiting-promotion", r.event(t, "server", "rollout.awaiting-promotion", ro.ID, "canaries healthy")
	}
	w.State = api.WavePassed
	if err := r.event(t, "server", "rollout.wave.passed", ro.ID, w.Name); err != nil {
		return "", err
	}
	if err := r.notify(t, ro, api.NotifyWavePassed, "", w.Name); err != nil {
		return "", err
	}
	if last {
		return r.finish(t, ro)
	}
	ro.Wave++
	return "wave-passed", nil
}

func (r *Registry) finish(t *txn, ro *rolloutRec) (string, error) {
	ro.State, ro.Reason = api.RolloutSucceeded, ""
	if ro.Failures > 0 {
		ro.Reason = fmt.Sprintf("%d node(s) failed within max_failures %d", ro.Failures, ro.Strategy.MaxFailures)
	}
	if err := r.releaseGroup(t, ro); err != nil {
		return "", err
	}
	if err := r.notify(t, ro, api.NotifySucceeded, "", ro.Reason); err != nil {
		return "", err
	}
	return "succeeded", r.event(t, "server", "rollout.succeeded", ro.ID, ro.Release)
}

// halt stops a rollout that failed; with auto_revert every node it switched
// goes back to its previous generation at once: only one it ran and
// confirmed (Previous, recorded when its wave came; publish). The manifest is
// quarantined fleet-wide.
func (r *Registry) halt(t *txn, ro *rolloutRec, reason string) (string, error) {
	ro.State, ro.Reason = api.RolloutFailed, reason
	for wi := range ro.Waves {
		wv := &ro.Waves[wi]
		if wv.State == api.WaveRunning || wv.State == api.WaveAnalysing {
			wv.State, wv.FinishedAt = api.WaveFailed, r.cfg.Now().UTC()
		}
	}
	if ro.Strategy.AutoRevert {
		ro.State = api.RolloutReverted
		var reverted, stuck []string
		for wi := range ro.Waves {
			for ni := range ro.Waves[wi].Nodes {
				n := &ro.Waves[wi].Nodes[ni]
				if n.State != api.RolloutNodeSwitching && n.State != api.RolloutNodeHealthy && n.State != api.RolloutNodeFailed {
					continue
				}
				if n.Previous == "" || n.Previous == ro.Manifest {
					stuck = append(stuck, n.Name)
					continue
				}
				e, err := t.st.Get(t.ctx, kManifests+n.Previous)
				if errors.Is(err, store.ErrNotFound) {
					stuck = append(stuck, n.Name) // it ran something this server never published
					continue
				}
				if err != nil {
					return "", fmt.Errorf("previous manifest of %s: %w", n.Name, err)
				}
				pm, err := generation.Parse(e.Value)
				if err != nil {
					return "", err
				}
				if err := r.setDesired(t, n.Name, n.Previous, "revert of "+ro.ID, pm); err != nil {
					return "", err
				}
				if n.State != api.RolloutNodeFailed {
					n.State = api.RolloutNodeReverted
				}
				reverted = append(reverted, n.Name)
			}
		}
		ro.Reason += fmt.Sprintf("; auto_revert sent %d node(s) back: %s", len(reverted), strings.Join(reverted, ", "))
		if len(stuck) > 0 {
			ro.Reason += fmt.Sprintf("; no previous generation to revert to on: %s", strings.Join(stuck, ", "))
		}
	}
	if err := t.put(kQuarantine+ro.Manifest, quarantineRec{Rollout: ro.ID, Reason: reason, At: r.cfg.Now().UTC()}); err != nil {
		return "", err
	}
	if err := r.releaseGroup(t, ro); err != nil {
		return "", err
	}
	kind := api.NotifyHalted
	if ro.State == api.RolloutReverted {
		kind = api.NotifyReverted
	}
	if err := r.notify(t, ro, kind, "", ro.Reason); err != nil {
		return "", err
	}
	return "halted", r.event(t, "server", "rollout."+ro.State, ro.ID, ro.Reason)
}

// RolloutAction runs pause, resume, promote or abort.
func (r *Registry) RolloutAction(ctx context.Context, actor, id, action string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	var out api.Rollout
	err = r.update(ctx, func(t *txn) error {
		var ro rolloutRec
		if ok, err := r.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, ErrNotFound))
		}
		bad := func() error {
			return fmt.Errorf("%w: cannot %s rollout %s: it is %s", ErrConflict, action, id, ro.State)
		}
		switch action {
		case "pause":
			if ro.State != api.RolloutRunning && ro.State != api.RolloutAwaiting && ro.State != api.RolloutWaiting {
				return bad()
			}
			ro.State, ro.Reason = api.RolloutPaused, "paused by "+actor
		case "resume":
			if ro.State == api.RolloutWaiting {
				return fmt.Errorf("%w: rollout %s is waiting-window: its next wave waits for a maintenance window; resume with now (`slipway rollout resume --now %s`) starts it outside the windows", ErrConflict, id, id)
			}
			if ro.State != api.RolloutPaused {
				return bad()
			}
			ro.State, ro.Reason = api.RolloutRunning, ""
			resumeAnalysis(&ro)
			if ro.Waves[ro.Wave].State == api.WavePassed {
				// Paused while it awaited promotion: it awaits it again
				// (running, nothing would move it on).
				ro.State, ro.Reason = api.RolloutAwaiting, "canaries healthy; promote to continue"
			}
		case "promote":
			switch ro.State {
			case api.RolloutAwaiting:
				ro.State, ro.Reason = api.RolloutRunning, ""
				ro.Wave++
			case api.RolloutHeld:
				var g groupRec
				if _, err := t.get(groupKey(ro.Group), &g); err != nil {
					return err
				}
				if g.Active != "" && g.Active != ro.ID {
					var cur rolloutRec
					if ck, err := rolloutKey(g.Active); err == nil {
						if ok, _ := t.get(ck, &cur); ok && !terminal(cur.State) {
							return fmt.Errorf("%w: rollout %s is still active for the group", ErrConflict, g.Active)
						}
					}
				}
				g.Pin, g.Active = "", ro.ID
				if err := t.put(groupKey(ro.Group), g); err != nil {
					return err
				}
				ro.State, ro.Reason = api.RolloutRunning, "promoted by "+actor+"; the group's rollback pin is lifted"
			default:
				return bad()
			}
		case "abort":
			if terminal(ro.State) {
				return bad()
			}
			summary, err := r.abortNodes(t, &ro)
			if err != nil {
				return err
			}
			ro.State, ro.Reason = api.RolloutAborted, "aborted by "+actor
			if summary != "" {
				ro.Reason += ": " + summary
			}
			if err := r.dequeue(t, &ro); err != nil {
				return err
			}
			if err := r.releaseGroup(t, &ro); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown action %q", ErrInvalid, action)
		}
		ro.UpdatedAt = r.cfg.Now().UTC()
		if err := saveRollout(t, k, &ro); err != nil {
			return err
		}
		out = ro.Rollout // as saved
		return r.event(t, actor, "rollout."+action, id, ro.State)
	})
	if err == nil {
		r.crash(action)
	}
	return out, err
}

// dequeue removes a queued rollout from its group's queue.
func (r *Registry) dequeue(t *txn, ro *rolloutRec) error {
	var g groupRec
	if _, err := t.get(groupKey(ro.Group), &g); err != nil {
		return err
	}
	q := g.Queue[:0]
	for _, id := range g.Queue {
		if id != ro.ID {
			q = append(q, id)
		}
	}
	g.Queue = q
	return t.put(groupKey(ro.Group), g)
}

// RolloutRetry retries failed nodes of a rollout (one, or all of the
// current wave), lifts the fleet-wide quarantine of its manifest, and
// resumes it if it had halted without reverting.
func (r *Registry) RolloutRetry(ctx context.Context, actor, id, node string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	var out api.Rollout
	err = r.update(ctx, func(t *txn) error {
		var ro rolloutRec
		if ok, err := r.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, ErrNotFound))
		}
		switch ro.State {
		case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting, api.RolloutWaiting, api.RolloutFailed:
		default:
			return fmt.Errorf("%w: cannot retry rollout %s: it is %s (deploy the release again instead)", ErrConflict, id, ro.State)
		}
		var retried []string
		for wi := range ro.Waves {
			if node == "" && wi != ro.Wave {
				continue
			}
			for ni := range ro.Waves[wi].Nodes {
				n := &ro.Waves[wi].Nodes[ni]
				if (node != "" && n.Name != node) || n.State != api.RolloutNodeFailed {
					continue
				}
				var d desiredRec
				if ok, err := t.get(kDesired+n.Name, &d); err != nil {
					return err
				} else if ok && d.ID == ro.Manifest {
					d.Retry++
					d.At = r.cfg.Now().UTC()
					if err := t.put(kDesired+n.Name, d); err != nil {
						return err
					}
				}
				n.State, n.Reason, n.PublishedAt = api.RolloutNodeSwitching, "retried by "+actor, r.cfg.Now().UTC()
				retried = append(retried, n.Name)
			}
		}
		if len(retried) == 0 && node == "" && ro.State == api.RolloutFailed {
			retried = retryAnalysis(&ro)
		}
		if len(retried) == 0 {
			if node != "" {
				return fmt.Errorf("%w: node %s has not failed in rollout %s", ErrConflict, node, id)
			}
			return fmt.Errorf("%w: no failed node in wave %d of rollout %s", ErrConflict, ro.Wave+1, id)
		}
		t.del(kQuarantine + ro.Manifest)
		if ro.State == api.RolloutFailed {
			var g groupRec
			if _, err := t.get(groupKey(ro.Group), &g); err != nil {
				return err
			}
			if g.Active != "" && g.Active != ro.ID {
				return fmt.Errorf("%w: rollout %s is now active for the group", ErrConflict, g.Active)
			}
			g.Active = ro.ID
			if err := t.put(groupKey(ro.Group), g); err != nil {
				return err
			}
			ro.State = api.RolloutRunning
			for wi := range ro.Waves {
				if ro.Waves[wi].State == api.WaveFailed {
					ro.Waves[wi].State = api.WaveRunning
				}
			}
		}
		ro.Reason = "retried by " + actor + ": " + strings.Join(retried, ", ")
		ro.UpdatedAt = r.cfg.Now().UTC()
		out = ro.Rollout
		if err := saveRollout(t, k, &ro); err != nil {
			return err
		}
		return r.event(t, actor, "rollout.retry", id, strings.Join(retried, ", "))
	})
	if err == nil {
		r.crash(CrashRetry)
	}
	return out, err
}

// RolloutRollback sends the nodes a rollout published to back to the
// generation each ran and confirmed before it (RolloutNode.Previous),
// through a new all-at-once rollout that pins the group: later releases
// are held until an operator promotes one. A node never goes to a
// generation it did not run and confirm: if any published node has none
// (it confirmed nothing before, or its previous generation is not one it
// confirmed, or this server never published it), the rollback is refused
// with ErrConflict naming those nodes, and nothing changes.
func (r *Registry) RolloutRollback(ctx context.Context, actor, id string) (api.Rollout, error) {
	orig, err := r.Rollout(ctx, id)
	if err != nil {
		return api.Rollout{}, err
	}
	var ro *rolloutRec
	err = r.update(ctx, func(t *txn) error {
		prev, nodes, err := rollbackTargets(t, orig)
		if err != nil {
			return err
		}
		e, err := t.st.Get(t.ctx, kManifests+prev)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", prev, err)
		}
		m, err := generation.Parse(e.Value)
		if err != nil {
			return err
		}
		seq, err := t.next(kCntRelease)
		if err != nil {
			return err
		}
		rel := api.Release{ID: fmt.Sprintf("r%d-rollback", seq), Name: "rollback", Target: orig.Group, Manifest: prev, Nodes: nodes, CreatedAt: r.cfg.Now().UTC(), CreatedBy: actor}
		s, d, _ := waves.ParseStrategy(api.Strategy{Kind: api.StrategyAllAtOnce, OnNodeDown: api.NodeDownWait})
		ro, err = r.newRollout(t, rel, m, s, d, false, actor, true)
		if err != nil {
			return err
		}
		rel.Rollout = ro.ID
		if err := t.put(fmt.Sprintf("%s%012d", kReleases, seq), rel); err != nil {
			return err
		}
		return r.event(t, actor, "rollout.rollback", id, fmt.Sprintf("group %q back to %s by %s (pinned)", orig.Group, prev, ro.ID))
	})
	if err != nil {
		return api.Rollout{}, err
	}
	r.crash(CrashRollback)
	if err := r.step(ctx, ro.ID); err != nil {
		return api.Rollout{}, err
	}
	return r.Rollout(ctx, ro.ID)
}

// rollbackTargets checks that every node orig published to ran and
// confirmed its previous generation, and that they share it; it returns
// that generation and the nodes.
func rollbackTargets(t *txn, orig api.Rollout) (string, []string, error) {
	var refused []string
	byPrev := map[string][]string{}
	for _, w := range orig.Waves {
		for _, n := range w.Nodes {
			if n.PublishedAt.IsZero() {
				continue // never published: nothing to undo on it
			}
			why, err := noRollbackTo(t, orig, n)
			if err != nil {
				return "", nil, err
			}
			if why != "" {
				refused = append(refused, n.Name+" ("+why+")")
				continue
			}
			byPrev[n.Previous] = append(byPrev[n.Previous], n.Name)
		}
	}
	if len(refused) > 0 {
		return "", nil, fmt.Errorf("%w: cannot roll back rollout %s: %d node(s) have no generation they ran and confirmed before it to go back to: %s; a rollback never sends a node to a generation it did not run and confirm",
			ErrConflict, orig.ID, len(refused), strings.Join(refused, "; "))
	}
	switch len(byPrev) {
	case 0:
		return "", nil, fmt.Errorf("%w: rollout %s published to no node yet; abort it instead", ErrConflict, orig.ID)
	case 1:
		for prev, ns := range byPrev {
			return prev, ns, nil
		}
	}
	var groups []string
	for prev, ns := range byPrev {
		groups = append(groups, fmt.Sprintf("%s on %s", prev, strings.Join(ns, ", ")))
	}
	sort.Strings(groups)
	return "", nil, fmt.Errorf("%w: the nodes of rollout %s ran different generations before it (%s); roll them back one by one with `slipway rollback NODE`", ErrConflict, orig.ID, strings.Join(groups, "; "))
}

// noRollbackTo says why node n of orig cannot go back to n.Previous ("" =
// it can).
func noRollbackTo(t *txn, orig api.Rollout, n api.RolloutNode) (string, error) {
	if n.Previous == "" {
		return "it had confirmed no generation when the rollout reached it", nil
	}
	if n.Previous == orig.Manifest {
		return "its previous generation is the rollout's own release", nil
	}
	var nr nodeRec
	if ok, err := t.get(kNodes+n.Name, &nr); err != nil {
		return "", err
	} else if !ok {
		return "no longer enrolled", nil
	}
	if ok, err := confirmedOn(t, nr, n.Previous); err != nil {
		return "", err
	} else if !ok {
		return "it never confirmed " + n.Previous, nil
	}
	if ok, err := t.get(kManifests+n.Previous, nil); err != nil {
		return "", err
	} else if !ok {
		return n.Previous + " was not published by this server; roll back on the node with `slipway-agent rollback`", nil
	}
	return "", nil
}

// Changes returns channels that signal changes relevant to rollouts (node
// reports and rollout records), for the engine to wake up on. A routine
// report that only says the node is still there changes neither.
func (r *Registry) Changes(ctx context.Context) (nodes, rollouts <-chan struct{}) {
	return r.st.Changes(ctx, kNodes), r.st.Changes(ctx, kRollouts)
}

// EventChanges signals appends to the audit log.
func (r *Registry) EventChanges(ctx context.Context) <-chan struct{} {
	return r.st.Changes(ctx, kEvents)
}

// RolloutCounts counts rollouts by state (for the slipway_rollouts metric).
func (r *Registry) RolloutCounts(ctx context.Context) (map[string]int, error) {
	ros, err := r.listRollouts(ctx, false)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, ro := range ros {
		out[ro.State]++
	}
	return out, nil
}
