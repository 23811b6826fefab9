package rollout

import (
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/shared/api"
)

// abortNodes applies an abort to ro's waves and nodes. An abort leaves no
// node on the release unless it confirmed it: waves not finished become
// aborted; nodes confirmed healthy on the release keep it; every other
// node ends aborted (failed ones stay failed) with its desired generation
// set back to what it was before ro published to it (none: cleared). A
// node in the middle of its switch is not interrupted: it finishes or
// reverts that switch, reports what it runs, then follows its desired
// generation back. It returns a summary for the rollout's reason.
func (sm *Machine) abortNodes(t *tx, ro *rolloutRec) (string, error) {
	now := sm.now()
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
				done, err := sm.abortNode(t, ro, n)
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
func (sm *Machine) abortNode(t *tx, ro *rolloutRec, n *api.RolloutNode) (bool, error) {
	view, rep, err := t.NodeState(n.Name)
	if err != nil {
		return false, err
	}
	if n.State == api.RolloutNodeSwitching && committedOn(view, rep, ro.Manifest) {
		n.State, n.Reason = api.RolloutNodeHealthy, ""
		return true, nil
	}
	back, err := t.RestoreDesired(n.Name, ro.Manifest, ro.ID, n.Previous)
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
