package registry

import (
	"github.com/slipway-dev/slipway/shared/api"
)

// What the registry knows of the generations a node ran. A generation
// counts as confirmed on a node only when this server confirmed it there
// (Confirm writes confirmed/<node>/<id>, and nodeRec keeps the last one).
// What the node reports of its own history (a generation listed as good)
// is its claim, not proof: a rollback never goes to a generation on that
// claim alone. Being published to a node (nodegens/) or being its desired
// generation proves nothing either: a broken release is both on every
// node it failed on.

// confirmedOn reports whether the server confirmed generation id on node n.
func confirmedOn(t *txn, n nodeRec, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	if n.Confirmed == id {
		return true, nil
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
			if g.Number != rep.LastGood || g.ID == "" {
				continue
			}
			if ok, err := confirmedOn(t, n, g.ID); err != nil || ok {
				return g.ID, err
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
