package registry

import (
	"context"
	"encoding/json"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Tx is one attempt of a registry transaction (txn.go) as the rollout
// state machine (server/rollout) sees it: reads and writes of its own keys
// (Get, Put, …), and what it needs of the registry's data through methods
// that keep that data's layout here: nodes' state, desired generations,
// manifests, releases, the audit log and the notification outbox. A Tx is
// valid only inside the function given to UpdateRev.
type Tx struct {
	t *txn
	r *Registry
}

// UpdateRev runs fn in one optimistic transaction: every key read becomes
// a condition, and a conflict runs fn again with a fresh Tx (ErrBusy when
// it conflicts every time). Once it committed, the registry tells
// Config.OnDesired and the OnNodesChanged hook which nodes it changed. It
// returns the store revision the transaction committed at (0 when fn
// wrote nothing).
func (r *Registry) UpdateRev(ctx context.Context, fn func(*Tx) error) (int64, error) {
	return r.updateRev(ctx, func(t *txn) error { return fn(&Tx{t: t, r: r}) })
}

// Context is the context of the transaction's reads.
func (x *Tx) Context() context.Context { return x.t.ctx }

// Get reads key into v (if non-nil) and reports whether it exists; its
// revision becomes a condition of the commit.
func (x *Tx) Get(key string, v any) (bool, error) { return x.t.get(key, v) }

// GetEntry reads key's stored entry (not the transaction's own writes)
// and makes its revision a condition.
func (x *Tx) GetEntry(key string) (store.Entry, bool, error) { return x.t.getEntry(key) }

// Put writes v, encoded as JSON, at key.
func (x *Tx) Put(key string, v any) error { return x.t.put(key, v) }

// Del deletes key.
func (x *Tx) Del(key string) { x.t.del(key) }

// Next increments counter key and returns the new value.
func (x *Tx) Next(counter string) (int64, error) { return x.t.next(counter) }

// now is the registry's clock (Config.Now), in UTC.
func (x *Tx) now() time.Time { return x.r.cfg.Now().UTC() }

// Event appends an audit event.
func (x *Tx) Event(actor, action, target, detail string) error {
	return x.r.event(x.t, actor, action, target, detail)
}

// Notify owes a webhook notification n: it appends it to the outbox
// (outbox.go), its detail cut to the audit log's bound.
func (x *Tx) Notify(n api.Notification) error {
	n.Detail = truncate(n.Detail, maxDetail)
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	x.t.ops = append(x.t.ops, store.Op{Key: kOutboxPending, Value: b, Append: true})
	return nil
}

// NodeState is the server's view of node name and its last report, as a
// rollout needs it right now. It peeks: a node's record and desired
// generation change under a running rollout all the time (reports,
// confirms), and a step that made them conditions would retry for every
// agent that wrote meanwhile, rereading every node it looks at (at 10,000
// agents a step retried for tens of seconds). A write it misses marks the
// node (OnNodesChanged), so the next step sees it. A node not enrolled is
// offline.
func (x *Tx) NodeState(name string) (api.Node, *api.Report, error) {
	var n nodeRec
	ok, err := x.t.peek(kNodes+name, &n)
	if err != nil {
		return api.Node{}, nil, err
	}
	if !ok {
		return api.Node{Name: name, State: api.NodeOffline}, nil, nil
	}
	if err := x.r.seen.load(x.t.ctx, x.r.st); err != nil {
		return api.Node{}, nil, err
	}
	var d desiredRec
	hasD, err := x.t.peek(kDesired+name, &d)
	if err != nil {
		return api.Node{}, nil, err
	}
	return x.r.view(n, d, hasD), n.Report, nil
}

// Labels peeks at node name's labels (nil when it is not enrolled).
func (x *Tx) Labels(name string) (map[string]string, error) {
	var n nodeRec
	_, err := x.t.peek(kNodes+name, &n)
	return n.Labels, err
}

// LastConfirmed is the generation node name goes back to when a rollout
// reverts or is rolled back (history.go: lastConfirmed); "" when it
// confirmed none.
func (x *Tx) LastConfirmed(name string) (string, error) {
	var n nodeRec
	if _, err := x.t.get(kNodes+name, &n); err != nil {
		return "", err
	}
	return lastConfirmed(x.t, n)
}

// Confirmed reports whether node name is enrolled and whether the server
// confirmed generation id on it.
func (x *Tx) Confirmed(name, id string) (enrolled, confirmed bool, err error) {
	var n nodeRec
	if ok, err := x.t.get(kNodes+name, &n); err != nil || !ok {
		return false, false, err
	}
	confirmed, err = confirmedOn(x.t, n, id)
	return true, confirmed, err
}

// FailedSince reports whether node name's failure report was stored at or
// after since (when the rollout published to it, or retried it): a node
// retried after a failure still carries that failure's report until its
// agent acts on the retry, and must not fail again for it. A record from
// before ReportAt existed counts as new (the behaviour before).
func (x *Tx) FailedSince(name string, since time.Time) bool {
	var n nodeRec
	if ok, err := x.t.get(kNodes+name, &n); err != nil || !ok {
		return true
	}
	return n.ReportAt.IsZero() || !n.ReportAt.Before(since)
}

// Manifest reads and parses published manifest id. It does not make it a
// condition (a published manifest never changes); a manifest this server
// never published is an error wrapping store.ErrNotFound.
func (x *Tx) Manifest(id string) (*generation.Manifest, error) {
	e, err := x.t.st.Get(x.t.ctx, kManifests+id)
	if err != nil {
		return nil, err
	}
	return generation.Parse(e.Value)
}

// HasManifest reports whether this server published manifest id.
func (x *Tx) HasManifest(id string) (bool, error) { return x.t.get(kManifests+id, nil) }

// PutManifest stores the canonical manifest id.
func (x *Tx) PutManifest(id string, canonical []byte) { x.t.putRaw(kManifests+id, canonical) }

// NextRelease numbers a new release.
func (x *Tx) NextRelease() (int64, error) { return x.t.next(kCntRelease) }

// PutRelease stores release rel under its number seq.
func (x *Tx) PutRelease(seq int64, rel api.Release) error {
	return x.t.put(releaseKey(seq), rel)
}

// SetDesired makes generation id (manifest m) node's desired generation,
// set by release (or what else set it, e.g. "revert of ro3").
func (x *Tx) SetDesired(node, id, release string, m *generation.Manifest) error {
	return x.r.setDesired(x.t, node, id, release, m)
}

// RetryDesired asks node to try its desired generation again when it is
// id (a rollout retrying a node that failed on it); another desired
// generation is left alone.
func (x *Tx) RetryDesired(node, id string) error {
	var d desiredRec
	if ok, err := x.t.get(kDesired+node, &d); err != nil || !ok || d.ID != id {
		return err
	}
	d.Retry++
	d.At = x.now()
	return x.t.put(kDesired+node, d)
}
