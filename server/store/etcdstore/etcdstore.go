// Package etcdstore is the store.Store kept in etcd (go.etcd.io/etcd/client/v3),
// for a coordinator whose state must outlive one machine. It never touches
// a key outside its prefix and never interprets values.
//
// Layout under Config.Prefix (default "/slipway/"): "kv/<key>" holds each
// store key with its value as is; "rev" is rewritten by every transaction
// that changes something, so its mod revision is the store's revision
// (etcd's own revision also moves with writes outside the prefix);
// "app/<prefix>\x00<txn id>/<op index>" holds each entry an Append op
// wrote, presented as <prefix> + a number made of the etcd revision that
// created it (seq.go); "seqbase/<prefix>" the number an Append prefix's
// log had reached in the earlier layout (a "seq/<prefix>" counter, read
// once and no longer written); "schema" the layout version. Revisions are etcd mod revisions: a key's
// Rev is the revision of the etcd transaction that last wrote it, so
// revisions rise but skip numbers.
//
// Txn is one etcd transaction: the conditions are mod-revision compares;
// an Append reads nothing and compares nothing (its number is the
// revision etcd gives the transaction), so appenders never contend on a
// key; at most 100,000 Append ops to one prefix per transaction. A List
// under an Append prefix reads the appended entries by create revision
// (etcd sorts the whole prefix for it: a page costs the log's size in
// etcd, not in the response). Changes and Watch are fed by one etcd watch on
// the prefix, resumed where it stopped after a lost connection; when etcd
// has compacted the revisions it missed, every watcher is signalled once
// (a Watch function gets its own prefix as the key) and re-reads. The
// watch delivers a write after it returned: a watcher is not told of the
// writes the process had seen done when it registered. Writes are fenced
// (fence.go): with a Lock held (a migration), every write is conditional
// on it; a write made with a leader's context (Elector.Run) is
// conditional on that leader's election key. Blobs are kept beside the
// store keys, not among them (blob.go).
//
// etcd limits one transaction to --max-txn-ops operations (128 by
// default) and --max-request-bytes (1.5 MiB): the coordinator writes a
// rollout wave, or up to 2,000 last-seen times, in one transaction, so its
// etcd needs both raised (see the README); the errors say which.
package etcdstore

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/fanout"
)

// schema is the layout version this package writes and reads: 2 since
// Append ops keep no counter (seq.go). A store of version 1 is read as is
// and marked 2 at open, so that a slipway of version 1 refuses it rather
// than append with its counter below the numbers given since.
const schema = 2

// Defaults of Config.
const (
	DefaultPrefix         = "/slipway/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// Config says where the store is.
type Config struct {
	// Endpoints are the etcd client URLs ("https://10.0.0.1:2379").
	Endpoints []string
	// Prefix is put before every key ("" = DefaultPrefix). Two stores on
	// one etcd with different prefixes do not see each other.
	Prefix string
	// TLS, when set, is used for every connection.
	TLS *tls.Config
	// Username and Password authenticate to etcd (both or neither).
	Username, Password string
	// DialTimeout bounds the first connection (0: DefaultDialTimeout).
	DialTimeout time.Duration
	// RequestTimeout bounds each request to etcd (0:
	// DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Log receives the watch's reconnections and resyncs.
	Log zerolog.Logger
}

// Store is a store.Store in etcd.
type Store struct {
	cli *clientv3.Client
	cfg Config
	pre string // cfg.Prefix

	ctx    context.Context // ended by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	hub    *fanout.Hub

	fence atomic.Pointer[fence] // the lock writes are conditional on (Lock)
	seen  atomic.Int64          // the highest etcd revision a response showed

	baseMu sync.Mutex
	bases  map[string]int64 // Append prefix -> its base (seq.go)
	idBase string           // this process's part of appended keys
	txnSeq atomic.Uint64    // numbers this process's transactions

	watchDone chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd, checks (or writes) the layout version under the
// prefix and starts the watch. It fails if no endpoint answers within the
// dial and request timeouts.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store %v: %w", cfg.Endpoints, err)
	}
	s := &Store{cli: cli, cfg: cfg, pre: cfg.Prefix, hub: fanout.New(), bases: map[string]int64{}, idBase: randomID(), watchDone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	rev, err := s.initialize(ctx)
	if err != nil {
		s.cancel()
		_ = cli.Close()
		return nil, fmt.Errorf("open etcd store %v prefix %q: %w", cfg.Endpoints, cfg.Prefix, err)
	}
	go s.watch(rev + 1)
	return s, nil
}

// Client is the store's etcd client, for what shares its connection (the
// server's lock). Closing the store closes it.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the prefix every key of the store is under.
func (s *Store) Prefix() string { return s.pre }

// initialize writes the schema of a new prefix or checks an existing one,
// and returns etcd's revision at that moment (the watch starts after it).
func (s *Store) initialize(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+s.cfg.RequestTimeout)
	defer cancel()
	key := s.pre + "schema"
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(schema))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		n, err := strconv.Atoi(string(kvs[0].Value))
		if err != nil || n < 1 {
			return 0, fmt.Errorf("not a slipway store: %s holds %q", key, kvs[0].Value)
		}
		if n > schema {
			return 0, fmt.Errorf("schema %d is newer than this slipway's (%d): upgrade slipway", n, schema)
		}
		if n < schema {
			return s.upgrade(ctx, kvs[0])
		}
	}
	return resp.Header.Revision, nil
}

// upgrade marks a store of an earlier layout version with this one's.
func (s *Store) upgrade(ctx context.Context, kv *mvccKV) (int64, error) {
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
		Then(clientv3.OpPut(string(kv.Key), strconv.Itoa(schema))).Commit()
	if err != nil {
		return 0, fmt.Errorf("upgrade schema %s to %d: %w", kv.Value, schema, err)
	}
	return resp.Header.Revision, nil
}

func (s *Store) dataKey(key string) string { return s.pre + "kv/" + key }
func (s *Store) revKey() string            { return s.pre + "rev" }

// seqKey is where the earlier layout counted an Append prefix (read once,
// for the numbers to continue above it).
func (s *Store) seqKey(prefix string) string { return s.pre + "seq/" + prefix }

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	var e store.Entry
	err := s.call(ctx, []string{key}, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.dataKey(key))
		if err != nil {
			return err
		}
		s.observe(resp.Header)
		if len(resp.Kvs) == 0 {
			if resp, err = s.getApp(ctx, key); err != nil || len(resp.Kvs) == 0 {
				return cmp.Or(err, store.ErrNotFound)
			}
		}
		kv := resp.Kvs[0]
		e = store.Entry{Key: key, Value: nonNil(kv.Value), Rev: kv.ModRevision}
		return nil
	})
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
	err := s.call(ctx, nil, func(ctx context.Context) error {
		plain, err := s.listPlain(ctx, prefix, p)
		if err != nil {
			return err
		}
		app, err := s.listApp(ctx, prefix, p)
		if err != nil {
			return err
		}
		out = mergeKeys(plain, app, p.Limit)
		return nil
	})
	return out, err
}

// mergeKeys merges two lists sorted by key, at most limit (> 0) entries.
func mergeKeys(a, b []store.Entry, limit int) []store.Entry {
	if len(b) == 0 {
		return a
	}
	out := make([]store.Entry, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || len(a) > 0 && a[0].Key < b[0].Key {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// listPlain lists the keys stored as they are (not appended).
func (s *Store) listPlain(ctx context.Context, prefix string, p store.Page) ([]store.Entry, error) {
	from := prefix
	if p.From > prefix {
		from = p.From
	}
	start, end := s.dataKey(from), clientv3.GetPrefixRangeEnd(s.dataKey(prefix))
	if start >= end { // From is past the prefix: nothing to read
		return nil, nil
	}
	opts := []clientv3.OpOption{clientv3.WithRange(end)}
	if p.Limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(p.Limit)))
	}
	if p.KeysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := s.cli.Get(ctx, start, opts...)
	if err != nil {
		return nil, err
	}
	s.observe(resp.Header)
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	out := make([]store.Entry, 0, len(resp.Kvs))
	skip := len(s.dataKey(""))
	for _, kv := range resp.Kvs {
		e := store.Entry{Key: string(kv.Key[skip:]), Rev: kv.ModRevision}
		if !p.KeysOnly {
			e.Value = nonNil(kv.Value)
		}
		out = append(out, e)
	}
	return out, nil
}

// Count implements store.Store.
func (s *Store) Count(ctx context.Context, prefix string) (int, error) {
	var n int64
	err := s.call(ctx, nil, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.dataKey(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		app, err := s.listApp(ctx, prefix, store.Page{KeysOnly: true})
		n = resp.Count + int64(len(app))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count %q: %w", prefix, err)
	}
	return int(n), nil
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

// Rev implements store.Store: the mod revision of the "rev" key.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	var rev int64
	err := s.call(ctx, nil, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.revKey(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		s.observe(resp.Header)
		rev = modRev(resp.Kvs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("rev: %w", err)
	}
	return rev, nil
}

// Changes implements store.Store. The watch delivers writes after they
// return: those this process saw done before the call are left out.
func (s *Store) Changes(ctx context.Context, prefix string) <-chan struct{} {
	return s.hub.ChangesAfter(ctx, prefix, s.seen.Load())
}

// Watch implements store.Store: fn runs in the store's watch goroutine.
func (s *Store) Watch(prefix string, fn func(key string)) (stop func()) {
	return s.hub.WatchAfter(prefix, s.seen.Load(), fn)
}

// observe notes a response's revision: every write this process has seen
// done is at or before it.
func (s *Store) observe(h *etcdserverpb.ResponseHeader) {
	if h == nil {
		return
	}
	for {
		cur := s.seen.Load()
		if h.Revision <= cur || s.seen.CompareAndSwap(cur, h.Revision) {
			return
		}
	}
}

// Close implements store.Store: calls in flight end with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.watchDone
	s.hub.Close()
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// call runs fn with ctx bounded by the request timeout and ended by Close,
// after checking the store is open, ctx not done and no key empty. An
// error after Close is ErrClosed.
func (s *Store) call(ctx context.Context, keys []string, fn func(context.Context) error) error {
	if s.isClosed() {
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
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	err := fn(ctx)
	switch {
	case err == nil:
		return nil
	case s.isClosed():
		return store.ErrClosed
	case unavailable(err) && caller.Err() == nil:
		return fmt.Errorf("etcd %v (unreachable, or without a leader or quorum): %w: %w", s.cfg.Endpoints, store.ErrUnavailable, err)
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w (raise etcd's --max-txn-ops: a rollout wave is one transaction, about two keys per node)", err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w (raise etcd's --max-request-bytes)", err)
	}
	return err
}

// unavailable reports whether err means etcd could not be reached or
// could not commit in time (not that it refused the request).
func unavailable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, clientv3.ErrNoAvailableEndpoints),
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrLeaderChanged):
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// modRev is the mod revision of the first of kvs, 0 if there is none.
func modRev(kvs []*mvccKV) int64 {
	if len(kvs) == 0 {
		return 0
	}
	return kvs[0].ModRevision
}

// nonNil returns b, or an empty slice for nil (etcd returns nil for an
// empty value; the store returns what was put).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
