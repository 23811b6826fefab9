// Package rollout drives rollouts: the Engine calls the registry's Tick
// whenever a node's record or a rollout changes (a routine report that
// only says the node is still there changes neither), and on a timer
// (deadlines, stagger, analysis windows). A tick costs what changed: the
// registry steps only active rollouts and looks again only at their nodes
// that changed. The registry persists every transition
// together with its effect (the desired generations it publishes) in one
// store transaction, so a server killed at any point resumes where it
// stood: no node is switched twice, none is skipped.
//
// The engine never talks to nodes. Only one engine may drive a store (one
// server; with etcd, the elected leader).
//
// The rules it drives (the registry implements them):
//   - Abort leaves no node on the release unless it confirmed it. Waves not
//     passed become aborted; nodes confirmed healthy keep the release;
//     every other node gets back the desired generation it had before the
//     rollout (none: cleared) and is marked aborted (failed ones stay
//     failed). A node in the middle of its switch is not interrupted: it
//     finishes or reverts that switch, reports what it runs, then follows
//     its desired generation back.
//   - A revert or rollback sends a node only to a generation it ran and
//     confirmed (recorded when the rollout reached it: its last good one);
//     a rollback where some node has none is refused, naming the nodes.
package rollout

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// ticker is the registry's part the engine needs; *registry.Registry has it.
type ticker interface {
	Tick(ctx context.Context) error
	Changes(ctx context.Context) (nodes, rollouts <-chan struct{})
}

// Engine advances rollouts.
type Engine struct {
	Reg      ticker
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
	nodes, rollouts := e.Reg.Changes(ctx)
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
		if err := e.Reg.Tick(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("advancing rollouts")
		}
		timer.Reset(interval)
	}
}
