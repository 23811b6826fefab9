package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/slipway-dev/slipway/server/store"
)

// maxBatch bounds the transactions committed together in one bbolt
// transaction (one fsync).
const maxBatch = 1000

// keySeqPrefix prefixes, in bucket meta, the last number allocated to each
// Append prefix ("seq/" + prefix -> 8 bytes).
const keySeqPrefix = "seq/"

// request is one store transaction waiting to be committed.
type request struct {
	conds []store.Cond
	ops   []store.Op

	// Results, set by the batch that commits it.
	rev     int64
	changed []string
	err     error

	// wake receives once: true to lead the next batch, false when the
	// request was committed (or failed) by another leader.
	wake chan bool
}

// commit runs req in a group commit: the first writer to arrive leads and
// commits everything queued so far in one bbolt transaction, one fsync;
// writers arriving meanwhile queue, and when the batch is done the leader
// hands the lead to the first of them, whose batch holds every writer that
// queued during the fsync. A lone writer commits at once: no timer, no
// added latency. Each request keeps its own conditions and its own
// revision, as if committed alone in queue order.
func (s *Store) commit(req *request) {
	req.wake = make(chan bool, 1)
	s.bmu.Lock()
	s.queue = append(s.queue, req)
	lead := !s.leading
	s.leading = true
	s.bmu.Unlock()
	if !lead && !<-req.wake {
		return
	}
	s.bmu.Lock()
	n := min(len(s.queue), maxBatch)
	batch := slices.Clone(s.queue[:n])
	s.queue = slices.Delete(s.queue, 0, n)
	s.bmu.Unlock()

	s.run(batch)
	var changed []string
	for _, r := range batch {
		changed = append(changed, r.changed...)
	}
	s.notify(changed)
	for _, r := range batch {
		if r != req {
			r.wake <- false
		}
	}

	s.bmu.Lock()
	if len(s.queue) == 0 {
		s.leading = false
		s.bmu.Unlock()
		return
	}
	next := s.queue[0]
	s.bmu.Unlock()
	next.wake <- true
}

// run commits batch in one bbolt transaction. If one request fails in a
// way that aborts the transaction (not a condition: that only fails the
// request), each is run again on its own so the others still commit.
func (s *Store) run(batch []*request) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := newBatchTx(tx)
		if err != nil {
			return err
		}
		for _, r := range batch {
			if err := b.apply(r); err != nil {
				return err
			}
		}
		return b.finish()
	})
	if err == nil {
		return
	}
	if len(batch) == 1 {
		batch[0].rev, batch[0].changed, batch[0].err = 0, nil, closedErr(err)
		return
	}
	for _, r := range batch {
		s.run([]*request{r})
	}
}

// batchTx applies requests in one bbolt transaction.
type batchTx struct {
	kv, meta *bolt.Bucket
	rev      int64
	start    int64
	seqs     map[string]int64 // Append prefix -> last number allocated
}

func newBatchTx(tx *bolt.Tx) (*batchTx, error) {
	b := &batchTx{kv: tx.Bucket(bucketKV), meta: tx.Bucket(bucketMeta), seqs: map[string]int64{}}
	rev, err := readRev(b.meta)
	b.rev, b.start = rev, rev
	return b, err
}

// apply checks r's conditions against the state so far and applies its
// ops with the next revision. A failed condition fails r alone and writes
// nothing; an error returned aborts the whole bbolt transaction.
func (b *batchTx) apply(r *request) error {
	r.rev, r.changed, r.err = 0, nil, nil
	for _, c := range r.conds {
		got, err := modRev(b.kv, c.Key)
		if err != nil {
			return err
		}
		if got != c.Rev {
			r.err = fmt.Errorf("%q is at rev %d, want %d: %w", c.Key, got, c.Rev, store.ErrConflict)
			return nil
		}
	}
	rev := b.rev + 1
	var changed []string
	for _, op := range r.ops {
		key, err := b.opKey(op)
		if err != nil {
			return err
		}
		k := []byte(key)
		if op.Delete {
			if b.kv.Get(k) == nil {
				continue
			}
			if err := b.kv.Delete(k); err != nil {
				return err
			}
		} else {
			// bbolt holds on to k and v until the commit: both are
			// fresh slices here.
			v := make([]byte, 8+len(op.Value))
			binary.BigEndian.PutUint64(v, uint64(rev))
			copy(v[8:], op.Value)
			if err := b.kv.Put(k, v); err != nil {
				return err
			}
		}
		changed = append(changed, key)
	}
	r.rev = b.rev
	if len(changed) > 0 {
		b.rev, r.rev, r.changed = rev, rev, changed
	}
	return nil
}

// opKey is the key op writes: its Key, or for Append its Key followed by
// the prefix's next sequence number.
func (b *batchTx) opKey(op store.Op) (string, error) {
	if !op.Append {
		return op.Key, nil
	}
	n, ok := b.seqs[op.Key]
	if !ok {
		var err error
		if n, err = b.lastSeq(op.Key); err != nil {
			return "", err
		}
	}
	n++
	b.seqs[op.Key] = n
	return op.Key + store.SeqKey(n), nil
}

// lastSeq is the highest number prefix's sequence has used: the one kept
// in meta, or the highest found in a key (a log written before sequences
// were kept: numbers go on from it).
func (b *batchTx) lastSeq(prefix string) (int64, error) {
	var n int64
	if v := b.meta.Get([]byte(keySeqPrefix + prefix)); v != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("corrupt store: sequence of %q", prefix)
		}
		n = int64(binary.BigEndian.Uint64(v))
	}
	p := []byte(prefix)
	c := b.kv.Cursor()
	k, _ := c.Seek(append(bytes.Clone(p), ':')) // ':' sorts after '9'
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, p); k, _ = c.Prev() {
		if m, ok := store.ParseSeq(string(k[len(p):])); ok {
			return max(n, m), nil
		}
	}
	return n, nil
}

// finish writes the revision and the sequences the batch moved on.
func (b *batchTx) finish() error {
	for prefix, n := range b.seqs {
		if err := b.meta.Put([]byte(keySeqPrefix+prefix), u64(uint64(n))); err != nil {
			return err
		}
	}
	if b.rev == b.start {
		return nil
	}
	return b.meta.Put(keyRev, u64(uint64(b.rev)))
}
