package httpapi

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestNotificationsList: the outbox is visible to viewers, newest first,
// with each notification's delivery state; a bad limit is 400.
func TestNotificationsList(t *testing.T) {
	f := startConfig(t, t.TempDir(), nil, 0, 0, rollout.Config{Notify: []rollout.NotifyRule{{Name: "ops"}, {Name: "db", Groups: []string{"role=db"}}}})
	ctx := context.Background()
	if ns, err := f.viewer.Notifications(ctx, 0); err != nil || len(ns) != 0 {
		t.Fatalf("before any rollout: %v, %v", ns, err)
	}
	f.enroll("web-1", map[string]string{"role": "web"})
	blob := []byte("x")
	must(t, f.deploy.PutBlob(ctx, sum(blob), bytes.NewReader(blob), 1))
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifestWith(blob, "v1")}); err != nil {
		t.Fatal(err)
	}
	ns, err := f.viewer.Notifications(ctx, 10)
	if err != nil || len(ns) != 1 {
		t.Fatalf("notifications %+v, %v; want the ops webhook's rollout.started", ns, err)
	}
	if n := ns[0]; n.ID != "n1" || n.Notifier != "ops" || n.Kind != api.NotifyRolloutStarted || n.Group != "role=web" || n.Delivery != api.DeliveryPending || n.Attempts != 0 {
		t.Fatalf("notification %+v", n)
	}
	if _, err := f.anon.Notifications(ctx, 0); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("anonymous: %v", err)
	}
	if _, err := f.viewer.Notifications(ctx, 1001); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("limit 1001: %v", err)
	}
}
