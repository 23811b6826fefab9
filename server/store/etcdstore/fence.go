package etcdstore

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slipway-dev/slipway/server/store"
)

// ErrNotLeader is returned (wrapped, with store.ErrUnavailable) by a write
// made with a leader's context (Elector.Run) after this process lost the
// lead: nothing was written.
var ErrNotLeader = errors.New("this server is no longer the leader")

// fence is a key a write is conditional on: it must still exist with the
// create revision it had when it was taken (a lock or an election key,
// bound to a lease: it goes when the lease expires).
type fence struct {
	key  string
	rev  int64 // the key's create revision
	lost error // what a failed compare means
}

type fenceCtxKey struct{}

// withFence makes every write made with ctx (and contexts derived from it)
// conditional on f.
func withFence(ctx context.Context, f *fence) context.Context {
	return context.WithValue(ctx, fenceCtxKey{}, f)
}

// fences are the keys a write with ctx is conditional on: the store's lock
// (Lock) and the leader's election key (a context from Elector.Run).
func (s *Store) fences(ctx context.Context) []*fence {
	var fs []*fence
	if f := s.fence.Load(); f != nil {
		fs = append(fs, f)
	}
	if f, ok := ctx.Value(fenceCtxKey{}).(*fence); ok {
		fs = append(fs, f)
	}
	return fs
}

// compare is the condition that f still holds, and read the read that
// tells, in the transaction's else branch, whether it did.
func (f *fence) compare() (cmp clientv3.Cmp, read clientv3.Op) {
	return clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev), clientv3.OpGet(f.key, clientv3.WithKeysOnly())
}

// check is the error of a failed transaction if f did not hold (kvs: the
// else branch's read of f.key), nil if it did.
func (f *fence) check(kvs []*mvccKV) error {
	if len(kvs) == 0 || kvs[0].CreateRevision != f.rev {
		return fmt.Errorf("%w (%s): %w", f.lost, f.key, store.ErrUnavailable)
	}
	return nil
}
