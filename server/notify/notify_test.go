package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// fakeOutbox records deliveries and prints its state.
type fakeOutbox struct {
	pending  []api.Notification
	done     []api.Notification
	recorded []string
}

func (f *fakeOutbox) PendingNotifications(_ context.Context, limit int) ([]api.Notification, error) {
	return append([]api.Notification(nil), f.pending[:min(limit, len(f.pending))]...), nil
}

func (f *fakeOutbox) RecordDelivery(_ context.Context, n api.Notification) error {
	for i := range f.pending {
		if f.pending[i].ID != n.ID {
			continue
		}
		f.recorded = append(f.recorded, fmt.Sprintf("%s %s attempts=%d", n.ID, n.Delivery, n.Attempts))
		if n.Delivery == api.DeliveryPending {
			f.pending[i] = n
		} else {
			f.pending = append(f.pending[:i], f.pending[i+1:]...)
			f.done = append(f.done, n)
		}
		return nil
	}
	return fmt.Errorf("notification %s is no longer pending", n.ID)
}

func (f *fakeOutbox) PruneNotifications(context.Context) error { return nil }

func (f *fakeOutbox) NotificationChanges(context.Context) <-chan struct{} { return nil }

// receiver is a webhook on 127.0.0.1 that answers with the statuses
// given, then 200, and records what it got.
type receiver struct {
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
	srv      *httptest.Server
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got, r.bodies = append(r.got, req), append(r.bodies, b)
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		w.WriteHeader(status)
		fmt.Fprint(w, http.StatusText(status))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func note(id, notifier, kind string) api.Notification {
	return api.Notification{ID: id, Notifier: notifier, Kind: kind, Time: t0, Rollout: "ro3", Release: "r4-web", Group: "role=web",
		State: api.RolloutReverted, Detail: "1 node(s) failed", Delivery: api.DeliveryPending, NextAttempt: t0}
}

func target(url, format string, secret string) Target {
	return Target{URL: url, Format: format, Secret: []byte(secret), Timeout: 5 * time.Second, MinBackoff: time.Second, MaxBackoff: 4 * time.Second, MaxAttempts: 4}
}

func TestDeliversSignedJSON(t *testing.T) {
	r := newReceiver(t)
	ob := &fakeOutbox{pending: []api.Notification{note("n7", "ops", api.NotifyReverted)}}
	w := &Worker{Outbox: ob, Targets: map[string]Target{"ops": target(r.srv.URL+"/hook", FormatJSON, "s3cret")}, Now: func() time.Time { return t0 }}
	if err := w.pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(r.got) != 1 || len(ob.done) != 1 || ob.done[0].Delivery != api.DeliveryDelivered || ob.done[0].Attempts != 1 || !ob.done[0].DeliveredAt.Equal(t0) {
		t.Fatalf("received %d, outbox %+v", len(r.got), ob)
	}
	req, body := r.got[0], r.bodies[0]
	if req.Header.Get(HeaderSignature) != Sign([]byte("s3cret"), body) || !strings.HasPrefix(req.Header.Get(HeaderSignature), "sha256=") ||
		req.Header.Get(HeaderDelivery) != "n7" || req.Header.Get(HeaderEvent) != api.NotifyReverted || req.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", req.Header)
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil || p.ID != "n7" || p.Kind != api.NotifyReverted || p.Rollout != "ro3" || p.Group != "role=web" || p.State != api.RolloutReverted {
		t.Fatalf("body %s: %v", body, err)
	}
	// The signature is HMAC-SHA256 of the body: a known vector.
	if got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog")); got != "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" {
		t.Fatalf("Sign = %s", got)
	}
}

func TestSlackText(t *testing.T) {
	r := newReceiver(t)
	n := note("n1", "chat", api.NotifyNodeFailed)
	n.Node, n.Detail = "web-2", "unit web.service failed"
	ob := &fakeOutbox{pending: []api.Notification{n}}
	w := &Worker{Outbox: ob, Targets: map[string]Target{"chat": target(r.srv.URL, FormatSlack, "")}, Now: func() time.Time { return t0 }}
	if err := w.pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `{"text":"slipway: node web-2 failed in rollout ro3 (release r4-web, role=web): unit web.service failed"}`
	if len(r.bodies) != 1 || string(r.bodies[0]) != want || r.got[0].Header.Get(HeaderSignature) != "" {
		t.Fatalf("body %q, signature %q; want %s and none", r.bodies, r.got[0].Header.Get(HeaderSignature), want)
	}
}

// A failing webhook is retried with doubling backoff, its later
// notifications wait behind it, another webhook's go on; after
// max_attempts it is given up.
func TestRetriesInOrderAndGivesUp(t *testing.T) {
	bad := newReceiver(t, 500, 502, 503, 500)
	good := newReceiver(t)
	ob := &fakeOutbox{pending: []api.Notification{note("n1", "bad", api.NotifyRolloutStarted), note("n2", "bad", api.NotifySucceeded), note("n3", "good", api.NotifySucceeded)}}
	now := t0
	w := &Worker{Outbox: ob, Targets: map[string]Target{"bad": target(bad.srv.URL, FormatJSON, "k"), "good": target(good.srv.URL, FormatJSON, "k")}, Now: func() time.Time { return now }}
	var waits []time.Duration
	for range 10 {
		if err := w.pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(ob.pending) == 0 {
			break
		}
		if next := ob.pending[0].NextAttempt; next.After(now) {
			waits = append(waits, next.Sub(now))
			now = next
		}
	}
	want := []string{"n1 pending attempts=1", "n3 delivered attempts=1", "n1 pending attempts=2", "n1 pending attempts=3", "n1 failed attempts=4", "n2 delivered attempts=1"}
	if fmt.Sprint(ob.recorded) != fmt.Sprint(want) {
		t.Fatalf("recorded %v\nwant %v", ob.recorded, want)
	}
	if fmt.Sprint(waits) != "[1s 2s 4s]" {
		t.Fatalf("waits %v, want [1s 2s 4s]", waits)
	}
	if f := ob.done[1]; f.ID != "n1" || f.LastError != "gave up after 4 attempts: HTTP 500: Internal Server Error" {
		t.Fatalf("given up: %+v", f)
	}
}

// An unreachable webhook's error does not show its URL (a Slack URL is
// its credential); a notifier no longer configured is given up.
func TestErrorsHideURLAndUnknownNotifier(t *testing.T) {
	r := newReceiver(t)
	url := r.srv.URL + "/services/T000/B000/XXXXSECRET"
	r.srv.Close()
	ob := &fakeOutbox{pending: []api.Notification{note("n1", "gone", api.NotifySucceeded), note("n2", "chat", api.NotifySucceeded)}}
	w := &Worker{Outbox: ob, Targets: map[string]Target{"chat": target(url, FormatSlack, "")}, Now: func() time.Time { return t0 }}
	if err := w.pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(ob.done) != 1 || ob.done[0].Delivery != api.DeliveryFailed || ob.done[0].LastError != `no [[notify]] named "gone" in the server's config any more` {
		t.Fatalf("unknown notifier: %+v", ob.done)
	}
	p := ob.pending[0]
	if p.Delivery != api.DeliveryPending || p.LastError == "" || strings.Contains(p.LastError, "XXXXSECRET") || strings.Contains(p.LastError, "/services/") {
		t.Fatalf("unreachable: %+v", p)
	}
}
