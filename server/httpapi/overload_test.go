package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// contendedStore is a store whose transactions can be made to conflict
// every time (another writer always first) or to wait at a gate.
type contendedStore struct {
	store.Store
	conflict atomic.Bool
	mu       sync.Mutex
	gate     chan struct{} // when set, Txn waits for it to close
	entered  chan struct{} // receives once per Txn held at the gate
	txns     atomic.Int64  // Txn calls made
}

func (c *contendedStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	c.txns.Add(1)
	c.mu.Lock()
	gate, entered := c.gate, c.entered
	c.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		<-gate
	}
	if c.conflict.Load() {
		return 0, store.ErrConflict
	}
	return c.Store.Txn(ctx, conds, ops)
}

func statusOf(t *testing.T, err error) *api.StatusError {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v, want an HTTP answer", err)
	}
	return se
}

// TestContentionIs503: a write that conflicts on every retry is answered
// 503 with Retry-After (an overload answer for the agent), never 500, on
// the agent write routes; the spec validator checks the answers.
func TestContentionIs503(t *testing.T) {
	var cs *contendedStore
	f := startWith(t, t.TempDir(), func(s store.Store) store.Store { cs = &contendedStore{Store: s}; return cs }, 0)
	node := f.enroll("web-1", nil)
	ctx := context.Background()
	jt, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cs.conflict.Store(true)
	// (A confirm needs a published generation to reach its write; it goes
	// through the same commit and the same fail mapping.)
	calls := map[string]func() error{
		"report": func() error { return node.Report(ctx, "web-1", api.Report{State: api.AgentIdle}) },
		"enroll": func() error {
			_, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-2", JoinToken: jt.Token, AgentVersion: "test"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			before := cs.txns.Load()
			se := statusOf(t, call())
			if se.Status != http.StatusServiceUnavailable || se.Body.Code != api.CodeUnavailable || se.RetryAfter <= 0 || api.Overloaded(se) == nil {
				t.Fatalf("answer %d %+v retry-after %v, want 503 unavailable with Retry-After", se.Status, se.Body, se.RetryAfter)
			}
			if n := cs.txns.Load() - before; n < 2 {
				t.Fatalf("%d store transactions: the conflict was not retried", n)
			}
		})
	}
	cs.conflict.Store(false)
	if err := node.Report(ctx, "web-1", api.Report{State: api.AgentIdle}); err != nil {
		t.Fatalf("report once the contention is over: %v", err)
	}
}

// TestAgentWriteLimitIs429: with agent_write_limit 1 and one write held in
// the store, the next agent write is answered 429 with Retry-After at once
// (the store is not touched); reads are not limited; once the held write
// ends, writes go through again.
func TestAgentWriteLimitIs429(t *testing.T) {
	var cs *contendedStore
	f := startWith(t, t.TempDir(), func(s store.Store) store.Store { cs = &contendedStore{Store: s}; return cs }, 1)
	node := f.enroll("web-1", nil)
	ctx := context.Background()

	release, held := holdWriteSlot(cs, node)
	before := cs.txns.Load()

	for name, call := range map[string]func() error{
		"report": func() error { return node.Report(ctx, "web-1", api.Report{State: api.AgentIdle}) },
		"confirm": func() error {
			_, err := node.Confirm(ctx, "web-1", api.ConfirmRequest{ID: "sha256-" + sum(nil), Number: 1})
			return err
		},
		"enroll": func() error {
			_, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-2", JoinToken: "unused-join-token", AgentVersion: "test"})
			return err
		},
	} {
		se := statusOf(t, call())
		if se.Status != http.StatusTooManyRequests || se.Body.Code != api.CodeOverloaded || se.RetryAfter <= 0 || api.Overloaded(se) == nil {
			t.Fatalf("%s: answer %d %+v retry-after %v, want 429 overloaded with Retry-After", name, se.Status, se.Body, se.RetryAfter)
		}
	}
	if n := cs.txns.Load() - before; n != 0 {
		t.Fatalf("%d store transactions for shed writes", n)
	}
	if _, _, err := node.Desired(ctx, "web-1", "", 0); err != nil {
		t.Fatalf("a read while writes are full: %v", err)
	}

	release()
	if err := <-held; err != nil {
		t.Fatalf("the held report: %v", err)
	}
	if err := node.Report(ctx, "web-1", api.Report{State: api.AgentIdle}); err != nil {
		t.Fatalf("a report after the slot freed: %v", err)
	}
}

// TestAgentWriteQueuesBeforeShed: with agent_write_limit 1 and
// agent_write_wait set, a write that finds the slot taken waits for it and
// is served when it frees (no 429); one that waits longer than
// agent_write_wait is answered 429.
func TestAgentWriteQueuesBeforeShed(t *testing.T) {
	var cs *contendedStore
	f := startWait(t, t.TempDir(), func(s store.Store) store.Store { cs = &contendedStore{Store: s}; return cs }, 1, 300*time.Millisecond)
	node := f.enroll("web-1", nil)
	ctx := context.Background()
	release, held := holdWriteSlot(cs, node)
	queued := make(chan error, 1)
	go func() { queued <- node.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "queued"}) }()
	time.Sleep(100 * time.Millisecond) // the second write waits for the slot
	release()
	if err := <-held; err != nil {
		t.Fatalf("the held report: %v", err)
	}
	if err := <-queued; err != nil {
		t.Fatalf("a write queued while the slot was taken, the slot freed within agent_write_wait: %v, want it served", err)
	}

	release, held = holdWriteSlot(cs, node)
	start := time.Now()
	se := statusOf(t, node.Report(ctx, "web-1", api.Report{State: api.AgentIdle}))
	if se.Status != http.StatusTooManyRequests || se.RetryAfter <= 0 {
		t.Fatalf("a write waiting past agent_write_wait: %d %+v, want 429 with Retry-After", se.Status, se.Body)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("shed after %s, want it to wait agent_write_wait (300ms) first", waited)
	}
	release()
	if err := <-held; err != nil {
		t.Fatalf("the held report: %v", err)
	}
}

// holdWriteSlot makes a report of web-1 take the only agent write slot and
// wait inside the store until release; held gets its result.
func holdWriteSlot(cs *contendedStore, node *api.Client) (release func(), held <-chan error) {
	gate, entered := make(chan struct{}), make(chan struct{}, 16)
	cs.mu.Lock()
	cs.gate, cs.entered = gate, entered
	cs.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		done <- node.Report(context.Background(), "web-1", api.Report{State: api.AgentIdle, Outcome: "held"})
	}()
	<-entered // the report holds the only slot, inside the store
	cs.mu.Lock()
	cs.gate = nil // writes that enter later pass
	cs.mu.Unlock()
	return func() { close(gate) }, done
}
