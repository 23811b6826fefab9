package registry

import (
	"github.com/slipway-dev/slipway/shared/api"
)

// What the registry knows of the generations a node ran. Two sources, one
// rule: a generation counts as confirmed on a node when the server
// confirmed it there (Confirm writes confirmed/<node>/<id>, and nodeRec
// keeps the last one) or the node's own last report lists it as good
// (switched to, healthy, confirmed: how generations confirmed before the
// server kept confirmed/ are known). Being published to a node
// (nodegens/) or being its desired generation proves nothing: a broken
// release is both on every node it failed on.

// confirmedOn reports whether node n ran generation id and confirmed it.
func confirmedOn(t *txn, n nodeRec, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	if n.Confirmed == id {
		return true, nil
	}
	if n.Report != nil {
		for _, g := range n.Report.Generations {
			if g.ID == id && g.Status == "good" {
				return true, nil
			}
		}
	}
	return t.get(kConfirmed+n.Name+"/"+id, nil)
}

// lastConfirmed is the generation node n goes back to when a rollout
// reverts or is rolled back: the newest one it ran and confirmed. That is
// its last good generation as it reports it; without one in its report,
// the generation it runs if it confirmed it and is not between two; else
// the last one the server confirmed; "" when it never confirmed any.
// Never the generation it is switching to, nor one it reverted.
func lastConfirmed(t *txn, n nodeRec) (string, error) {
	rep := n.Report
	if rep != nil && rep.LastGood > 0 {
		for _, g := range rep.Generations {
			if g.Number == rep.LastGood && g.ID != "" {
				return g.ID, nil
			}
		}
	}
	if rep != nil && rep.State != api.AgentSwitching && rep.CurrentID != "" {
		ok, err := confirmedOn(t, n, rep.CurrentID)
		if err != nil || ok {
			return rep.CurrentID, err
		}
	}
	return n.Confirmed, nil
}

// failedOn reports whether generation id failed on node n as its last
// report says: the agent reverted a switch to it (and runs another), or
// lists it as quarantined or failed.
func failedOn(n nodeRec, id string) bool {
	rep := n.Report
	if rep == nil || id == "" {
		return false
	}
	if rep.State == api.AgentFailed && (rep.Target == "" || rep.Target == id) && rep.CurrentID != id {
		return true
	}
	for _, g := range rep.Generations {
		if g.ID == id && (g.Status == "quarantined" || g.Status == "failed") {
			return true
		}
	}
	return false
}
