package ui

import (
	"context"
	"sync"

	"github.com/slipway-dev/slipway/shared/api"
)

// tailSize is how many of the newest audit events the dashboard keeps to
// show (the audit page, a node's and a rollout's events); older ones are
// read with `slipway events --since`.
const tailSize = 10000

// tail is the newest events of the audit log, kept up to date by reading
// forward from the last one seen (the registry pages the log by seq, and
// reads only the entries asked for).
type tail struct {
	mu   sync.Mutex
	max  int
	last int64
	evs  []api.Event // oldest first
}

func newTail(max int) *tail { return &tail{max: max} }

// pager reads audit events after since.
type pager interface {
	Events(ctx context.Context, since int64, limit int) ([]api.Event, error)
}

// update reads the events appended since the last update.
func (t *tail) update(ctx context.Context, p pager) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		evs, err := p.Events(ctx, t.last, 1000)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		t.evs = append(t.evs, evs...)
		t.last = evs[len(evs)-1].Seq
		if n := len(t.evs) - t.max; n > 0 {
			t.evs = append(t.evs[:0:0], t.evs[n:]...)
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

// newest returns up to limit events that keep says to keep, newest first,
// with a seq below before (0: no bound), and the newest seq seen.
func (t *tail) newest(limit int, before int64, keep func(api.Event) bool) ([]api.Event, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []api.Event
	for i := len(t.evs) - 1; i >= 0 && len(out) < limit; i-- {
		ev := t.evs[i]
		if (before == 0 || ev.Seq < before) && keep(ev) {
			out = append(out, ev)
		}
	}
	return out, t.last
}
