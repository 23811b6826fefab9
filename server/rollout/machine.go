// Package rollout is the rollout state machine (Machine): a release's
// rollout in waves over its target nodes, gated by health, maintenance
// windows and analysis, with the operators' actions (pause, resume,
// promote, abort, retry, rollback). Each transition is written with its
// effects in one registry transaction (registry.Tx). The Engine steps the
// rollouts when nodes or rollouts change, and on a timer.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	// stepMu makes this machine's steps one at a time: the engine's Tick
	// and a request's own step (CreateRelease, RolloutRollback) of the
	// same rollout would otherwise compute the same transition side by
	// side (a first wave of 10,000 nodes), and one would conflict and
	// compute it again. Another server's steps (etcd) are still ordered
	// by the store's conditions.
	stepMu sync.Mutex
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

// update runs fn in one registry transaction (registry.UpdateRev).
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

// CreateRelease validates a release request (the registry checks its
// manifest, blobs and targets: registry.PrepareRelease), refuses a
// manifest quarantined fleet-wide, and creates the release and its rollout
// over the nodes the target selects in one transaction; a rollout that may
// run takes its first step at once (publishing its first wave).
func (sm *Machine) CreateRelease(ctx context.Context, actor string, req api.CreateReleaseRequest) (api.Release, error) {
	p, err := sm.planRelease(ctx, req)
	if err != nil {
		return api.Release{}, err
	}
	var rel api.Release
	var ro *rolloutRec
	err = sm.update(ctx, func(t *tx) error {
		rel, ro, err = sm.addRelease(t, p, actor)
		return err
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

// releasePlan is a release request checked: what CreateRelease creates.
type releasePlan struct {
	registry.Prepared
	name      string
	sel       selector.Selector
	strat     api.Strategy
	durations waves.Durations
	queue     bool
}

// planRelease checks a release request: its name, target and strategy
// here, its manifest, blobs and targets in the registry.
func (sm *Machine) planRelease(ctx context.Context, req api.CreateReleaseRequest) (releasePlan, error) {
	if !generation.ValidName(req.Name) {
		return releasePlan{}, fmt.Errorf("%w: release name %q", registry.ErrInvalid, req.Name)
	}
	sel, err := selector.Parse(req.Target)
	if err != nil {
		return releasePlan{}, fmt.Errorf("%w: %v", registry.ErrInvalid, err)
	}
	var strat api.Strategy
	if req.Strategy != nil {
		strat = *req.Strategy
	}
	strat, durations, err := waves.ParseStrategy(strat)
	if err != nil {
		return releasePlan{}, fmt.Errorf("%w: %v", registry.ErrInvalid, err)
	}
	if len(strat.AnalysisGates) > 0 && sm.cfg.Prometheus == nil {
		return releasePlan{}, fmt.Errorf("%w: the release has %d [[analysis]] gate(s), but this server has no Prometheus to ask: set [prometheus] url in server.toml", registry.ErrInvalid, len(strat.AnalysisGates))
	}
	p, err := sm.reg.PrepareRelease(ctx, req, sel)
	if err != nil {
		return releasePlan{}, err
	}
	return releasePlan{Prepared: p, name: req.Name, sel: sel, strat: strat, durations: durations, queue: req.Queue}, nil
}

// addRelease stores release p, its manifest and its rollout in t, unless
// its manifest is quarantined fleet-wide.
func (sm *Machine) addRelease(t *tx, p releasePlan, actor string) (api.Release, *rolloutRec, error) {
	var q quarantineRec
	if ok, err := t.Get(kQuarantine+p.ID, &q); err != nil {
		return api.Release{}, nil, err
	} else if ok {
		return api.Release{}, nil, fmt.Errorf("%w: manifest %s is quarantined fleet-wide since rollout %s failed (%s); retry it on purpose with `slipway rollout retry %s`", registry.ErrConflict, p.ID, q.Rollout, q.Reason, q.Rollout)
	}
	seq, err := t.NextRelease()
	if err != nil {
		return api.Release{}, nil, err
	}
	rel := api.Release{ID: fmt.Sprintf("r%d-%s", seq, p.name), Name: p.name, Target: p.sel.String(), Manifest: p.ID, Nodes: p.Targets, CreatedAt: sm.now(), CreatedBy: actor}
	t.PutManifest(p.ID, p.Canonical)
	if err := t.Event(actor, "release.create", rel.ID, fmt.Sprintf("manifest %s to %d node(s): %s", p.ID, len(p.Targets), strings.Join(p.Targets, ", "))); err != nil {
		return api.Release{}, nil, err
	}
	ro, err := sm.newRollout(t, rel, p.Manifest, p.strat, p.durations, p.queue, actor, false)
	if err != nil {
		return api.Release{}, nil, err
	}
	rel.Rollout = ro.ID
	return rel, ro, t.PutRelease(seq, rel)
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
	ro, err := sm.loadExisting(t, k, id)
	if err != nil {
		return err
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
