package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// conflictAfter is a store that, when armed, lets left more transactions
// through and then conflicts every one.
type conflictAfter struct {
	store.Store
	armed atomic.Bool
	left  atomic.Int32
}

func (s *conflictAfter) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if s.armed.Load() && s.left.Add(-1) < 0 {
		return 0, fmt.Errorf("%w: forced by the test", store.ErrConflict)
	}
	return s.Store.Txn(ctx, conds, ops)
}

// TestCreateReleaseAnswersWhatItCommitted: a release whose first rollout
// step fails after the release was committed is answered as created (it
// was: a 503 made the CLI report a failure and a retry a 409), and the
// rollout engine publishes it on its next tick.
func TestCreateReleaseAnswersWhatItCommitted(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	st := &conflictAfter{Store: f.st}
	reg, ros := f.open(st)
	m1, id1 := registrytest.UnitManifest(t, "v1")
	st.left.Store(1) // the release's own transaction
	st.armed.Store(true)
	rel, err := ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1})
	st.armed.Store(false)
	if err != nil || rel.Rollout == "" {
		t.Fatalf("create with a failing first step: %+v %v", rel, err)
	}
	if _, err := reg.Release(f.ctx, rel.ID); err != nil {
		t.Fatalf("the release was not committed: %v", err)
	}
	if d, _ := reg.Desired(f.ctx, "web-1"); d != nil {
		t.Fatalf("published before the engine's tick: %+v", d)
	}
	must(t, ros.Tick(f.ctx))
	if d, err := reg.Desired(f.ctx, "web-1"); err != nil || d == nil || d.ID != id1 {
		t.Fatalf("after a tick: %+v %v", d, err)
	}
}

// conflictCounter counts the transactions the store refused for a
// condition.
type conflictCounter struct {
	store.Store
	conflicts atomic.Int32
}

func (s *conflictCounter) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	rev, err := s.Store.Txn(ctx, conds, ops)
	if errors.Is(err, store.ErrConflict) {
		s.conflicts.Add(1)
	}
	return rev, err
}

// TestCreateReleaseDoesNotRaceTheEngine: the release's first step and
// the engine's step of the same rollout, in one server, are taken one
// after the other; they used to compute the same first wave side by side,
// and one of them conflicted and computed it again (at 10,000 nodes,
// seconds of the deploy's busiest moment).
func TestCreateReleaseDoesNotRaceTheEngine(t *testing.T) {
	f := newFixture(t)
	for i := range 300 {
		f.enrol(fmt.Sprintf("web-%d", i), map[string]string{"role": fmt.Sprintf("g%d", i%3)})
	}
	st := &conflictCounter{Store: f.st}
	_, ros := f.open(st)
	ctx, cancel := context.WithCancel(f.ctx)
	engine := make(chan struct{})
	go func() { // the engine, ticking as fast as it can
		defer close(engine)
		for ctx.Err() == nil {
			_ = ros.Tick(ctx)
		}
	}()
	for i := range 3 { // one group each: no queue
		m, _ := registrytest.UnitManifest(t, fmt.Sprintf("v%d", i))
		req := api.CreateReleaseRequest{Name: fmt.Sprintf("web-%d", i), Target: fmt.Sprintf("role=g%d", i), Manifest: m}
		if _, err := ros.CreateRelease(f.ctx, "token:test", req); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-engine
	if n := st.conflicts.Load(); n != 0 {
		t.Fatalf("%d transactions conflicted: steps of one rollout ran side by side", n)
	}
}
