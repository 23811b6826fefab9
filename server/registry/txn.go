package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// update runs fn in an optimistic transaction, retrying on conflicts.
func update(ctx context.Context, st store.Store, fn func(*txn) error) error {
	for attempt := 0; ; attempt++ {
		t := &txn{ctx: ctx, st: st, conds: map[string]int64{}, index: map[string]int{}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.ops) == 0 {
			return nil
		}
		conds := make([]store.Cond, 0, len(t.conds))
		for k, rev := range t.conds {
			conds = append(conds, store.Cond{Key: k, Rev: rev})
		}
		_, err := st.Txn(ctx, conds, t.ops)
		if errors.Is(err, store.ErrConflict) && attempt < 50 {
			continue
		}
		return err
	}
}
