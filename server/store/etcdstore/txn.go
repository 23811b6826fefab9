package etcdstore

import (
	"context"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slipway-dev/slipway/server/store"
)

type mvccKV = mvccpb.KeyValue

// maxAttempts bounds the retries of a transaction whose reads (an Append
// counter, the existence of a deleted key) were overtaken by another
// process's write.
const maxAttempts = 100

// readBatch bounds the reads of one etcd transaction (etcd's default
// --max-txn-ops is 128).
const readBatch = 100

// update runs one store transaction: conds, then ops, as one etcd
// transaction. It returns the new revision, or the current one if nothing
// changed.
func (s *Store) update(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	keys, err := checkOps(conds, ops)
	if err != nil {
		return 0, err
	}
	for range maxAttempts {
		var rev int64
		var retry bool
		err := s.call(ctx, keys, func(ctx context.Context) error {
			p, err := s.plan(ctx, conds, ops)
			if err != nil {
				return err
			}
			rev, retry, err = s.commit(ctx, conds, ops, p)
			return err
		})
		if err != nil || !retry {
			return rev, err
		}
	}
	return 0, fmt.Errorf("overtaken by other writers %d times in a row", maxAttempts)
}

// checkOps rejects a key in two ops and an Append that deletes, and
// returns every key, for the empty-key check.
func checkOps(conds []store.Cond, ops []store.Op) ([]string, error) {
	keys := make([]string, 0, len(conds)+len(ops))
	seen := make(map[string]bool, len(ops))
	for _, c := range conds {
		keys = append(keys, c.Key)
	}
	for _, op := range ops {
		switch {
		case op.Append && op.Delete:
			return nil, fmt.Errorf("%q: an op cannot both append and delete: %w", op.Key, store.ErrInvalidKey)
		case !op.Append && seen[op.Key]:
			return nil, fmt.Errorf("%q in more than one op: %w", op.Key, store.ErrInvalidKey)
		}
		if !op.Append {
			seen[op.Key] = true
		}
		keys = append(keys, op.Key)
	}
	return keys, nil
}

// plan is what a transaction read before it commits: the keys its ops
// write, the compares that keep those reads true, and whether it changes
// anything.
type plan struct {
	keys    []string          // per op: the etcd key written
	guards  []clientv3.Cmp    // the reads still hold
	changes bool              // it writes at least one key
	conds   map[string]string // presented appended key -> etcd key
}

// etcdKey is the etcd key of a store key in a condition.
func (s *Store) etcdKey(p *plan, key string) string {
	if k := p.conds[key]; k != "" {
		return k
	}
	return s.dataKey(key)
}

// plan reads what the commit depends on: the base of Append prefixes
// (seq.go), where the appended entries among deleted keys are stored, and
// for a transaction that only deletes, which of its keys exist (a delete
// of missing keys changes nothing and must not move the revision).
func (s *Store) plan(ctx context.Context, conds []store.Cond, ops []store.Op) (*plan, error) {
	condKeys := make([]string, len(conds))
	for i, c := range conds {
		condKeys[i] = c.Key
	}
	p := &plan{keys: make([]string, len(ops))}
	var deletes []string
	id, idx := "", map[string]int{}
	for i, op := range ops {
		p.keys[i] = s.dataKey(op.Key)
		switch {
		case op.Delete:
			deletes = append(deletes, op.Key)
		case op.Append:
			if _, _, err := s.base(ctx, op.Key, true); err != nil {
				return nil, err
			}
			if idx[op.Key] >= seqPerRev {
				return nil, fmt.Errorf("%q: more than %d appends in one transaction: %w", op.Key, seqPerRev, store.ErrInvalidKey)
			}
			if id == "" {
				id = s.newTxnID()
			}
			p.keys[i] = fmt.Sprintf("%s%s%0*d", s.appKey(op.Key), id, seqIdxDigits, idx[op.Key])
			idx[op.Key]++
			p.changes = true
		default:
			if err := s.checkPut(ctx, op.Key); err != nil {
				return nil, err
			}
			p.changes = true
		}
	}
	if len(deletes)+len(condKeys) == 0 {
		return p, nil
	}
	stored, err := s.storedKeys(ctx, append(deletes, condKeys...))
	if err != nil {
		return nil, err
	}
	p.conds = stored
	for i, op := range ops {
		if k := stored[op.Key]; op.Delete && k != "" {
			p.keys[i] = k
		}
	}
	if p.changes {
		return p, nil
	}
	return p, s.readDeletes(ctx, p, ops)
}

// lastSeqKey is the highest sequence number in a key under prefix, 0 if
// none. Keys that are a number sort before those that go on with ':' or
// later, so it reads backwards from there.
func (s *Store) lastSeqKey(ctx context.Context, prefix string) (int64, error) {
	start, end := s.dataKey(prefix), s.dataKey(prefix+":")
	for {
		resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(readBatch))
		if err != nil {
			return 0, err
		}
		for _, kv := range resp.Kvs {
			if n, ok := store.ParseSeq(string(kv.Key[len(start):])); ok {
				return n, nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return 0, nil
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key)
	}
}

// readDeletes finds which of the keys ops delete exist, guards that, and
// notes whether the transaction changes anything.
func (s *Store) readDeletes(ctx context.Context, p *plan, ops []store.Op) error {
	var keys []string
	for i, op := range ops {
		if op.Delete {
			keys = append(keys, p.keys[i])
		}
	}
	for chunk := range slices.Chunk(keys, readBatch) {
		gets := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			gets[i] = clientv3.OpGet(k, clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return err
		}
		for i, r := range resp.Responses {
			rev := modRev(r.GetResponseRange().Kvs)
			p.guards = append(p.guards, clientv3.Compare(clientv3.ModRevision(chunk[i]), "=", rev))
			if rev != 0 {
				p.changes = true
			}
		}
	}
	return nil
}

// commit runs the etcd transaction. retry is true when a guard failed
// (another process wrote what plan read) and no condition did.
func (s *Store) commit(ctx context.Context, conds []store.Cond, ops []store.Op, p *plan) (rev int64, retry bool, err error) {
	cmps := make([]clientv3.Cmp, 0, len(conds)+len(p.guards))
	els := make([]clientv3.Op, 0, len(conds))
	for _, c := range conds {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.etcdKey(p, c.Key)), "=", c.Rev))
		els = append(els, clientv3.OpGet(s.etcdKey(p, c.Key), clientv3.WithKeysOnly()))
	}
	cmps = append(cmps, p.guards...)
	fs := s.fences(ctx)
	for _, f := range fs {
		cmp, read := f.compare()
		cmps, els = append(cmps, cmp), append(els, read)
	}
	then := make([]clientv3.Op, 0, len(ops)+1)
	for i, op := range ops {
		if op.Delete {
			then = append(then, clientv3.OpDelete(p.keys[i]))
		} else {
			then = append(then, clientv3.OpPut(p.keys[i], string(op.Value)))
		}
	}
	if p.changes {
		then = append(then, clientv3.OpPut(s.revKey(), ""))
	} else {
		then = append(then, clientv3.OpGet(s.revKey(), clientv3.WithKeysOnly()))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return 0, false, err
	}
	s.observe(resp.Header)
	if !resp.Succeeded {
		for i, f := range fs {
			if err := f.check(resp.Responses[len(conds)+i].GetResponseRange().Kvs); err != nil {
				return 0, false, err
			}
		}
		for i, c := range conds {
			if got := modRev(resp.Responses[i].GetResponseRange().Kvs); got != c.Rev {
				return 0, false, fmt.Errorf("%q is at rev %d, want %d: %w", c.Key, got, c.Rev, store.ErrConflict)
			}
		}
		return 0, true, nil
	}
	if p.changes {
		return resp.Header.Revision, false, nil
	}
	return modRev(resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs), false, nil
}
