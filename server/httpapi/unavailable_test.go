package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// downStore fails every call as the etcd store does when etcd has no
// quorum or cannot be reached.
type downStore struct {
	store.Store
	down atomic.Bool
}

func (d *downStore) err() error {
	return fmt.Errorf("etcd [http://10.0.0.1:2379]: %w: context deadline exceeded", store.ErrUnavailable)
}

func (d *downStore) Get(ctx context.Context, key string) (store.Entry, error) {
	if d.down.Load() {
		return store.Entry{}, d.err()
	}
	return d.Store.Get(ctx, key)
}

func (d *downStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if d.down.Load() {
		return 0, d.err()
	}
	return d.Store.Txn(ctx, conds, ops)
}

// TestStoreUnavailableIs503: while the store cannot be reached, reads and
// writes are answered 503 with Retry-After naming the cause (agents see an
// overloaded server and keep their generation), not 500; once it is back
// they succeed.
func TestStoreUnavailableIs503(t *testing.T) {
	var ds *downStore
	f := startWith(t, t.TempDir(), func(s store.Store) store.Store { ds = &downStore{Store: s}; return ds }, 0)
	node := f.enroll("web-1", nil)
	ctx := context.Background()
	ds.down.Store(true)
	for name, call := range map[string]func() error{
		"report": func() error { return node.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "x"}) },
		"node":   func() error { _, err := f.admin.Node(ctx, "web-1"); return err },
	} {
		se := statusOf(t, call())
		if se.Status != http.StatusServiceUnavailable || se.Body.Code != api.CodeUnavailable || se.RetryAfter <= 0 || api.Overloaded(se) == nil ||
			!strings.Contains(se.Body.Error, "store is unavailable") {
			t.Fatalf("%s: answer %d %+v retry-after %v, want 503 unavailable with Retry-After naming the store", name, se.Status, se.Body, se.RetryAfter)
		}
	}
	ds.down.Store(false)
	if err := node.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "x"}); err != nil {
		t.Fatalf("a report once the store is back: %v", err)
	}
}
