package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// The notification outbox. A rollout transition that a [[notify]] rule
// wants to hear of writes one entry per matching rule under
// outbox/pending/ (Tx.Notify; the rules are server/rollout's), in the
// same transaction as the transition: a
// transition committed is a notification owed, and none is written for
// a transition that did not commit. The delivery worker (server/notify)
// reads pending entries, sends them and records the outcome: a retry
// later (attempts, next attempt, last error), or done, which moves the
// entry to outbox/done/ under the same number. Done entries beyond
// maxDoneNotifications are pruned, oldest first.
const (
	kOutboxPending = "outbox/pending/" // + store.SeqKey -> api.Notification
	kOutboxDone    = "outbox/done/"    // + the same number, once delivered or given up
)

// maxDoneNotifications bounds the delivered and failed notifications kept
// for the API.
const maxDoneNotifications = 1000

// Notification IDs are "n" and the outbox number.
func notificationID(seq int64) string { return fmt.Sprintf("n%d", seq) }

func parseNotificationID(id string) (int64, error) {
	s, ok := strings.CutPrefix(id, "n")
	n, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil || n <= 0 || s[0] == '+' {
		return 0, fmt.Errorf("notification %q: %w", id, ErrNotFound)
	}
	return n, nil
}

func decodeNotification(e store.Entry, prefix string) (api.Notification, error) {
	var n api.Notification
	seq, ok := store.ParseSeq(strings.TrimPrefix(e.Key, prefix))
	if !ok {
		return n, fmt.Errorf("outbox: corrupt key %q", e.Key)
	}
	if err := json.Unmarshal(e.Value, &n); err != nil {
		return n, fmt.Errorf("decode %s: %w", e.Key, err)
	}
	n.ID = notificationID(seq)
	return n, nil
}

// PendingNotifications returns up to limit notifications not yet
// delivered nor given up, oldest first (whether due or not).
func (r *Registry) PendingNotifications(ctx context.Context, limit int) ([]api.Notification, error) {
	es, err := r.st.ListPage(ctx, kOutboxPending, store.Page{Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]api.Notification, 0, len(es))
	for _, e := range es {
		n, err := decodeNotification(e, kOutboxPending)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Notifications returns the newest notifications, pending ones and the
// delivered and failed ones kept, newest first, at most limit.
func (r *Registry) Notifications(ctx context.Context, limit int) ([]api.Notification, error) {
	var out []api.Notification
	for _, prefix := range []string{kOutboxPending, kOutboxDone} {
		es, err := r.st.List(ctx, prefix)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			n, err := decodeNotification(e, prefix)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b api.Notification) int {
		x, _ := parseNotificationID(a.ID)
		y, _ := parseNotificationID(b.ID)
		return int(y - x)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	if out == nil {
		out = []api.Notification{}
	}
	return out, nil
}

// RecordDelivery stores the outcome of an attempt to deliver pending
// notification n (as PendingNotifications returned it, with Delivery,
// Attempts, NextAttempt, LastError and DeliveredAt updated by the
// caller): still pending, it stays in the outbox; delivered or failed, it
// moves to the done entries. A notification no longer pending is left
// alone (ErrConflict).
func (r *Registry) RecordDelivery(ctx context.Context, n api.Notification) error {
	seq, err := parseNotificationID(n.ID)
	if err != nil {
		return err
	}
	pk := kOutboxPending + store.SeqKey(seq)
	id := n.ID
	n.ID = "" // the key holds it
	return r.update(ctx, func(t *txn) error {
		if ok, err := t.get(pk, nil); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: notification %s is no longer pending", ErrConflict, id)
		}
		if n.Delivery == api.DeliveryPending {
			return t.put(pk, n)
		}
		t.del(pk)
		return t.put(kOutboxDone+store.SeqKey(seq), n)
	})
}

// PruneNotifications removes the oldest done notifications beyond the
// newest maxDoneNotifications.
func (r *Registry) PruneNotifications(ctx context.Context) error {
	es, err := r.st.ListPage(ctx, kOutboxDone, store.Page{KeysOnly: true})
	if err != nil || len(es) <= maxDoneNotifications {
		return err
	}
	return r.update(ctx, func(t *txn) error {
		for _, e := range es[:len(es)-maxDoneNotifications] {
			t.delAt(e.Key, e.Rev)
		}
		return nil
	})
}

// NotificationChanges signals writes to the pending outbox.
func (r *Registry) NotificationChanges(ctx context.Context) <-chan struct{} {
	return r.st.Changes(ctx, kOutboxPending)
}
