package daemon

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// replica is one more slipway-server in front of a fake's state (as
// servers share one store): it counts the requests it gets per route, and
// with busy set answers confirms 429 Retry-After 1 itself.
type replica struct {
	srv      *httptest.Server
	hits     atomic.Int32
	confirms atomic.Int32
	busy     atomic.Bool
	hang     atomic.Bool // confirms get no answer until the request ends
}

func newReplica(t *testing.T, f *fakeServer) *replica {
	r := &replica{}
	h := f.handler()
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		if strings.HasSuffix(req.URL.Path, "/confirm") {
			r.confirms.Add(1)
			if r.hang.Load() {
				_, _ = io.Copy(io.Discard, req.Body) // the server notices the client leaving only after the body
				<-req.Context().Done()
				return
			}
			if r.busy.Load() {
				w.Header().Set("Retry-After", "1")
				writeJSON(w, http.StatusTooManyRequests, api.Error{Error: "busy (replica)", Code: api.CodeOverloaded})
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.kill)
	return r
}

// kill takes the replica down: no listener, no connections.
func (r *replica) kill() {
	r.srv.CloseClientConnections()
	r.srv.Close()
}

// twoServers is a fake store behind two replicas and a node given both,
// in that order.
func twoServers(t *testing.T) (*fakeServer, *replica, *replica, *node) {
	srv := newFakeServer(t, joinToken)
	a, b := newReplica(t, srv), newReplica(t, srv)
	n := newNode(t, srv, "")
	n.cfg.Servers = []string{a.srv.URL, b.srv.URL}
	return srv, a, b, n
}

// closedAddress is a loopback address nothing listens on.
func closedAddress(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// TestFailoverFirstServerDown: with the first address dead the node
// enrols, switches and confirms through the second, and sticks to it.
func TestFailoverFirstServerDown(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway) // a proxy with nothing behind it
	}))
	defer proxy.Close()
	for _, tt := range []struct{ name, first string }{{"refused", closedAddress(t)}, {"proxy 502", proxy.URL}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, joinToken)
			b := newReplica(t, srv)
			n := newNode(t, srv, "")
			n.cfg.Servers = []string{tt.first, b.srv.URL}
			switchToFirst(t, n, srv)
			n.waitPolls(3)
			if got := strings.Count(n.logs.String(), "the server does not answer; using the next one"); got != 1 {
				t.Fatalf("%d failovers logged, want exactly one (sticky):\n%s", got, n.logs)
			}
		})
	}
}

// TestFailoverConfirmThroughSecond: the server in use dies in the confirm
// window; the confirm answered by the second server counts: no revert.
func TestFailoverConfirmThroughSecond(t *testing.T) {
	srv, a, b, n := twoServers(t)
	art, _ := switchToFirst(t, n, srv)
	if b.hits.Load() != 0 {
		t.Fatalf("the second server got %d requests while the first answered", b.hits.Load())
	}

	id2 := awaitingConfirm(t, srv, a, art, 3*time.Second)
	a.kill()
	srv.setNever(false)
	r := n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	if r.Current != 2 || r.LastGood != 2 || srv.failedFor(id2) || b.confirms.Load() == 0 {
		t.Fatalf("after the confirm: %+v (second server confirms %d)", r, b.confirms.Load())
	}
	if _, q := n.snap().Quarantined(id2); q {
		t.Fatal("reverted though the second server confirmed")
	}
}

// TestFailoverHungServerInWindow: the server in use accepts the confirm
// but never answers; each attempt may use only half the window left, so
// the second server is still asked in time: no revert. (The node's
// RequestTimeout, 5s, is longer than the 2s window.)
func TestFailoverHungServerInWindow(t *testing.T) {
	srv, a, b, n := twoServers(t)
	art, _ := switchToFirst(t, n, srv)

	a.hang.Store(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(2 * time.Second)
	id2 := srv.publish(m2, "r2-web")
	r := n.waitReport("idle on generation 2", func(r api.Report) bool {
		return r.CurrentID == id2 && r.State == api.AgentIdle || r.State == api.AgentFailed
	})
	if r.State != api.AgentIdle || r.Current != 2 || b.confirms.Load() == 0 {
		t.Fatalf("after the confirm window: %+v (second server confirms %d)", r, b.confirms.Load())
	}
}

// awaitingConfirm publishes generation 2 with confirm_timeout window and
// the fake not confirming, and waits until the node asks at replica at.
func awaitingConfirm(t *testing.T, srv *fakeServer, at *replica, art generation.Artifact, window time.Duration) string {
	t.Helper()
	srv.setNever(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(window)
	id2 := srv.publish(m2, "r2-web")
	before := at.confirms.Load()
	waitFor(t, "a confirm of generation 2 at the first server", func() bool { return at.confirms.Load() > before })
	return id2
}

// TestFailoverAllDownReverts: with every server gone the switch reverts
// after confirm_timeout, as with one.
func TestFailoverAllDownReverts(t *testing.T) {
	srv, a, b, n := twoServers(t)
	n.cfg.OverloadConfirmTimeout = time.Hour
	art, _ := switchToFirst(t, n, srv)

	id2 := awaitingConfirm(t, srv, a, art, 500*time.Millisecond)
	a.kill()
	b.kill()
	waitFor(t, "the revert", func() bool { _, ok := n.snap().Quarantined(id2); return ok && n.snap().Meta.Current == 1 })
	q, _ := n.snap().Quarantined(id2)
	if !strings.Contains(q.Reason, "no confirm from the server within confirm_timeout 500ms") || strings.Contains(q.Reason, "overload") {
		t.Fatalf("quarantine reason %q", q.Reason)
	}
}

// TestFailoverOverloadStays: the server in use answers confirms 429
// Retry-After 1 for longer than the confirm window (300ms): the node
// stays on it (no failover: the second server is never asked to
// confirm), does not revert, and confirms once it is no longer busy.
func TestFailoverOverloadStays(t *testing.T) {
	srv, a, b, n := twoServers(t)
	n.cfg.OverloadConfirmTimeout = time.Minute
	art, _ := switchToFirst(t, n, srv)

	a.busy.Store(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	before := a.confirms.Load()
	waitFor(t, "two busy answers (2 s with Retry-After 1, beyond the window)", func() bool { return a.confirms.Load() >= before+2 })
	if _, q := n.snap().Quarantined(id2); q || srv.failedFor(id2) {
		t.Fatal("reverted for an overloaded server")
	}
	a.busy.Store(false)
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	if got := b.hits.Load(); got != 0 {
		t.Fatalf("the second server got %d requests: an overloaded server is no reason to fail over", got)
	}
	if strings.Contains(n.logs.String(), "using the next one") {
		t.Fatal("a failover was logged for an overloaded server")
	}
}

// TestConfirmAttemptEnd: with several servers one confirm attempt may use
// at most half of the time left.
func TestConfirmAttemptEnd(t *testing.T) {
	now := time.Unix(1000, 0)
	end := now.Add(30 * time.Second)
	for _, tt := range []struct {
		name    string
		servers int
		timeout time.Duration
		want    time.Duration
	}{
		{"one server", 1, time.Minute, 15 * time.Second},
		{"one server, short timeout", 1, 10 * time.Second, 10 * time.Second},
		{"two servers", 2, time.Minute, 15 * time.Second},
		{"two servers, short timeout", 2, 5 * time.Second, 5 * time.Second},
	} {
		d := &Daemon{cfg: Config{Servers: make([]string, tt.servers), RequestTimeout: tt.timeout}}
		if got := d.confirmAttemptEnd(now, end).Sub(now); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
