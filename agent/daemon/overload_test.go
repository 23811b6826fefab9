package daemon

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// failedFor reports whether the node reported a failed switch to id.
func (f *fakeServer) failedFor(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reports {
		if r.State == api.AgentFailed && r.Target == id {
			return true
		}
	}
	return false
}

// TestOverloadedServerDoesNotRevert: a server that answers confirms 503 or
// 429 for longer than confirm_timeout (300ms) is reachable: the agent keeps
// asking and commits once the server confirms. minOverloads answers
// cover more than the window whatever the timing: with ConfirmInterval
// 20ms and BackoffMax 50ms (jittered ±10%) 15 waits take at least
// 18+36+13×45 ms = 639 ms; with Retry-After 1, two take 2 s.
func TestOverloadedServerDoesNotRevert(t *testing.T) {
	tests := []struct {
		name         string
		answer       overloadAnswer
		minOverloads int
	}{
		{"503 without a wait", overloadAnswer{Status: http.StatusServiceUnavailable, RetryAfter: "0"}, 15},
		{"429 Retry-After 1", overloadAnswer{Status: http.StatusTooManyRequests, RetryAfter: "1"}, 2},
		{"500", overloadAnswer{Status: http.StatusInternalServerError, RetryAfter: "0"}, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, joinToken)
			n := newNode(t, srv, srv.start())
			n.cfg.OverloadConfirmTimeout = time.Minute
			art, _ := switchToFirst(t, n, srv)

			srv.setOverloaded(&tt.answer)
			m2 := webManifest("2", art)
			m2.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
			id2 := srv.publish(m2, "r2-web")
			waitFor(t, "overload answers beyond the confirm window", func() bool { return srv.overloadCount() >= tt.minOverloads })
			if _, q := n.snap().Quarantined(id2); q || srv.failedFor(id2) {
				t.Fatal("reverted for an overloaded server")
			}
			srv.setOverloaded(nil)
			r := n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
			if r.Current != 2 || r.LastGood != 2 || srv.failedFor(id2) {
				t.Fatalf("after the confirm: %+v", r)
			}
			if !strings.Contains(n.logs.String(), "the server is overloaded") {
				t.Fatal("no overload answer logged")
			}
		})
	}
}

// TestUnreachableServerReverts: a server that goes away (closed port)
// after the switch reverts it after confirm_timeout, however long the
// overload bound: no answer is not an overload.
func TestUnreachableServerReverts(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.OverloadConfirmTimeout = time.Hour
	art, _ := switchToFirst(t, n, srv)
	_, _, _, _, before := srv.counts()

	srv.setNever(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(500 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	waitFor(t, "a confirm of generation 2", func() bool { _, _, _, _, c := srv.counts(); return c > before })
	srv.stop()
	waitFor(t, "the revert", func() bool { _, ok := n.snap().Quarantined(id2); return ok && n.snap().Meta.Current == 1 })
	q, _ := n.snap().Quarantined(id2)
	if !strings.Contains(q.Reason, "no confirm from the server within confirm_timeout 500ms") || strings.Contains(q.Reason, "overload") {
		t.Fatalf("quarantine reason %q", q.Reason)
	}
}

// TestOverloadedThenUnreachableReverts: overload answers, then no answer:
// the revert follows one confirm window after the last overload answer,
// not the overload bound.
func TestOverloadedThenUnreachableReverts(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.OverloadConfirmTimeout = time.Hour
	art, _ := switchToFirst(t, n, srv)

	srv.setOverloaded(&overloadAnswer{Status: http.StatusServiceUnavailable, RetryAfter: "0"})
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	waitFor(t, "overload answers beyond the confirm window", func() bool { return srv.overloadCount() >= 15 })
	srv.stop()
	waitFor(t, "the revert", func() bool { _, ok := n.snap().Quarantined(id2); return ok && n.snap().Meta.Current == 1 })
	q, _ := n.snap().Quarantined(id2)
	if !strings.Contains(q.Reason, "no confirm from the server within confirm_timeout 300ms") {
		t.Fatalf("quarantine reason %q", q.Reason)
	}
}

// TestOverloadBoundReverts: a server that answers only 503 reverts the
// switch at the overload bound, with a reason naming it.
func TestOverloadBoundReverts(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.OverloadConfirmTimeout = time.Second
	art, _ := switchToFirst(t, n, srv)

	srv.setOverloaded(&overloadAnswer{Status: http.StatusServiceUnavailable, RetryAfter: "0"})
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	r := n.waitReport("failed after the revert", func(r api.Report) bool { return r.State == api.AgentFailed })
	if r.Outcome != "reverted" || r.Target != id2 || r.Current != 1 ||
		!strings.Contains(r.Reason, "no confirm within overload_confirm_timeout 1s while the server answered overloaded") ||
		!strings.Contains(r.Reason, "HTTP 503") {
		t.Fatalf("report after the revert: %+v", r)
	}
}

// TestOverloadThenNoAnswerReason: overload answers, then attempts that get
// no answer (cut short by the confirm's end, as a loaded CI machine once
// did to TestOverloadBoundReverts): the reason names the last overload
// answer that kept the confirm going, and the last attempt's failure.
func TestOverloadThenNoAnswerReason(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.OverloadConfirmTimeout = time.Hour
	art, _ := switchToFirst(t, n, srv)

	srv.setOverloaded(&overloadAnswer{Status: http.StatusServiceUnavailable, RetryAfter: "0", StallAfter: 3})
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	r := n.waitReport("failed after the revert", func(r api.Report) bool { return r.State == api.AgentFailed })
	if srv.stallCount() == 0 {
		t.Fatal("no confirm was left unanswered")
	}
	if r.Outcome != "reverted" || r.Target != id2 || r.Current != 1 ||
		!strings.Contains(r.Reason, "while the server answered overloaded") ||
		!strings.Contains(r.Reason, "last overload answer: ") || !strings.Contains(r.Reason, "HTTP 503") ||
		!strings.Contains(r.Reason, "; last attempt: ") || !strings.Contains(r.Reason, "deadline exceeded") {
		t.Fatalf("report after the revert: %+v", r)
	}
}
