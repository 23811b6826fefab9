package rollout

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// countingTicker counts Ticks; its channels are the test's to signal.
type countingTicker struct {
	mu              sync.Mutex
	ticks           []time.Time
	nodes, rollouts chan struct{}
}

func (c *countingTicker) Tick(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ticks = append(c.ticks, time.Now())
	return nil
}

func (c *countingTicker) Changes(context.Context) (nodes, rollouts <-chan struct{}) {
	return c.nodes, c.rollouts
}

func (c *countingTicker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ticks)
}

// TestEngineCoalescesChanges: a flood of node changes, and of rollout
// changes, makes one Tick per Coalesce at most (the last change is still
// stepped); a change after a quiet moment is stepped at once.
func TestEngineCoalescesChanges(t *testing.T) {
	c := &countingTicker{nodes: make(chan struct{}, 1), rollouts: make(chan struct{}, 1)}
	e := &Engine{Machine: c, Interval: time.Hour, Coalesce: 200 * time.Millisecond, Log: zerolog.Nop()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitTicks(t, c, 1) // the first, at start

	for _, ch := range []chan struct{}{c.nodes, c.rollouts} {
		before := c.count()
		flood := time.Now()
		for time.Since(flood) < time.Second {
			select {
			case ch <- struct{}{}:
			default:
			}
			time.Sleep(time.Millisecond)
		}
		waitTicks(t, c, c.count()) // the flood's last change is stepped
		// One second of changes, 200 ms apart at least: the one the
		// flood's start found due, five more, and the flood's last change
		// (without coalescing, one per change: hundreds).
		if n := c.count() - before; n < 3 || n > 7 {
			t.Fatalf("%d Ticks for a second of changes with Coalesce 200ms, want 3..7", n)
		}
	}

	time.Sleep(300 * time.Millisecond) // quiet: the last Tick is Coalesce ago
	before := c.count()
	start := time.Now()
	c.rollouts <- struct{}{}
	waitFor(t, func() bool { return c.count() >= before+1 })
	if d := time.Since(start); d > 150*time.Millisecond { // a wait of Coalesce would be 200 ms
		t.Fatalf("a change after a quiet moment was stepped after %s", d)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func waitTicks(t *testing.T, c *countingTicker, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d Ticks, want %d", c.count(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(250 * time.Millisecond) // and nothing pending
}
