package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

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

// step advances one rollout (one step of this machine at a time: stepMu).
func (sm *Machine) step(ctx context.Context, id string) error {
	sm.stepMu.Lock()
	defer sm.stepMu.Unlock()
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
