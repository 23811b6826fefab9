package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

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
	defer s.lockAppends(ops)()
	for range maxAttempts {
		var rev int64
		var retry bool
		err := s.call(ctx, keys, func(ctx context.Context) error {
			p, err := s.plan(ctx, ops)
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

// lockAppends queues the transaction behind this process's other appenders
// to the same prefixes (in sorted order: no deadlock), so that they do not
// overtake each other's counter reads. It returns the unlock.
func (s *Store) lockAppends(ops []store.Op) func() {
	var prefixes []string
	for _, op := range ops {
		if op.Append {
			prefixes = append(prefixes, op.Key)
		}
	}
	if len(prefixes) == 0 {
		return func() {}
	}
	slices.Sort(prefixes)
	prefixes = slices.Compact(prefixes)
	mus := make([]*sync.Mutex, len(prefixes))
	s.appendMu.Lock()
	for i, p := range prefixes {
		if s.appends[p] == nil {
			s.appends[p] = &sync.Mutex{}
		}
		mus[i] = s.appends[p]
	}
	s.appendMu.Unlock()
	for _, mu := range mus {
		mu.Lock()
	}
	return func() {
		for _, mu := range mus {
			mu.Unlock()
		}
	}
}

// plan is what a transaction read before it commits: the keys its ops
// write, the compares that keep those reads true, and whether it changes
// anything.
type plan struct {
	keys    []string         // per op: the store key written
	guards  []clientv3.Cmp   // the reads still hold
	extra   []clientv3.Op    // counter writes
	changes bool             // it writes at least one key
	seqs    map[string]int64 // Append prefix -> last number allocated
}

// plan reads what the commit depends on: the counters of Append prefixes,
// and for a transaction that only deletes, which of its keys exist (a
// delete of missing keys changes nothing and must not move the revision).
func (s *Store) plan(ctx context.Context, ops []store.Op) (*plan, error) {
	p := &plan{keys: make([]string, len(ops)), seqs: map[string]int64{}}
	var deletes []string
	for i, op := range ops {
		p.keys[i] = op.Key
		switch {
		case op.Delete:
			deletes = append(deletes, op.Key)
		case op.Append:
			key, err := s.nextSeq(ctx, p, op.Key)
			if err != nil {
				return nil, err
			}
			p.keys[i] = key
			p.changes = true
		default:
			p.changes = true
		}
	}
	for prefix, n := range p.seqs {
		p.extra = append(p.extra, clientv3.OpPut(s.seqKey(prefix), strconv.FormatInt(n, 10)))
	}
	if p.changes || len(deletes) == 0 {
		return p, nil
	}
	return p, s.readDeletes(ctx, p, deletes)
}

// nextSeq allocates the next number of prefix's sequence: the counter's,
// or on the first Append the highest number found in a key (a log written
// before this store kept a counter).
func (s *Store) nextSeq(ctx context.Context, p *plan, prefix string) (string, error) {
	n, ok := p.seqs[prefix]
	if !ok {
		resp, err := s.cli.Get(ctx, s.seqKey(prefix))
		if err != nil {
			return "", err
		}
		p.guards = append(p.guards, clientv3.Compare(clientv3.ModRevision(s.seqKey(prefix)), "=", modRev(resp.Kvs)))
		if len(resp.Kvs) > 0 {
			if n, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return "", fmt.Errorf("corrupt store: sequence of %q: %q", prefix, resp.Kvs[0].Value)
			}
		} else if n, err = s.lastSeqKey(ctx, prefix); err != nil {
			return "", err
		}
	}
	n++
	p.seqs[prefix] = n
	return prefix + store.SeqKey(n), nil
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

// readDeletes finds which of keys exist, guards that, and notes whether
// the transaction changes anything.
func (s *Store) readDeletes(ctx context.Context, p *plan, keys []string) error {
	for chunk := range slices.Chunk(keys, readBatch) {
		gets := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			gets[i] = clientv3.OpGet(s.dataKey(k), clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return err
		}
		for i, r := range resp.Responses {
			rev := modRev(r.GetResponseRange().Kvs)
			p.guards = append(p.guards, clientv3.Compare(clientv3.ModRevision(s.dataKey(chunk[i])), "=", rev))
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
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.dataKey(c.Key)), "=", c.Rev))
		els = append(els, clientv3.OpGet(s.dataKey(c.Key), clientv3.WithKeysOnly()))
	}
	cmps = append(cmps, p.guards...)
	fs := s.fences(ctx)
	for _, f := range fs {
		cmp, read := f.compare()
		cmps, els = append(cmps, cmp), append(els, read)
	}
	then := make([]clientv3.Op, 0, len(ops)+len(p.extra)+1)
	for i, op := range ops {
		if op.Delete {
			then = append(then, clientv3.OpDelete(s.dataKey(p.keys[i])))
		} else {
			then = append(then, clientv3.OpPut(s.dataKey(p.keys[i]), string(op.Value)))
		}
	}
	then = append(then, p.extra...)
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
