package rollout

import (
	"context"
	"time"

	"github.com/rs/zerolog"
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
type Engine struct {
	Machine  ticker
	Interval time.Duration // timer fallback (default 1s)
	Log      zerolog.Logger
}

// Run advances rollouts until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	log := e.Log.With().Str("component", "rollout").Logger()
	interval := e.Interval
	if interval <= 0 {
		interval = time.Second
	}
	nodes, rollouts := e.Machine.Changes(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-nodes:
		case <-rollouts:
		case <-timer.C:
		}
		if err := e.Machine.Tick(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("advancing rollouts")
		}
		timer.Reset(interval)
	}
}
