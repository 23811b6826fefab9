// Package boltstore is the default store.Store: one bbolt file, embedded in
// the server. Only one process can hold the file open (bbolt locks it), so
// this store is for a single server; use the etcd store for several.
//
// Layout: bucket "kv" maps each key to its 8-byte big-endian mod revision
// followed by the value; bucket "meta" holds "rev" (the global revision),
// "schema" (the layout version, checked at open) and "seq/<prefix>" (the
// last number of each Append prefix). This package never interprets values
// and never touches any file but its own.
//
// Writes are group-committed (see commit): concurrent transactions share
// one bbolt transaction and one fsync, each with its own conditions and
// revision. Changes watchers are indexed by prefix (server/store/fanout).
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/fanout"
)

// schema is the layout version this package writes and reads. Open refuses
// a file with a newer one.
const schema = 1

// DefaultTimeout is how long Open waits for the file lock by default.
const DefaultTimeout = 5 * time.Second

// ErrLocked is returned (wrapped) by Open when another process holds the file.
var ErrLocked = errors.New("in use by another process")

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyRev     = []byte("rev")
	keySchema  = []byte("schema")
)

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock held by another
	// process: 0 means DefaultTimeout, a negative value tries once.
	Timeout time.Duration
	// NoSync skips fsync after each commit: a crash can lose or corrupt
	// data. Tests only.
	NoSync bool
}

// Store is a store.Store in one bbolt file.
type Store struct {
	db *bolt.DB

	mu     sync.Mutex
	closed bool
	hub    *fanout.Hub

	bmu     sync.Mutex // guards the group commit's queue
	queue   []*request
	leading bool // a writer is committing a batch
}

var _ store.Store = (*Store)(nil)

// Open opens the store at path, creating the file (mode 0600, not its
// directory) if it does not exist.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := checkLength(path); err != nil {
		return nil, fmt.Errorf("open store %s: %w; %s", path, err, corruptHint)
	}
	db, err := openBolt(path, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync})
	switch {
	case errors.Is(err, ErrCorrupt):
		return nil, fmt.Errorf("open store %s: %w; %s", path, err, corruptHint)
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("store %s is %w (no file lock after %s)", path, ErrLocked, opts.Timeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("open store %s: not a bbolt database, or corrupt: %w", path, err)
	case err != nil:
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err // it repeats the path
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := checkPages(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w; %s", path, err, corruptHint)
	}
	if err := db.Update(initialize); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, hub: fanout.New()}, nil
}

// initialize creates the buckets of a new file, or checks the schema of an
// existing one.
func initialize(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return create(tx)
	}
	v := meta.Get(keySchema)
	if len(v) != 8 || binary.BigEndian.Uint64(v) == 0 || tx.Bucket(bucketKV) == nil {
		return errors.New("not a slipway store or corrupt (no schema)")
	}
	if n := binary.BigEndian.Uint64(v); n > schema {
		return fmt.Errorf("schema %d is newer than this slipway's (%d): upgrade slipway", n, schema)
	}
	_, err := readRev(meta)
	return err
}

// create lays out a new store in an empty file.
func create(tx *bolt.Tx) error {
	// A new file has no buckets; anything else is someone else's.
	if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		return fmt.Errorf("not a slipway store (it has a bucket %q)", name)
	}); err != nil {
		return err
	}
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	if err := meta.Put(keySchema, u64(schema)); err != nil {
		return err
	}
	if err := meta.Put(keyRev, u64(0)); err != nil {
		return err
	}
	_, err = tx.CreateBucket(bucketKV)
	return err
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	var e store.Entry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		var err error
		e, err = decode(key, v)
		return err
	}, key)
	if err != nil {
		return store.Entry{}, fmt.Errorf("get %q: %w", key, err)
	}
	return e, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Entry, error) {
	out, err := s.list(ctx, prefix, store.Page{})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return out, nil
}

// ListPage implements store.Store.
func (s *Store) ListPage(ctx context.Context, prefix string, p store.Page) ([]store.Entry, error) {
	out, err := s.list(ctx, prefix, p)
	if err != nil {
		return nil, fmt.Errorf("list %q from %q: %w", prefix, p.From, err)
	}
	return out, nil
}

func (s *Store) list(ctx context.Context, prefix string, p store.Page) ([]store.Entry, error) {
	var out []store.Entry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		pre := []byte(prefix)
		from := pre
		if p.From > prefix {
			from = []byte(p.From)
		}
		for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, pre); k, v = c.Next() {
			if p.Limit > 0 && len(out) == p.Limit {
				return nil
			}
			if p.KeysOnly && len(v) >= 8 {
				v = v[:8]
			}
			e, err := decode(string(k), v)
			if err != nil {
				return err
			}
			if p.KeysOnly {
				e.Value = nil
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Count implements store.Store.
func (s *Store) Count(ctx context.Context, prefix string) (int, error) {
	n := 0
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %q: %w", prefix, err)
	}
	return n, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte) (int64, error) {
	rev, err := s.update(ctx, nil, []store.Op{{Key: key, Value: value}})
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	return rev, nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.update(ctx, nil, []store.Op{{Key: key, Delete: true}}); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	rev, err := s.update(ctx, conds, ops)
	if err != nil {
		return 0, fmt.Errorf("txn: %w", err)
	}
	return rev, nil
}

// Rev implements store.Store.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	var rev int64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		rev, err = readRev(tx.Bucket(bucketMeta))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rev: %w", err)
	}
	return rev, nil
}

// Changes implements store.Store.
func (s *Store) Changes(ctx context.Context, prefix string) <-chan struct{} {
	return s.hub.Changes(ctx, prefix)
}

// Watch implements store.Store.
func (s *Store) Watch(prefix string, fn func(key string)) (stop func()) {
	return s.hub.Watch(prefix, fn)
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.hub.Close()
	// bbolt waits for running transactions; later ones fail with
	// ErrDatabaseNotOpen, which closedErr turns into store.ErrClosed.
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// check is called before every transaction: a closed store or a finished
// context stops it, and an empty key is rejected.
func (s *Store) check(ctx context.Context, keys ...string) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("empty key: %w", store.ErrInvalidKey)
		}
	}
	return nil
}

func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error, keys ...string) error {
	if err := s.check(ctx, keys...); err != nil {
		return err
	}
	return closedErr(s.db.View(fn))
}

// update runs one write transaction through the group commit: every
// condition, then every op. It returns the new revision, or the current
// one if nothing changed; the watchers of the changed keys are signalled
// before it returns.
func (s *Store) update(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	keys := make([]string, 0, len(conds)+len(ops))
	seen := make(map[string]bool, len(ops))
	for _, c := range conds {
		keys = append(keys, c.Key)
	}
	for _, op := range ops {
		if err := checkOp(op, seen); err != nil {
			return 0, err
		}
		keys = append(keys, op.Key)
	}
	if err := s.check(ctx, keys...); err != nil {
		return 0, err
	}
	req := &request{conds: conds, ops: ops}
	s.commit(req)
	return req.rev, req.err
}

// checkOp rejects what would fail inside a shared bbolt transaction: a key
// twice, a key or value bbolt cannot hold, an Append that deletes.
func checkOp(op store.Op, seen map[string]bool) error {
	switch {
	case op.Append && op.Delete:
		return fmt.Errorf("%q: an op cannot both append and delete: %w", op.Key, store.ErrInvalidKey)
	case !op.Append && seen[op.Key]:
		return fmt.Errorf("%q in more than one op: %w", op.Key, store.ErrInvalidKey)
	case len(op.Key)+store.SeqDigits > bolt.MaxKeySize:
		return fmt.Errorf("key of %d bytes, want at most %d: %w", len(op.Key), bolt.MaxKeySize-store.SeqDigits, store.ErrInvalidKey)
	case len(op.Value)+8 > bolt.MaxValueSize:
		return fmt.Errorf("%q: value of %d bytes is too large", op.Key, len(op.Value))
	}
	if !op.Append {
		seen[op.Key] = true
	}
	return nil
}

// notify signals the watchers of keys, without blocking.
func (s *Store) notify(keys []string) {
	s.hub.Signal(keys...)
}

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

func decode(key string, v []byte) (store.Entry, error) {
	if len(v) < 8 {
		return store.Entry{}, fmt.Errorf("corrupt entry %q (%d bytes)", key, len(v))
	}
	return store.Entry{
		Key:   key,
		Value: bytes.Clone(v[8:]),
		Rev:   int64(binary.BigEndian.Uint64(v)),
	}, nil
}

// modRev returns key's mod revision, 0 if it does not exist.
func modRev(kv *bolt.Bucket, key string) (int64, error) {
	v := kv.Get([]byte(key))
	if v == nil {
		return 0, nil
	}
	if len(v) < 8 {
		return 0, fmt.Errorf("corrupt entry %q (%d bytes)", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func readRev(meta *bolt.Bucket) (int64, error) {
	v := meta.Get(keyRev)
	if len(v) != 8 {
		return 0, errors.New("corrupt store: no revision")
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func u64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}
