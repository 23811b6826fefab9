package rollout

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/waves"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/selector"
	"github.com/slipway-dev/slipway/shared/window"
)

// Machine is the rollout state machine over a registry: it creates
// rollouts with their releases, steps them (Tick), and runs the operators'
// actions on them. Its records live in the registry's store under keys of
// its own (below and store.go); it writes them and the registry's data
// (desired generations, audit events, notifications) in one registry
// transaction (registry.Tx) per transition. Only one Machine may step a
// store's rollouts (Tick: one server; with etcd, the elected leader); the
// actions and reads are safe on every server.
type Machine struct {
	reg *registry.Registry
	st  store.Store
	cfg Config
	log zerolog.Logger
	// Crash, when set, runs after every committed rollout transition (tests).
	Crash   CrashHook
	watch   *nodeWatch
	ros     *rolloutIndex
	roCache *rolloutCache // active rollouts as last read or written
	windows windowCache
	// analysis runs the analysis gates' queries (analysis.go).
	analysis analyser
}

// Config tunes the machine.
type Config struct {
	// GroupWindows are the maintenance windows of target groups, by
	// canonical selector (window.go).
	GroupWindows map[string]window.Set
	// Notify are the [[notify]] rules: which rollout transitions owe a
	// webhook a notification (notify.go).
	Notify []NotifyRule
	// Prometheus answers the analysis gates' queries (analysis.go); nil:
	// a release with gates is refused.
	Prometheus *analysis.Prometheus
}

// New returns the machine over reg and installs its hook there
// (registry.OnNodesChanged): build one per registry, before using it.
func New(reg *registry.Registry, cfg Config, log zerolog.Logger) *Machine {
	sm := &Machine{reg: reg, st: reg.Store(), cfg: cfg, log: log.With().Str("component", "rollout").Logger(),
		watch: newNodeWatch(), ros: &rolloutIndex{}, roCache: &rolloutCache{m: map[string]cachedRollout{}}}
	reg.OnNodesChanged(sm.watch.mark, sm.watch.reset)
	return sm
}

func (sm *Machine) now() time.Time { return sm.reg.Now().UTC() }

// tx is one attempt of a registry transaction as the machine uses it:
// with the rollouts it read or wrote, as it would store them (store.go).
type tx struct {
	*registry.Tx
	rollouts map[string]txnRollout
}

// update runs fn in one registry transaction (registry.Update).
func (sm *Machine) update(ctx context.Context, fn func(*tx) error) error {
	_, err := sm.updateRev(ctx, fn)
	return err
}

// updateRev is update that also returns the revision it committed at.
func (sm *Machine) updateRev(ctx context.Context, fn func(*tx) error) (int64, error) {
	return sm.reg.UpdateRev(ctx, func(rt *registry.Tx) error { return fn(&tx{Tx: rt}) })
}

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
	// NodesAt says where the waves' nodes are kept (store.go);
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
		return "", fmt.Errorf("rollout %q: %w", id, registry.ErrNotFound)
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

// CreateRelease validates a release request (the registry checks its
// manifest, blobs and targets: registry.PrepareRelease), refuses a
// manifest quarantined fleet-wide, and creates the release and its rollout
// over the nodes the target selects in one transaction; a rollout that may
// run takes its first step at once (publishing its first wave).
func (sm *Machine) CreateRelease(ctx context.Context, actor string, req api.CreateReleaseRequest) (api.Release, error) {
	if !generation.ValidName(req.Name) {
		return api.Release{}, fmt.Errorf("%w: release name %q", registry.ErrInvalid, req.Name)
	}
	sel, err := selector.Parse(req.Target)
	if err != nil {
		return api.Release{}, fmt.Errorf("%w: %v", registry.ErrInvalid, err)
	}
	var strat api.Strategy
	if req.Strategy != nil {
		strat = *req.Strategy
	}
	strat, durations, err := waves.ParseStrategy(strat)
	if err != nil {
		return api.Release{}, fmt.Errorf("%w: %v", registry.ErrInvalid, err)
	}
	if len(strat.AnalysisGates) > 0 && sm.cfg.Prometheus == nil {
		return api.Release{}, fmt.Errorf("%w: the release has %d [[analysis]] gate(s), but this server has no Prometheus to ask: set [prometheus] url in server.toml", registry.ErrInvalid, len(strat.AnalysisGates))
	}
	p, err := sm.reg.PrepareRelease(ctx, req, sel)
	if err != nil {
		return api.Release{}, err
	}
	var rel api.Release
	var ro *rolloutRec
	err = sm.update(ctx, func(t *tx) error {
		var q quarantineRec
		if ok, err := t.Get(kQuarantine+p.ID, &q); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: manifest %s is quarantined fleet-wide since rollout %s failed (%s); retry it on purpose with `slipway rollout retry %s`", registry.ErrConflict, p.ID, q.Rollout, q.Reason, q.Rollout)
		}
		seq, err := t.NextRelease()
		if err != nil {
			return err
		}
		rel = api.Release{ID: fmt.Sprintf("r%d-%s", seq, req.Name), Name: req.Name, Target: sel.String(), Manifest: p.ID, Nodes: p.Targets, CreatedAt: sm.now(), CreatedBy: actor}
		t.PutManifest(p.ID, p.Canonical)
		if err := t.Event(actor, "release.create", rel.ID, fmt.Sprintf("manifest %s to %d node(s): %s", p.ID, len(p.Targets), strings.Join(p.Targets, ", "))); err != nil {
			return err
		}
		ro, err = sm.newRollout(t, rel, p.Manifest, strat, durations, req.Queue, actor, false)
		if err != nil {
			return err
		}
		rel.Rollout = ro.ID
		return t.PutRelease(seq, rel)
	})
	if err != nil {
		return api.Release{}, err
	}
	sm.log.Info().Str("release", rel.ID).Str("rollout", ro.ID).Str("state", ro.State).Str("manifest", p.ID).Strs("nodes", p.Targets).Str("actor", actor).Msg("release created")
	// The release and its rollout are committed: whatever the first step
	// does, the answer is that they were created. A step that fails here
	// (contention, a busy store) is put back for the rollout engine, whose
	// next tick takes it again; failing the request would tell the caller
	// a committed release was not made (and a retry gets 409).
	if ro.State == api.RolloutRunning {
		if err := sm.step(ctx, ro.ID); err != nil {
			sm.log.Warn().Err(err).Str("release", rel.ID).Str("rollout", ro.ID).Msg("first rollout step failed; the rollout engine takes it on its next tick")
		}
	}
	return rel, nil
}

// newRollout plans a rollout inside t and returns it; the caller stores it.
func (sm *Machine) newRollout(t *tx, release api.Release, m *generation.Manifest, s api.Strategy, d waves.Durations, queue bool, actor string, rollback bool) (*rolloutRec, error) {
	seq, err := t.Next(kCntRollout)
	if err != nil {
		return nil, err
	}
	now := sm.now()
	ro := &rolloutRec{Rollout: api.Rollout{
		ID: fmt.Sprintf("ro%d", seq), Release: release.ID, Group: release.Target, Manifest: release.Manifest,
		Strategy: s, State: api.RolloutRunning, Waves: waves.Plan(s, release.Nodes), CreatedAt: now, UpdatedAt: now, CreatedBy: actor, Rollback: rollback,
	}, Stagger: d.Stagger, Analysis: d.Analysis, Deadline: d.NodeDeadline}
	if ro.Deadline == 0 {
		ro.Deadline = m.Health.HealthyDeadline.Or(generation.DefaultHealthyDeadline) + m.ConfirmTimeout.Or(generation.DefaultConfirmTimeout) + 30*time.Second
	}
	var g groupRec
	if _, err := t.Get(groupKey(ro.Group), &g); err != nil {
		return nil, err
	}
	active := ""
	if g.Active != "" {
		var cur rolloutRec
		if k, err := rolloutKey(g.Active); err == nil {
			if ok, err := t.Get(k, &cur); err != nil {
				return nil, err
			} else if ok && !terminal(cur.State) {
				active = g.Active
			}
		}
	}
	switch {
	case rollback:
		if active != "" {
			if err := sm.stopRollout(t, active, api.RolloutAborted, "superseded by rollback "+ro.ID); err != nil {
				return nil, err
			}
		}
		g.Active, g.Pin = ro.ID, ro.ID
	case active != "" && !queue:
		return nil, fmt.Errorf("%w: rollout %s is %s for target group %q; wait for it, abort it, or deploy with --queue", registry.ErrConflict, active, "active", ro.Group)
	case active != "" || len(g.Queue) > 0:
		ro.State, ro.Reason = api.RolloutQueued, "waits for rollout "+active
		g.Queue = append(g.Queue, ro.ID)
	case g.Pin != "":
		ro.State, ro.Reason = api.RolloutHeld, "the group is pinned by rollback "+g.Pin+"; promote this rollout to run it"
	default:
		g.Active = ro.ID
	}
	if err := t.Put(groupKey(ro.Group), g); err != nil {
		return nil, err
	}
	if err := saveRollout(t, fmt.Sprintf("%s%012d", kRollouts, seq), ro); err != nil {
		return nil, err
	}
	return ro, t.Event(actor, "rollout.create", ro.ID, fmt.Sprintf("%s of %s to %d node(s) in %d wave(s), %s", ro.Strategy.Kind, release.ID, len(release.Nodes), len(ro.Waves), ro.State))
}

// stopRollout ends a rollout (aborted, failed, reverted, succeeded) and
// starts the next queued rollout of its group.
func (sm *Machine) stopRollout(t *tx, id, state, reason string) error {
	k, err := rolloutKey(id)
	if err != nil {
		return err
	}
	var ro rolloutRec
	if ok, err := sm.loadRollout(t, k, &ro); err != nil || !ok {
		return errors.Join(err, fmt.Errorf("rollout %s: %w", id, registry.ErrNotFound))
	}
	if state == api.RolloutAborted {
		summary, err := sm.abortNodes(t, &ro)
		if err != nil {
			return err
		}
		if summary != "" {
			reason += ": " + summary
		}
	}
	ro.State, ro.Reason, ro.UpdatedAt = state, reason, sm.now()
	if err := saveRollout(t, k, &ro); err != nil {
		return err
	}
	return sm.releaseGroup(t, &ro)
}

// releaseGroup clears ro as the group's active rollout and starts the next
// queued one (held instead if the group is pinned).
func (sm *Machine) releaseGroup(t *tx, ro *rolloutRec) error {
	var g groupRec
	if _, err := t.Get(groupKey(ro.Group), &g); err != nil {
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
		if ok, err := sm.loadRollout(t, k, &nr); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("queued rollout %s: %w", next, registry.ErrNotFound))
		}
		if g.Pin != "" {
			nr.State, nr.Reason = api.RolloutHeld, "the group is pinned by rollback "+g.Pin+"; promote this rollout to run it"
		} else {
			nr.State, nr.Reason = api.RolloutRunning, ""
			g.Active = nr.ID
		}
		nr.UpdatedAt = sm.now()
		if err := saveRollout(t, k, &nr); err != nil {
			return err
		}
		if err := t.Event("server", "rollout."+nr.State, nr.ID, "was queued behind "+ro.ID); err != nil {
			return err
		}
	}
	return t.Put(groupKey(ro.Group), g)
}

// Rollouts lists rollouts, newest first.
func (sm *Machine) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	ros, err := sm.listRollouts(ctx, true)
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
func (sm *Machine) Rollout(ctx context.Context, id string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	ro, ok, err := sm.readRollout(ctx, k)
	if err != nil {
		return api.Rollout{}, err
	}
	if !ok {
		return api.Rollout{}, fmt.Errorf("rollout %q: %w", id, registry.ErrNotFound)
	}
	return ro.Rollout, nil
}

// Tick advances every active rollout by one step each. It is idempotent:
// every step reads the current state and persists its transition together
// with its effects in one transaction, so a server killed at any point
// resumes where it stood: no node is switched twice, none is skipped. A
// tick costs what changed: it lists only the active rollouts
// (store.go) and looks again only at their nodes that changed.
func (sm *Machine) Tick(ctx context.Context) error {
	ids, err := sm.activeRollouts(ctx)
	if err != nil {
		return err
	}
	sm.watch.retain(ids)
	sm.analysis.retain(ids)
	keys := make(map[string]bool, len(ids))
	for _, id := range ids {
		if k, err := rolloutKey(id); err == nil {
			keys[k] = true
		}
	}
	sm.roCache.retain(keys)
	var errs []error
	for _, id := range ids {
		if err := sm.step(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (sm *Machine) crash(point string) {
	if sm.Crash != nil {
		sm.Crash(point)
	}
}

// step advances one rollout.
func (sm *Machine) step(ctx context.Context, id string) error {
	k, err := rolloutKey(id)
	if err != nil {
		return err
	}
	var point string
	var saved *rolloutRec
	changed, full := sm.watch.take(id)
	results := sm.analysis.take(id)
	var due []dueQuery
	rev, err := sm.updateRev(ctx, func(t *tx) error {
		point, saved, due = "", nil, nil
		var ro rolloutRec
		if ok, err := sm.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, registry.ErrNotFound))
		}
		before := t.rollouts[k].ro // as loaded; advance changes ro only
		p, err := sm.advance(t, &ro, observed{full: full, changed: changed, measured: results, due: &due})
		if err != nil {
			return err
		}
		if sameRollout(before, &ro) {
			return nil
		}
		point, saved = p, &ro
		ro.UpdatedAt = sm.now()
		return saveRollout(t, k, &ro)
	})
	if err != nil {
		sm.watch.putBack(id, changed, full)
	}
	sm.analysis.settle(id, results, err == nil)
	if err == nil {
		sm.analysis.start(ctx, sm.cfg.Prometheus, due)
	}
	if err == nil && saved != nil && rev != 0 {
		sm.roCache.keep(k, rev, saved, nodesKeys)
	}
	if err == nil && point != "" {
		sm.crash(point)
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
func (sm *Machine) wavePassed(t *tx, ro *rolloutRec) (string, error) {
	w := &ro.Waves[ro.Wave]
	last := ro.Wave == len(ro.Waves)-1
	if w.Name == "canary" && !last {
		w.State = api.WavePassed
		ro.State, ro.Reason = api.RolloutAwaiting, "canaries healthy; promote to continue"
		if err := sm.notify(t, ro, api.NotifyWavePassed, "", w.Name+": canaries healthy; awaiting promotion"); err != nil {
			return "", err
		}
		return "awaiting-promotion", t.Event("server", "rollout.awaiting-promotion", ro.ID, "canaries healthy")
	}
	w.State = api.WavePassed
	if err := t.Event("server", "rollout.wave.passed", ro.ID, w.Name); err != nil {
		return "", err
	}
	if err := sm.notify(t, ro, api.NotifyWavePassed, "", w.Name); err != nil {
		return "", err
	}
	if last {
		return sm.finish(t, ro)
	}
	ro.Wave++
	return "wave-passed", nil
}

func (sm *Machine) finish(t *tx, ro *rolloutRec) (string, error) {
	ro.State, ro.Reason = api.RolloutSucceeded, ""
	if ro.Failures > 0 {
		ro.Reason = fmt.Sprintf("%d node(s) failed within max_failures %d", ro.Failures, ro.Strategy.MaxFailures)
	}
	if err := sm.releaseGroup(t, ro); err != nil {
		return "", err
	}
	if err := sm.notify(t, ro, api.NotifySucceeded, "", ro.Reason); err != nil {
		return "", err
	}
	return "succeeded", t.Event("server", "rollout.succeeded", ro.ID, ro.Release)
}

// halt stops a rollout that failed; with auto_revert every node it switched
// goes back to its previous generation at once: only one it ran and
// confirmed (Previous, recorded when its wave came; publish). The manifest is
// quarantined fleet-wide.
func (sm *Machine) halt(t *tx, ro *rolloutRec, reason string) (string, error) {
	ro.State, ro.Reason = api.RolloutFailed, reason
	for wi := range ro.Waves {
		wv := &ro.Waves[wi]
		if wv.State == api.WaveRunning || wv.State == api.WaveAnalysing {
			wv.State, wv.FinishedAt = api.WaveFailed, sm.now()
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
				pm, err := t.Manifest(n.Previous)
				if errors.Is(err, store.ErrNotFound) {
					stuck = append(stuck, n.Name) // it ran something this server never published
					continue
				}
				if err != nil {
					return "", fmt.Errorf("previous manifest of %s: %w", n.Name, err)
				}
				if err := t.SetDesired(n.Name, n.Previous, "revert of "+ro.ID, pm); err != nil {
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
	if err := t.Put(kQuarantine+ro.Manifest, quarantineRec{Rollout: ro.ID, Reason: reason, At: sm.now()}); err != nil {
		return "", err
	}
	if err := sm.releaseGroup(t, ro); err != nil {
		return "", err
	}
	kind := api.NotifyHalted
	if ro.State == api.RolloutReverted {
		kind = api.NotifyReverted
	}
	if err := sm.notify(t, ro, kind, "", ro.Reason); err != nil {
		return "", err
	}
	return "halted", t.Event("server", "rollout."+ro.State, ro.ID, ro.Reason)
}

// RolloutAction runs pause, resume, promote or abort.
func (sm *Machine) RolloutAction(ctx context.Context, actor, id, action string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	var out api.Rollout
	err = sm.update(ctx, func(t *tx) error {
		var ro rolloutRec
		if ok, err := sm.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, registry.ErrNotFound))
		}
		bad := func() error {
			return fmt.Errorf("%w: cannot %s rollout %s: it is %s", registry.ErrConflict, action, id, ro.State)
		}
		switch action {
		case "pause":
			if ro.State != api.RolloutRunning && ro.State != api.RolloutAwaiting && ro.State != api.RolloutWaiting {
				return bad()
			}
			ro.State, ro.Reason = api.RolloutPaused, "paused by "+actor
		case "resume":
			if ro.State == api.RolloutWaiting {
				return fmt.Errorf("%w: rollout %s is waiting-window: its next wave waits for a maintenance window; resume with now (`slipway rollout resume --now %s`) starts it outside the windows", registry.ErrConflict, id, id)
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
				if _, err := t.Get(groupKey(ro.Group), &g); err != nil {
					return err
				}
				if g.Active != "" && g.Active != ro.ID {
					var cur rolloutRec
					if ck, err := rolloutKey(g.Active); err == nil {
						if ok, _ := t.Get(ck, &cur); ok && !terminal(cur.State) {
							return fmt.Errorf("%w: rollout %s is still active for the group", registry.ErrConflict, g.Active)
						}
					}
				}
				g.Pin, g.Active = "", ro.ID
				if err := t.Put(groupKey(ro.Group), g); err != nil {
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
			summary, err := sm.abortNodes(t, &ro)
			if err != nil {
				return err
			}
			ro.State, ro.Reason = api.RolloutAborted, "aborted by "+actor
			if summary != "" {
				ro.Reason += ": " + summary
			}
			if err := sm.dequeue(t, &ro); err != nil {
				return err
			}
			if err := sm.releaseGroup(t, &ro); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown action %q", registry.ErrInvalid, action)
		}
		ro.UpdatedAt = sm.now()
		if err := saveRollout(t, k, &ro); err != nil {
			return err
		}
		out = ro.Rollout // as saved
		return t.Event(actor, "rollout."+action, id, ro.State)
	})
	if err == nil {
		sm.crash(action)
	}
	return out, err
}

// dequeue removes a queued rollout from its group's queue.
func (sm *Machine) dequeue(t *tx, ro *rolloutRec) error {
	var g groupRec
	if _, err := t.Get(groupKey(ro.Group), &g); err != nil {
		return err
	}
	q := g.Queue[:0]
	for _, id := range g.Queue {
		if id != ro.ID {
			q = append(q, id)
		}
	}
	g.Queue = q
	return t.Put(groupKey(ro.Group), g)
}

// RolloutRetry retries failed nodes of a rollout (one, or all of the
// current wave), lifts the fleet-wide quarantine of its manifest, and
// resumes it if it had halted without reverting.
func (sm *Machine) RolloutRetry(ctx context.Context, actor, id, node string) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	var out api.Rollout
	err = sm.update(ctx, func(t *tx) error {
		var ro rolloutRec
		if ok, err := sm.loadRollout(t, k, &ro); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: %w", id, registry.ErrNotFound))
		}
		switch ro.State {
		case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting, api.RolloutWaiting, api.RolloutFailed:
		default:
			return fmt.Errorf("%w: cannot retry rollout %s: it is %s (deploy the release again instead)", registry.ErrConflict, id, ro.State)
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
				if err := t.RetryDesired(n.Name, ro.Manifest); err != nil {
					return err
				}
				n.State, n.Reason, n.PublishedAt = api.RolloutNodeSwitching, "retried by "+actor, sm.now()
				retried = append(retried, n.Name)
			}
		}
		if len(retried) == 0 && node == "" && ro.State == api.RolloutFailed {
			retried = retryAnalysis(&ro)
		}
		if len(retried) == 0 {
			if node != "" {
				return fmt.Errorf("%w: node %s has not failed in rollout %s", registry.ErrConflict, node, id)
			}
			return fmt.Errorf("%w: no failed node in wave %d of rollout %s", registry.ErrConflict, ro.Wave+1, id)
		}
		t.Del(kQuarantine + ro.Manifest)
		if ro.State == api.RolloutFailed {
			var g groupRec
			if _, err := t.Get(groupKey(ro.Group), &g); err != nil {
				return err
			}
			if g.Active != "" && g.Active != ro.ID {
				return fmt.Errorf("%w: rollout %s is now active for the group", registry.ErrConflict, g.Active)
			}
			g.Active = ro.ID
			if err := t.Put(groupKey(ro.Group), g); err != nil {
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
		ro.UpdatedAt = sm.now()
		out = ro.Rollout
		if err := saveRollout(t, k, &ro); err != nil {
			return err
		}
		return t.Event(actor, "rollout.retry", id, strings.Join(retried, ", "))
	})
	if err == nil {
		sm.crash(CrashRetry)
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
// with registry.ErrConflict naming those nodes, and nothing changes.
func (sm *Machine) RolloutRollback(ctx context.Context, actor, id string) (api.Rollout, error) {
	orig, err := sm.Rollout(ctx, id)
	if err != nil {
		return api.Rollout{}, err
	}
	var ro *rolloutRec
	err = sm.update(ctx, func(t *tx) error {
		prev, nodes, err := rollbackTargets(t, orig)
		if err != nil {
			return err
		}
		m, err := t.Manifest(prev)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", prev, err)
		}
		seq, err := t.NextRelease()
		if err != nil {
			return err
		}
		rel := api.Release{ID: fmt.Sprintf("r%d-rollback", seq), Name: "rollback", Target: orig.Group, Manifest: prev, Nodes: nodes, CreatedAt: sm.now(), CreatedBy: actor}
		s, d, _ := waves.ParseStrategy(api.Strategy{Kind: api.StrategyAllAtOnce, OnNodeDown: api.NodeDownWait})
		ro, err = sm.newRollout(t, rel, m, s, d, false, actor, true)
		if err != nil {
			return err
		}
		rel.Rollout = ro.ID
		if err := t.PutRelease(seq, rel); err != nil {
			return err
		}
		return t.Event(actor, "rollout.rollback", id, fmt.Sprintf("group %q back to %s by %s (pinned)", orig.Group, prev, ro.ID))
	})
	if err != nil {
		return api.Rollout{}, err
	}
	sm.crash(CrashRollback)
	if err := sm.step(ctx, ro.ID); err != nil {
		return api.Rollout{}, err
	}
	return sm.Rollout(ctx, ro.ID)
}

// rollbackTargets checks that every node orig published to ran and
// confirmed its previous generation, and that they share it; it returns
// that generation and the nodes.
func rollbackTargets(t *tx, orig api.Rollout) (string, []string, error) {
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
			registry.ErrConflict, orig.ID, len(refused), strings.Join(refused, "; "))
	}
	switch len(byPrev) {
	case 0:
		return "", nil, fmt.Errorf("%w: rollout %s published to no node yet; abort it instead", registry.ErrConflict, orig.ID)
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
	return "", nil, fmt.Errorf("%w: the nodes of rollout %s ran different generations before it (%s); roll them back one by one with `slipway rollback NODE`", registry.ErrConflict, orig.ID, strings.Join(groups, "; "))
}

// noRollbackTo says why node n of orig cannot go back to n.Previous ("" =
// it can).
func noRollbackTo(t *tx, orig api.Rollout, n api.RolloutNode) (string, error) {
	if n.Previous == "" {
		return "it had confirmed no generation when the rollout reached it", nil
	}
	if n.Previous == orig.Manifest {
		return "its previous generation is the rollout's own release", nil
	}
	if enrolled, ok, err := t.Confirmed(n.Name, n.Previous); err != nil {
		return "", err
	} else if !enrolled {
		return "no longer enrolled", nil
	} else if !ok {
		return "it never confirmed " + n.Previous, nil
	}
	if ok, err := t.HasManifest(n.Previous); err != nil {
		return "", err
	} else if !ok {
		return n.Previous + " was not published by this server; roll back on the node with `slipway-agent rollback`", nil
	}
	return "", nil
}

// Changes returns channels that signal changes relevant to rollouts (node
// reports and rollout records), for the engine to wake up on. A routine
// report that only says the node is still there changes neither.
func (sm *Machine) Changes(ctx context.Context) (nodes, rollouts <-chan struct{}) {
	return sm.reg.NodeChanges(ctx), sm.st.Changes(ctx, kRollouts)
}

// RolloutCounts counts rollouts by state (for the slipway_rollouts metric).
func (sm *Machine) RolloutCounts(ctx context.Context) (map[string]int, error) {
	ros, err := sm.listRollouts(ctx, false)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, ro := range ros {
		out[ro.State]++
	}
	return out, nil
}
