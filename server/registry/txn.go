package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/store"
)

// txn is an optimistic transaction over the store: every key read becomes
// a revision condition, writes are collected, and commit applies them all
// or retries the whole function when another writer got there first.
type txn struct {
	ctx   context.Context
	st    store.Store
	conds map[string]int64
	ops   []store.Op
	index map[string]int // key -> position in ops
	// desired names the nodes whose desired generation this transaction
	// writes (a put or delete under kDesired), for Config.OnDesired.
	desired map[string]bool
	// nodes names the nodes whose record, desired generation or confirms
	// this transaction writes: the rollout engine looks at them again.
	nodes map[string]bool
	// rev is the store revision the transaction committed at.
	rev int64
	// cache decodes node records (nodecache.go); written holds the node
	// records this transaction puts, for the cache once it commits.
	cache   *nodeCache
	written map[string]nodeRec
	// cached: get may take a node record from the cache instead of the
	// store, its cached revision the condition (the first attempt);
	// unverified says it did, so only a commit, which checks the
	// conditions, makes the attempt's reads count (commit).
	cached, unverified bool
}

// decode decodes e, the stored value of key, into v: node records through
// the cache.
func (t *txn) decode(key string, e store.Entry, v any) error {
	var err error
	if n, ok := v.(*nodeRec); ok && t.cache != nil && isNodeKey(key) {
		err = t.cache.decode(key, e.Rev, e.Value, n)
	} else {
		err = json.Unmarshal(e.Value, v)
	}
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// track notes a write of key.
func (t *txn) track(key string) {
	if name, ok := strings.CutPrefix(key, kDesired); ok {
		if t.desired == nil {
			t.desired = map[string]bool{}
		}
		t.desired[name] = true
	}
	if name := nodeOfKey(key); name != "" {
		if t.nodes == nil {
			t.nodes = map[string]bool{}
		}
		t.nodes[name] = true
	}
}

// nodeOfKey is the node whose rollout-relevant state key describes (its
// record, desired generation or a confirm), or "".
func nodeOfKey(key string) string {
	for _, p := range []string{kNodes, kDesired, kConfirmed} {
		if rest, ok := strings.CutPrefix(key, p); ok {
			name, _, _ := strings.Cut(rest, "/")
			return name
		}
	}
	return ""
}

// getEntry reads key's stored entry (not the transaction's own pending
// writes) and makes its revision a condition.
func (t *txn) getEntry(key string) (store.Entry, bool, error) {
	e, err := t.st.Get(t.ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if _, seen := t.conds[key]; !seen {
			t.conds[key] = 0
		}
		return store.Entry{}, false, nil
	}
	if err != nil {
		return store.Entry{}, false, err
	}
	if _, seen := t.conds[key]; !seen {
		t.conds[key] = e.Rev
	}
	return e, true, nil
}

// get reads key into v (if non-nil) and reports whether it exists. It sees
// the transaction's own pending writes first.
func (t *txn) get(key string, v any) (bool, error) {
	if i, ok := t.index[key]; ok {
		op := t.ops[i]
		if op.Delete {
			return false, nil
		}
		if n, ok := v.(*nodeRec); ok {
			if w, ok := t.written[key]; ok {
				*n = cloneNode(w)
				return true, nil
			}
		}
		if v != nil {
			if err := json.Unmarshal(op.Value, v); err != nil {
				return true, fmt.Errorf("decode %s: %w", key, err)
			}
		}
		return true, nil
	}
	if t.fromCache(key, v) {
		return true, nil
	}
	e, err := t.st.Get(t.ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if _, seen := t.conds[key]; !seen {
			t.conds[key] = 0
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, seen := t.conds[key]; !seen {
		t.conds[key] = e.Rev
	}
	if v != nil {
		return true, t.decode(key, e, v)
	}
	return true, nil
}

// fromCache reads node record key into v from the node cache, when the
// attempt may (t.cached), v is a node record and the cache holds key: the
// cached revision becomes the condition, so a record written meanwhile
// makes the commit conflict and the next attempt read the store. A key
// read before in this attempt keeps its first condition (and is read the
// same way again).
func (t *txn) fromCache(key string, v any) bool {
	n, ok := v.(*nodeRec)
	if !ok || !t.cached || t.cache == nil || !isNodeKey(key) {
		return false
	}
	rev, seen := t.conds[key]
	if !seen {
		if rev, ok = t.cache.get(key, n); !ok {
			return false
		}
		t.conds[key] = rev
		t.unverified = true
		return true
	}
	if rev == 0 {
		return false // read as absent: the store says what it holds now
	}
	_, ok = t.cache.getAt(key, rev, n)
	return ok
}

// peek reads key into v like get, without making its revision a
// condition: for what a transaction only observes and may see a moment
// late, such as the rollout engine looking at a node's state. A write to
// key that commits meanwhile does not retry the transaction; it marks the
// node for the engine's next step instead (updateRev), which sees it.
func (t *txn) peek(key string, v any) (bool, error) {
	if _, ok := t.index[key]; ok {
		return t.get(key, v)
	}
	e, err := t.st.Get(t.ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, t.decode(key, e, v)
}

func (t *txn) putRaw(key string, b []byte) {
	delete(t.written, key)
	t.track(key)
	op := store.Op{Key: key, Value: b}
	if i, ok := t.index[key]; ok {
		t.ops[i] = op
		return
	}
	t.index[key] = len(t.ops)
	t.ops = append(t.ops, op)
}

func (t *txn) put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	t.putRaw(key, b)
	if n, ok := v.(nodeRec); ok && isNodeKey(key) {
		if t.written == nil {
			t.written = map[string]nodeRec{}
		}
		t.written[key] = cloneNode(n) // the caller may change n's maps later
	}
	return nil
}

func (t *txn) del(key string) {
	delete(t.written, key)
	t.track(key)
	op := store.Op{Key: key, Delete: true}
	if i, ok := t.index[key]; ok {
		t.ops[i] = op
		return
	}
	t.index[key] = len(t.ops)
	t.ops = append(t.ops, op)
}

// delIfExists deletes key if it exists, on the condition that it is
// still as read.
func (t *txn) delIfExists(key string) error {
	ok, err := t.get(key, nil)
	if err == nil && ok {
		t.del(key)
	}
	return err
}

// delAt deletes key on the condition that it is still at rev (as a
// listing returned it).
func (t *txn) delAt(key string, rev int64) {
	if _, seen := t.conds[key]; !seen {
		t.conds[key] = rev
	}
	t.del(key)
}

// next increments counter key and returns the new value.
func (t *txn) next(counter string) (int64, error) {
	var n int64
	if _, err := t.get(counter, &n); err != nil {
		return 0, err
	}
	n++
	return n, t.put(counter, n)
}

// commit runs fn in an optimistic transaction, retrying on conflicts, and
// returns the transaction that committed (nil, nil when fn wrote nothing).
// Conflicts on every retry end in an error wrapping ErrBusy. The first
// attempt reads node records from the node cache (txn.fromCache); when it
// did and then failed or wrote nothing, no commit checked those reads, so
// fn runs again on the store's records (fn must bear running again, as it
// must for a conflict).
func commit(ctx context.Context, st store.Store, cache *nodeCache, fn func(*txn) error) (*txn, error) {
	for attempt := 0; ; attempt++ {
		t := &txn{ctx: ctx, st: st, conds: map[string]int64{}, index: map[string]int{}, cache: cache, cached: attempt == 0}
		err := fn(t)
		if t.unverified && (err != nil || len(t.ops) == 0) {
			continue // an answer from cached reads no commit checked: read the store
		}
		if err != nil {
			return nil, err
		}
		if len(t.ops) == 0 {
			return nil, nil
		}
		conds := make([]store.Cond, 0, len(t.conds))
		for k, rev := range t.conds {
			conds = append(conds, store.Cond{Key: k, Rev: rev})
		}
		rev, err := st.Txn(ctx, conds, t.ops)
		if errors.Is(err, store.ErrConflict) && attempt < 50 {
			// Many writers on one hot key starve each other when they
			// retry at once: back off a random, growing while. (Audit
			// events are store Append ops: they never conflict.)
			d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5)))
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("%w: %d attempts: %w", ErrBusy, attempt+1, err)
		}
		if err != nil {
			return nil, err
		}
		t.rev = rev
		return t, nil
	}
}

// update runs fn in an optimistic transaction (commit) and, once it has
// committed, tells the OnNodesChanged hook which nodes it changed and
// Config.OnDesired which nodes' desired generation it changed. A
// transaction that fails, conflicts to the end or writes nothing tells
// nobody.
func (r *Registry) update(ctx context.Context, fn func(*txn) error) error {
	_, err := r.updateRev(ctx, fn)
	return err
}

// updateRev is update that also returns the revision the transaction
// committed at (0 when it wrote nothing).
func (r *Registry) updateRev(ctx context.Context, fn func(*txn) error) (int64, error) {
	t, err := commit(ctx, r.st, r.nodes, fn)
	if err != nil || t == nil {
		return 0, err
	}
	var records []string
	for _, op := range t.ops {
		if name, ok := strings.CutPrefix(op.Key, kNodes); ok {
			records = append(records, name)
			r.cacheWritten(t, op)
		}
	}
	r.seen.forget(records, t.rev)
	if len(t.nodes) > 0 && r.marked != nil {
		r.marked(slices.Collect(maps.Keys(t.nodes)))
	}
	if len(t.desired) > 0 && r.cfg.OnDesired != nil {
		r.cfg.OnDesired(slices.Sorted(maps.Keys(t.desired)))
	}
	return t.rev, nil
}

// cacheWritten tells the node cache what op, a write of a node record in
// t, left stored at t.rev.
func (r *Registry) cacheWritten(t *txn, op store.Op) {
	if n, ok := t.written[op.Key]; ok && !op.Delete {
		r.nodes.store(op.Key, t.rev, n)
		return
	}
	r.nodes.drop(op.Key)
}
