package registry

import (
	"errors"
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// publishDesired makes ro's manifest node's desired generation, keeping
// the desired record it replaces (Before) for an abort to put back. A
// record ro published already keeps its Before.
func (r *Registry) publishDesired(t *txn, node string, ro *rolloutRec, m *generation.Manifest) error {
	var old desiredRec
	had, err := t.get(kDesired+node, &old)
	if err != nil {
		return err
	}
	if err := r.setDesired(t, node, ro.Manifest, ro.Release, m); err != nil {
		return err
	}
	d := desiredRec{ID: ro.Manifest, Release: ro.Release, At: r.cfg.Now().UTC(), Rollout: ro.ID}
	switch {
	case had && old.Rollout == ro.ID:
		d.Before = old.Before
	case had:
		old.Before = nil
		d.Before = &old
	}
	return t.put(kDesired+node, d)
}

// abortNodes applies an abort to ro's waves and nodes. An abort leaves no
// node on the release unless it confirmed it: waves not finished become
// aborted; nodes confirmed healthy on the release keep it; every other
// node ends aborted (failed ones stay failed) with its desired generation
// set back to what it was before ro published to it (none: cleared). A
// node in the middle of its switch is not interrupted: it finishes or
// reverts that switch, reports what it runs, then follows its desired
// generation back. It returns a summary for the rollout's reason.
func (r *Registry) abortNodes(t *txn, ro *rolloutRec) (string, error) {
	now := r.cfg.Now().UTC()
	var kept, back, unpublished []string
	for wi := range ro.Waves {
		w := &ro.Waves[wi]
		switch w.State {
		case api.WavePending, api.WaveRunning, api.WaveAnalysing:
			w.State = api.WaveAborted
			if !w.StartedAt.IsZero() && w.FinishedAt.IsZero() {
				w.FinishedAt = now
			}
		}
		for ni := range w.Nodes {
			n := &w.Nodes[ni]
			switch n.State {
			case api.RolloutNodePending, api.RolloutNodeDown:
				n.State, n.Reason = api.RolloutNodeAborted, "not published: the rollout was aborted first"
				unpublished = append(unpublished, n.Name)
			case api.RolloutNodeSwitching, api.RolloutNodeFailed:
				done, err := r.abortNode(t, ro, n)
				if err != nil {
					return "", err
				}
				if done {
					kept = append(kept, n.Name)
				} else {
					back = append(back, n.Name)
				}
			case api.RolloutNodeHealthy:
				kept = append(kept, n.Name)
			}
		}
	}
	var parts []string
	if len(kept) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) confirmed healthy on the release keep it: %s", len(kept), strings.Join(kept, ", ")))
	}
	if len(back) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) go back to their previous desired generation: %s", len(back), strings.Join(back, ", ")))
	}
	if len(unpublished) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) were never sent the release", len(unpublished)))
	}
	return strings.Join(parts, "; "), nil
}

// abortNode handles one published node of an aborted rollout. A node the
// rollout has not yet seen confirm the release but that did (it runs it,
// confirmed it and committed it: committedOn) is healthy and keeps it
// (true). Any other gets its
// desired generation set back and its state says what happens next.
func (r *Registry) abortNode(t *txn, ro *rolloutRec, n *api.RolloutNode) (bool, error) {
	view, rep, err := r.nodeState(t, n.Name)
	if err != nil {
		return false, err
	}
	if n.State == api.RolloutNodeSwitching && committedOn(view, rep, ro.Manifest) {
		n.State, n.Reason = api.RolloutNodeHealthy, ""
		return true, nil
	}
	back, err := r.restoreDesired(t, ro, n)
	if err != nil {
		return false, err
	}
	if n.State == api.RolloutNodeFailed {
		n.Reason += "; " + back
		return false, nil
	}
	reason := "aborted before it confirmed the release; " + back
	if rep != nil && rep.State == api.AgentSwitching && rep.Target == ro.Manifest {
		reason += "; it was switching to the release: it finishes (or reverts) that switch first, and reports what it runs"
	}
	n.State, n.Reason = api.RolloutNodeAborted, reason
	return false, nil
}

// restoreDesired puts back the desired generation node n had before ro
// published to it, and says what it did. A desired generation ro no
// longer owns (an operator or another rollout changed it since) is left
// alone.
func (r *Registry) restoreDesired(t *txn, ro *rolloutRec, n *api.RolloutNode) (string, error) {
	var d desiredRec
	ok, err := t.get(kDesired+n.Name, &d)
	if err != nil {
		return "", err
	}
	if !ok || d.ID != ro.Manifest || (d.Rollout != "" && d.Rollout != ro.ID) {
		return "its desired generation was changed since; left alone", nil
	}
	now := r.cfg.Now().UTC()
	switch {
	case d.Before != nil:
		b := *d.Before
		b.At = now
		if err := t.put(kDesired+n.Name, b); err != nil {
			return "", err
		}
		return "desired set back to " + b.ID, nil
	case d.Rollout == ro.ID:
		t.del(kDesired + n.Name)
		return "desired cleared (it had none before the rollout)", nil
	}
	// Published before desired records named their rollout: go back to
	// the generation it confirmed before, if this server has it.
	if n.Previous == "" || n.Previous == ro.Manifest {
		return "no earlier desired generation known; left on the release", nil
	}
	e, err := t.st.Get(t.ctx, kManifests+n.Previous)
	if errors.Is(err, store.ErrNotFound) {
		return "its previous generation " + n.Previous + " was not published by this server; left on the release", nil
	}
	if err != nil {
		return "", fmt.Errorf("previous manifest of %s: %w", n.Name, err)
	}
	m, err := generation.Parse(e.Value)
	if err != nil {
		return "", err
	}
	if err := r.setDesired(t, n.Name, n.Previous, "abort of "+ro.ID, m); err != nil {
		return "", err
	}
	return "desired set back to " + n.Previous, nil
}
