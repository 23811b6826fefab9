package rollout

import (
	"slices"

	"github.com/slipway-dev/slipway/shared/api"
)

// NotifyRule is what the machine needs of one [[notify]]: its name and
// which notifications it wants.
type NotifyRule struct {
	Name string
	// Kinds are the notification kinds it wants (api.NotifyKinds); empty:
	// all.
	Kinds []string
	// Groups are the target groups (canonical selectors) it wants; empty:
	// all.
	Groups []string
}

func (n NotifyRule) wants(kind, group string) bool {
	return (len(n.Kinds) == 0 || slices.Contains(n.Kinds, kind)) && (len(n.Groups) == 0 || slices.Contains(n.Groups, group))
}

// notify owes every matching rule a notification of kind about ro, in
// the registry's outbox (registry.Tx.Notify): written in the transition's
// transaction, so a transition committed is a notification owed.
func (sm *Machine) notify(t *tx, ro *rolloutRec, kind, node, detail string) error {
	for _, rule := range sm.cfg.Notify {
		if !rule.wants(kind, ro.Group) {
			continue
		}
		now := sm.now()
		err := t.Notify(api.Notification{Notifier: rule.Name, Kind: kind, Time: now, Rollout: ro.ID, Release: ro.Release,
			Group: ro.Group, State: ro.State, Node: node, Detail: detail, Delivery: api.DeliveryPending, NextAttempt: now})
		if err != nil {
			return err
		}
	}
	return nil
}

// nodeFailed records that node n of ro failed: the audit event, and the
// notification.
func (sm *Machine) nodeFailed(t *tx, ro *rolloutRec, actor string, n *api.RolloutNode) error {
	if err := t.Event(actor, "rollout.node.failed", ro.ID, n.Name+": "+n.Reason); err != nil {
		return err
	}
	return sm.notify(t, ro, api.NotifyNodeFailed, n.Name, n.Reason)
}
