package registry

import "time"

// failedSince reports whether node name's failure report was stored at or
// after since (when the rollout published to it, or retried it): a node
// retried after a failure still carries that failure's report until its
// agent acts on the retry, and must not fail again for it. A record from
// before ReportAt existed counts as new (the behaviour before).
func (r *Registry) failedSince(t *txn, name string, since time.Time) bool {
	var n nodeRec
	if ok, err := t.get(kNodes+name, &n); err != nil || !ok {
		return true
	}
	return n.ReportAt.IsZero() || !n.ReportAt.Before(since)
}
