package rollout

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/ctxsleep"
)

// ticker is what the engine drives; *Machine has it.
type ticker interface {
	Tick(ctx context.Context) error
	Changes(ctx context.Context) (nodes, rollouts <-chan struct{})
}

// Engine advances rollouts: it calls the machine's Tick whenever a node's
// record or a rollout changes, and on a timer (deadlines, stagger,
// analysis windows). Only one engine may drive a store (one server; with
// etcd, the elected leader).
//
// Changes come in floods while a fleet switches (every agent reports and
// confirms within seconds, and each Tick that saw a node move writes its
// rollout, a change itself): they are taken together, one Tick per
// Coalesce at most, each observing every node that changed since the last
// one. The timer's Ticks are not delayed.
type Engine struct {
	Machine  ticker
	Interval time.Duration // timer fallback (default 1s)
	// Coalesce is the least time between two Ticks for changes (default
	// DefaultCoalesce; negative: none).
	Coalesce time.Duration
	Log      zerolog.Logger
}

// DefaultCoalesce is Engine.Coalesce's default: what it adds at most to a
// rollout's reaction to a node or an operator's action, against a step
// per write while 10,000 nodes switch.
const DefaultCoalesce = 100 * time.Millisecond

// Run advances rollouts until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	log := e.Log.With().Str("component", "rollout").Logger()
	interval := e.Interval
	if interval <= 0 {
		interval = time.Second
	}
	coalesce := e.Coalesce
	if coalesce == 0 {
		coalesce = DefaultCoalesce
	}
	nodes, rollouts := e.Machine.Changes(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-nodes:
		case <-rollouts:
		case <-timer.C:
			last = time.Time{}
		}
		if !spaced(ctx, last, coalesce) {
			return nil
		}
		last = time.Now()
		if err := e.Machine.Tick(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("advancing rollouts")
		}
		timer.Reset(interval)
	}
}

// spaced waits until coalesce has passed since the last Tick; false when
// ctx ended.
func spaced(ctx context.Context, last time.Time, coalesce time.Duration) bool {
	return ctxsleep.Sleep(ctx, coalesce-time.Since(last))
}
