package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrHeld is returned (wrapped, naming the holder) by Lock when another
// process holds the store's lock.
var ErrHeld = errors.New("held by another server")

// ErrLockLost is returned (wrapped, with store.ErrUnavailable) by every
// write of a store whose lock is no longer this process's: nothing was
// written.
var ErrLockLost = errors.New("this process no longer holds the store's lock")

// Lock is a process's exclusive hold on the store's prefix: the key
// "<prefix>lock", bound to a lease that the client keeps alive. If etcd
// does not hear from the holder for the lease's TTL, the key goes and the
// lock is lost (Lost closes): the holder must stop, since another may now
// take it. While a lock is held, every write of the store is conditional
// on it (a fence): a holder that has not noticed yet (paused, or its
// lease deadline not yet passed here) cannot write after another took
// over.
type Lock struct {
	s      *Store
	sess   *concurrency.Session
	holder string
}

// Lock takes the store's lock for holder (a description of this process
// that another one is shown when it is refused), with a lease of ttl
// (whole seconds). It fails with ErrHeld if another holds it.
func (s *Store) Lock(ctx context.Context, holder string, ttl time.Duration) (*Lock, error) {
	key := s.pre + "lock"
	var l *Lock
	err := s.call(ctx, nil, func(ctx context.Context) error {
		lease, err := s.cli.Grant(ctx, int64(ttl/time.Second))
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(lease.TTL)), concurrency.WithContext(s.ctx))
		if err != nil {
			return fmt.Errorf("keep lease alive: %w", err)
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, holder, clientv3.WithLease(lease.ID))).
			Else(clientv3.OpGet(key)).Commit()
		if err == nil && !resp.Succeeded {
			err = heldBy(key, resp.Responses[0].GetResponseRange().Kvs)
		}
		if err != nil {
			_ = sess.Close()
			return err
		}
		l = &Lock{s: s, sess: sess, holder: holder}
		s.fence.Store(&fence{key: key, rev: resp.Header.Revision, lost: ErrLockLost})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	return l, nil
}

func heldBy(key string, kvs []*mvccKV) error {
	if len(kvs) == 0 { // released between the compare and the read
		return fmt.Errorf("%w (it was released a moment ago: try again)", ErrHeld)
	}
	return fmt.Errorf("%w: %s (lease %x); wait until it is done (a migration holds the prefix while it copies)",
		ErrHeld, kvs[0].Value, kvs[0].Lease)
}

// Lost is closed when the lock is lost (its lease expired or was revoked)
// or released.
func (l *Lock) Lost() <-chan struct{} { return l.sess.Done() }

// Release gives the lock up: its lease is revoked, so its key goes at
// once. Call it before closing the store.
func (l *Lock) Release() error {
	l.s.fence.Store(nil)
	if err := l.sess.Close(); err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}

// LockHolder returns the description of the process that holds the
// store's lock (a migration), or "" if none does.
func (s *Store) LockHolder(ctx context.Context) (string, error) {
	var holder string
	err := s.call(ctx, nil, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.pre+"lock")
		if err == nil && len(resp.Kvs) > 0 {
			holder = string(resp.Kvs[0].Value)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("lock holder: %w", err)
	}
	return holder, nil
}
