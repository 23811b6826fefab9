package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/waves"
	"github.com/slipway-dev/slipway/shared/api"
)

// The operators' actions on a rollout. Each runs in one transaction of its
// own, audited as rollout.<action>, and calls the Crash hook once it
// committed (before the server answers it).

// operate runs an operator's action on rollout id: fn changes the rollout
// as loaded in the action's transaction and names the audit event's action
// and detail; the rollout is saved with it, and the Crash hook runs with
// point once it committed. It returns the rollout as saved.
func (sm *Machine) operate(ctx context.Context, actor, id, point string, fn func(t *tx, ro *rolloutRec) (action, detail string, err error)) (api.Rollout, error) {
	k, err := rolloutKey(id)
	if err != nil {
		return api.Rollout{}, err
	}
	var out api.Rollout
	err = sm.update(ctx, func(t *tx) error {
		ro, err := sm.loadExisting(t, k, id)
		if err != nil {
			return err
		}
		action, detail, err := fn(t, &ro)
		if err != nil {
			return err
		}
		ro.UpdatedAt = sm.now()
		if err := saveRollout(t, k, &ro); err != nil {
			return err
		}
		out = ro.Rollout // as saved
		return t.Event(actor, "rollout."+action, id, detail)
	})
	if err == nil {
		sm.crash(point)
	}
	return out, err
}

// loadExisting reads rollout id (at key k) in t; a missing one is
// registry.ErrNotFound.
func (sm *Machine) loadExisting(t *tx, k, id string) (rolloutRec, error) {
	var ro rolloutRec
	if ok, err := sm.loadRollout(t, k, &ro); err != nil || !ok {
		return ro, errors.Join(err, fmt.Errorf("rollout %s: %w", id, registry.ErrNotFound))
	}
	return ro, nil
}

// RolloutAction runs pause, resume, promote or abort.
func (sm *Machine) RolloutAction(ctx context.Context, actor, id, action string) (api.Rollout, error) {
	return sm.operate(ctx, actor, id, action, func(t *tx, ro *rolloutRec) (string, string, error) {
		var err error
		switch action {
		case "pause":
			err = pause(ro, actor)
		case "resume":
			err = resume(ro)
		case "promote":
			err = promote(t, ro, actor)
		case "abort":
			err = sm.abort(t, ro, actor)
		default:
			err = fmt.Errorf("%w: unknown action %q", registry.ErrInvalid, action)
		}
		return action, ro.State, err
	})
}

// cannot refuses action on ro in its state.
func cannot(action string, ro *rolloutRec) error {
	return fmt.Errorf("%w: cannot %s rollout %s: it is %s", registry.ErrConflict, action, ro.ID, ro.State)
}

// pause stops a running, awaiting or waiting rollout where it stands; its
// published nodes are still observed.
func pause(ro *rolloutRec, actor string) error {
	if ro.State != api.RolloutRunning && ro.State != api.RolloutAwaiting && ro.State != api.RolloutWaiting {
		return cannot("pause", ro)
	}
	ro.State, ro.Reason = api.RolloutPaused, "paused by "+actor
	return nil
}

// resume runs a paused rollout again (its paused analysis gates measure
// again); one paused while it awaited promotion awaits it again. A rollout
// waiting for a window is resumed only with --now (RolloutResumeNow).
func resume(ro *rolloutRec) error {
	if ro.State == api.RolloutWaiting {
		return fmt.Errorf("%w: rollout %s is waiting-window: its next wave waits for a maintenance window; resume with now (`slipway rollout resume --now %s`) starts it outside the windows", registry.ErrConflict, ro.ID, ro.ID)
	}
	if ro.State != api.RolloutPaused {
		return cannot("resume", ro)
	}
	ro.State, ro.Reason = api.RolloutRunning, ""
	resumeAnalysis(ro)
	if ro.Waves[ro.Wave].State == api.WavePassed {
		// Paused while it awaited promotion: it awaits it again
		// (running, nothing would move it on).
		ro.State, ro.Reason = api.RolloutAwaiting, "canaries healthy; promote to continue"
	}
	return nil
}

// promote moves a rollout awaiting promotion on to its next wave, or runs
// a rollout held by its group's rollback pin (promoteHeld).
func promote(t *tx, ro *rolloutRec, actor string) error {
	switch ro.State {
	case api.RolloutAwaiting:
		ro.State, ro.Reason = api.RolloutRunning, ""
		ro.Wave++
		return nil
	case api.RolloutHeld:
		return promoteHeld(t, ro, actor)
	}
	return cannot("promote", ro)
}

// promoteHeld lifts the group's rollback pin and makes the held rollout ro
// the group's active one, once no other rollout is active for it.
func promoteHeld(t *tx, ro *rolloutRec, actor string) error {
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
	return nil
}

// abort ends a rollout that has not finished (abortNodes says what
// happens to its nodes), takes it out of its group's queue, and lets the
// group's next queued rollout start.
func (sm *Machine) abort(t *tx, ro *rolloutRec, actor string) error {
	if terminal(ro.State) {
		return cannot("abort", ro)
	}
	summary, err := sm.abortNodes(t, ro)
	if err != nil {
		return err
	}
	ro.State, ro.Reason = api.RolloutAborted, "aborted by "+actor
	if summary != "" {
		ro.Reason += ": " + summary
	}
	if err := sm.dequeue(t, ro); err != nil {
		return err
	}
	return sm.releaseGroup(t, ro)
}

// RolloutRetry retries failed nodes of a rollout (one, or all of the
// current wave), lifts the fleet-wide quarantine of its manifest, and
// resumes it if it had halted without reverting.
func (sm *Machine) RolloutRetry(ctx context.Context, actor, id, node string) (api.Rollout, error) {
	return sm.operate(ctx, actor, id, CrashRetry, func(t *tx, ro *rolloutRec) (string, string, error) {
		switch ro.State {
		case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting, api.RolloutWaiting, api.RolloutFailed:
		default:
			return "", "", fmt.Errorf("%w: cannot retry rollout %s: it is %s (deploy the release again instead)", registry.ErrConflict, id, ro.State)
		}
		retried, err := sm.retryNodes(t, ro, node, actor)
		if err != nil {
			return "", "", err
		}
		if len(retried) == 0 && node == "" && ro.State == api.RolloutFailed {
			retried = retryAnalysis(ro)
		}
		if len(retried) == 0 {
			if node != "" {
				return "", "", fmt.Errorf("%w: node %s has not failed in rollout %s", registry.ErrConflict, node, id)
			}
			return "", "", fmt.Errorf("%w: no failed node in wave %d of rollout %s", registry.ErrConflict, ro.Wave+1, id)
		}
		t.Del(kQuarantine + ro.Manifest)
		if ro.State == api.RolloutFailed {
			if err := resumeFailed(t, ro); err != nil {
				return "", "", err
			}
		}
		ro.Reason = "retried by " + actor + ": " + strings.Join(retried, ", ")
		return "retry", strings.Join(retried, ", "), nil
	})
}

// retryNodes sends ro's failed nodes (node, or every one of the current
// wave) their release again and returns their names.
func (sm *Machine) retryNodes(t *tx, ro *rolloutRec, node, actor string) ([]string, error) {
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
				return nil, err
			}
			n.State, n.Reason, n.PublishedAt = api.RolloutNodeSwitching, "retried by "+actor, sm.now()
			retried = append(retried, n.Name)
		}
	}
	return retried, nil
}

// resumeFailed makes the halted rollout ro its group's active one again
// and running, with its failed waves running, unless another rollout is
// active for the group now.
func resumeFailed(t *tx, ro *rolloutRec) error {
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
	return nil
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
