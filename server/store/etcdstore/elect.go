package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Elector campaigns for leadership among the processes on one prefix
// (etcd's concurrency election under "<prefix>leader", each candidate on a
// lease of its own): several servers on one store elect the one that runs
// the work that must run once (the rollout engine, pruning, the
// notification worker).
//
// A leader learns it lost the lead only when its own lease deadline
// passes, which can be after etcd expired the lease and another candidate
// took over: in TestElectorTakeover (TTL 2 s) the old leader's term ended
// about 0.7 s after the new one's began. So the leader's work is fenced:
// every write made with the context Run passes to lead is conditional on
// this term's election key (its create revision), which goes with the
// lease; a deposed leader's write fails with ErrNotLeader instead of
// applying (TestElectorFencesDeposedLeader).
type Elector struct {
	s    *Store
	name string
	ttl  time.Duration
}

// Elector returns an elector for this process, named name (what others
// see as the leader), with a lease of ttl (whole seconds).
func (s *Store) Elector(name string, ttl time.Duration) *Elector {
	return &Elector{s: s, name: name, ttl: ttl}
}

func (e *Elector) key() string { return e.s.pre + "leader" }

// Run campaigns until ctx ends. Each time this process becomes leader it
// calls lead with a context that ends when the leadership is lost (etcd
// did not hear from this process for the lease's TTL) or ctx ends; when
// lead returns it resigns and campaigns again.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	wait := watchRetryMin
	for ctx.Err() == nil {
		if err := e.term(ctx, lead); err != nil && ctx.Err() == nil {
			e.s.cfg.Log.Warn().Str("component", "etcdstore").Err(err).Dur("retry_in", wait).Msg("leader election")
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, watchRetryMax)
			continue
		}
		wait = watchRetryMin
	}
}

// term is one session: campaign, lead, resign.
func (e *Elector) term(ctx context.Context, lead func(context.Context)) error {
	gctx, cancel := context.WithTimeout(ctx, e.s.cfg.RequestTimeout)
	lease, err := e.s.cli.Grant(gctx, int64(e.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(lease.TTL)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	defer sess.Close()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
			stop()
		case <-lctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, e.key())
	if err := el.Campaign(lctx, e.name); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	lead(withFence(lctx, &fence{key: el.Key(), rev: el.Rev(), lost: ErrNotLeader}))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.s.cfg.RequestTimeout)
	defer cancel()
	if lctx.Err() != nil && ctx.Err() == nil {
		return errors.New("leadership lost: the lease expired")
	}
	return el.Resign(rctx)
}

// Leader returns the current leader's name, or "" if there is none.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	var name string
	err := e.s.call(ctx, nil, func(ctx context.Context) error {
		resp, err := e.s.cli.Get(ctx, e.key()+"/", clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			name = string(resp.Kvs[0].Value)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("leader: %w", err)
	}
	return name, nil
}
