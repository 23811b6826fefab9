package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestRolloutWaitsForWindowAndResumeNow: a release whose window is not
// open is waiting-window in the API with when it opens; resume without
// now is refused; resume with now starts it (audited).
func TestRolloutWaitsForWindowAndResumeNow(t *testing.T) {
	f := start(t, t.TempDir())
	ctx := context.Background()
	f.enroll("web-1", map[string]string{"role": "web"})
	blob := []byte("x")
	must(t, f.deploy.PutBlob(ctx, sum(blob), bytes.NewReader(blob), 1))
	// A one-minute window twelve hours from now: closed now.
	h := (time.Now().UTC().Hour() + 12) % 24
	win := fmt.Sprintf("* %02d:00-%02d:01 UTC", h, h)
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifestWith(blob, "v1"),
		Strategy: &api.Strategy{Windows: []string{"* 01:00-02:00 Mars/Olympus"}}}); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `unknown time zone "Mars/Olympus"`) {
		t.Fatalf("release with an unknown zone: %v", err)
	}
	rel, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifestWith(blob, "v1"), Strategy: &api.Strategy{Windows: []string{win}}})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := f.viewer.Rollout(ctx, rel.Rollout)
	if err != nil || ro.State != api.RolloutWaiting || ro.WindowOpensAt.IsZero() || !strings.Contains(ro.Reason, "waits for a maintenance window (the release's "+win+")") {
		t.Fatalf("rollout %+v, %v", ro, err)
	}
	if _, err := f.deploy.RolloutResume(ctx, rel.Rollout, api.RolloutResumeRequest{}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("resume without now of a waiting rollout: %v", err)
	}
	if _, err := f.viewer.RolloutResume(ctx, rel.Rollout, api.RolloutResumeRequest{Now: true}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer resumed with now: %v", err)
	}
	ro, err = f.deploy.RolloutResume(ctx, rel.Rollout, api.RolloutResumeRequest{Now: true})
	if err != nil || ro.State != api.RolloutRunning || ro.WindowOverride != 1 || !ro.WindowOpensAt.IsZero() {
		t.Fatalf("resume --now: %+v, %v", ro, err)
	}
	evs, err := f.viewer.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Action == "rollout.resume" && e.Actor == "token:ci" && e.Detail == "now: wave 1 may start outside the maintenance windows" {
			return
		}
	}
	t.Fatalf("no audited resume --now in %+v", evs)
}
