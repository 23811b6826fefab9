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
}

// track notes a write of key.
func (t *txn) track(key string) {
	if name, ok := strings.CutPrefix(key, kDesired); ok {
		if t.desired == nil {
			t.desired = map[string]bool{}
		}
		t.desired[name] = true
	}
}

// get reads key into v (if non-nil) and reports whether it exists. It sees
// the transaction's own pending writes first.
func (t *txn) get(key string, v any) (bool, error) {
	if i, ok := t.index[key]; ok {
		op := t.ops[i]
		if op.Delete {
			return false, nil
		}
		if v != nil {
			if err := json.Unmarshal(op.Value, v); err != nil {
				return true, fmt.Errorf("decode %s: %w", key, err)
			}
		}
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
		if err := json.Unmarshal(e.Value, v); err != nil {
			return true, fmt.Errorf("decode %s: %w", key, err)
		}
	}
	return true, nil
}

func (t *txn) putRaw(key string, b []byte) {
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
	return nil
}

func (t *txn) del(key string) {
	t.track(key)
	op := store.Op{Key: key, Delete: true}
	if i, ok := t.index[key]; ok {
		t.ops[i] = op
		return
	}
	t.index[key] = len(t.ops)
	t.ops = append(t.ops, op)
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
// Conflicts on every retry end in an error wrapping ErrBusy.
func commit(ctx context.Context, st store.Store, fn func(*txn) error) (*txn, error) {
	for attempt := 0; ; attempt++ {
		t := &txn{ctx: ctx, st: st, conds: map[string]int64{}, index: map[string]int{}}
		if err := fn(t); err != nil {
			return nil, err
		}
		if len(t.ops) == 0 {
			return nil, nil
		}
		conds := make([]store.Cond, 0, len(t.conds))
		for k, rev := range t.conds {
			conds = append(conds, store.Cond{Key: k, Rev: rev})
		}
		_, err := st.Txn(ctx, conds, t.ops)
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
		return t, nil
	}
}

// update runs fn in an optimistic transaction (commit) and, once it has
// committed, tells Config.OnDesired which nodes' desired generation it
// changed. A transaction that fails, conflicts to the end or writes
// nothing tells nobody.
func (r *Registry) update(ctx context.Context, fn func(*txn) error) error {
	t, err := commit(ctx, r.st, fn)
	if err != nil || t == nil || len(t.desired) == 0 || r.cfg.OnDesired == nil {
		return err
	}
	r.cfg.OnDesired(slices.Sorted(maps.Keys(t.desired)))
	return nil
}
