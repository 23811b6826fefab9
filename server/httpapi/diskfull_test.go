package httpapi

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// fullStore fails every transaction as bbolt does when its file cannot
// grow: the write's ENOSPC, wrapped.
type fullStore struct {
	store.Store
	full atomic.Bool
}

func (f *fullStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if f.full.Load() {
		return 0, fmt.Errorf("commit: %w", &fs.PathError{Op: "write", Path: "/var/lib/slipway-server/store.db", Err: syscall.ENOSPC})
	}
	return f.Store.Txn(ctx, conds, ops)
}

// TestDiskFullIs503: a write the store refuses for lack of space is
// answered 503 with Retry-After and an error naming the cause (agents see
// an overloaded server, never a lost one), not 500; reads still answer;
// writes go through once there is room. (test/e2e's TestServerDiskFull
// does it with a real full file system.)
func TestDiskFullIs503(t *testing.T) {
	var fst *fullStore
	f := startWith(t, t.TempDir(), func(s store.Store) store.Store { fst = &fullStore{Store: s}; return fst }, 0)
	node := f.enroll("web-1", nil)
	ctx := context.Background()
	fst.full.Store(true)
	for name, call := range map[string]func() error{
		"report": func() error { return node.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "x"}) },
		"join token": func() error {
			_, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
			return err
		},
	} {
		se := statusOf(t, call())
		if se.Status != http.StatusServiceUnavailable || se.Body.Code != api.CodeUnavailable || se.RetryAfter <= 0 || api.Overloaded(se) == nil ||
			!strings.Contains(se.Body.Error, "disk is full") || !strings.Contains(se.Body.Error, "no space left on device") {
			t.Fatalf("%s: answer %d %+v retry-after %v, want 503 unavailable with Retry-After naming the full disk", name, se.Status, se.Body, se.RetryAfter)
		}
	}
	if _, err := f.admin.Nodes(ctx); err != nil {
		t.Fatalf("a read while the disk is full: %v", err)
	}
	fst.full.Store(false)
	if _, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{}); err != nil {
		t.Fatalf("a write once there is room: %v", err)
	}
}
