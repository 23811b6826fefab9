package daemon

// Leadership: with several servers on one etcd prefix, every server
// serves the agent and admin APIs (their writes are conditional
// transactions, safe from any server), and one elected leader runs the
// work that must run once: the rollout engine, audit and history pruning
// and the notification worker. Its writes are fenced (etcdstore.Elector):
// a deposed leader's write fails instead of applying. On bbolt the one
// server always leads.

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/metrics"
	"github.com/slipway-dev/slipway/server/notify"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
)

// elector is the etcd store's leader election (*etcdstore.Elector).
type elector interface {
	Run(ctx context.Context, lead func(ctx context.Context))
	Leader(ctx context.Context) (string, error)
}

// leadership runs the singleton work while this server leads.
type leadership struct {
	self    api.ServerName
	el      elector // nil: bbolt, always leader
	leading atomic.Bool
	m       *metrics.Server
	log     zerolog.Logger
}

// serverName is this server in /readyz and the election: its host name
// and the address its API listens on.
func serverName(addr string) api.ServerName {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return api.ServerName{Name: host, Address: addr}
}

// run campaigns (etcd) and runs work while this server leads, until ctx
// ends; on bbolt it runs work at once.
func (l *leadership) run(ctx context.Context, work func(ctx context.Context)) {
	if l.el == nil {
		l.set(true)
		work(ctx)
		return
	}
	l.el.Run(ctx, func(ctx context.Context) {
		l.set(true)
		l.log.Info().Msg("this server leads: it runs the rollout engine, pruning and the notification worker")
		work(ctx)
		l.set(false)
		if ctx.Err() != nil {
			l.log.Warn().Msg("this server no longer leads (its election lease ended or it is stopping)")
		}
	})
}

func (l *leadership) set(on bool) {
	l.leading.Store(on)
	l.m.Leading(on)
}

// ready is /readyz's leadership part.
func (l *leadership) ready(ctx context.Context) (api.Ready, error) {
	r := api.Ready{Server: &l.self, Leading: l.leading.Load()}
	if l.el == nil {
		r.Leader = &l.self
		return r, nil
	}
	v, err := l.el.Leader(ctx)
	if err != nil || v == "" {
		return r, err
	}
	var who api.ServerName
	if err := json.Unmarshal([]byte(v), &who); err != nil {
		who = api.ServerName{Name: v} // not a slipway-server's value
	}
	r.Leader = &who
	return r, nil
}

// campaignValue is what this server puts in the election: its name.
func campaignValue(self api.ServerName) string {
	b, _ := json.Marshal(self)
	return string(b)
}

// singletons is the work the leader runs.
type singletons struct {
	reg     *registry.Registry
	ros     *rollout.Machine
	targets map[string]notify.Target
	crash   rollout.CrashHook
	log     zerolog.Logger
}

// run runs the rollout engine, audit and history pruning and the
// notification worker until ctx ends, and waits for them.
func (s singletons) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.reg.RunAudit(ctx) })
	wg.Go(func() { s.reg.RunHistoryPrune(ctx, 0) })
	wg.Go(func() { _ = (&rollout.Engine{Machine: s.ros, Log: s.log}).Run(ctx) })
	wg.Go(func() { _ = (&notify.Worker{Outbox: s.reg, Targets: s.targets, Crash: s.crash, Log: s.log}).Run(ctx) })
	wg.Wait()
}

// startLeadership runs l with the singleton work in the background; the
// returned func stops it and waits (before the store closes).
func startLeadership(ctx context.Context, l *leadership, work singletons) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx, work.run) }()
	return func() { cancel(); <-done }
}
