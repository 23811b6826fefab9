package api_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// answerServer answers every confirm with its status (200: confirmed) and
// counts the requests it got and the bodies.
type answerServer struct {
	*httptest.Server
	status     int
	retryAfter string
	jsonErr    bool
	hits       atomic.Int32
	mu         sync.Mutex
	bodies     []string
}

func newAnswerServer(t *testing.T, status int) *answerServer {
	s := &answerServer{status: status}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		s.mu.Unlock()
		if s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		switch {
		case s.status == http.StatusOK:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"confirmed":true}`)
		case s.jsonErr:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(s.status)
			_, _ = io.WriteString(w, `{"error":"the server is busy","code":"unavailable"}`)
		default:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(s.status)
			_, _ = io.WriteString(w, "<html>no server is available</html>")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// deadAddress is a loopback address nothing listens on.
func deadAddress(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func confirm(c *api.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Confirm(ctx, "web-1", api.ConfirmRequest{ID: "sha256-x", Number: 3})
	return err
}

// TestFailoverMovesOnAndSticks: a server that does not answer (refused,
// or a proxy's 502/504/bare 503) sends the request on to the next at once,
// with its body; the client then sticks to the one that answered.
func TestFailoverMovesOnAndSticks(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first func(t *testing.T) (url string, hits func() int32)
	}{
		{"refused", func(t *testing.T) (string, func() int32) { return deadAddress(t), func() int32 { return 0 } }},
		{"proxy 502", proxyAnswer(http.StatusBadGateway)},
		{"proxy 504", proxyAnswer(http.StatusGatewayTimeout)},
		{"proxy 503 without JSON or Retry-After", proxyAnswer(http.StatusServiceUnavailable)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first, firstHits := tt.first(t)
			second := newAnswerServer(t, http.StatusOK)
			var moves []api.Failover
			var mu sync.Mutex
			c, err := api.NewClientServers([]string{first, second.URL}, "tok", api.WithFailover(func(f api.Failover) {
				mu.Lock()
				moves = append(moves, f)
				mu.Unlock()
			}))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := confirm(c); err != nil {
					t.Fatalf("confirm %d: %v", i, err)
				}
			}
			if got := second.hits.Load(); got != 3 {
				t.Fatalf("second server got %d requests, want 3", got)
			}
			if got := firstHits(); got > 1 {
				t.Fatalf("first server got %d requests, want at most 1 (the client sticks to the second)", got)
			}
			if !strings.Contains(second.bodies[0], `"number":3`) {
				t.Fatalf("body at the second server %q, want the confirm request", second.bodies[0])
			}
			if len(moves) != 1 || moves[0].From != first || moves[0].To != second.URL || moves[0].Err == nil {
				t.Fatalf("failovers %+v, want one from %s to %s with a reason", moves, first, second.URL)
			}
			if got := c.Servers(); got[0] != second.URL {
				t.Fatalf("Servers() = %v, want the second first (in use)", got)
			}
		})
	}
}

func proxyAnswer(status int) func(t *testing.T) (string, func() int32) {
	return func(t *testing.T) (string, func() int32) {
		s := newAnswerServer(t, status)
		return s.URL, s.hits.Load
	}
}

// TestFailoverStaysOnAnswers: an answer of slipway-server, even 429 or 503
// with Retry-After (overload) or a 4xx, ends the call there: no other
// server is asked, and the error is the answer.
func TestFailoverStaysOnAnswers(t *testing.T) {
	for _, tt := range []struct {
		name       string
		status     int
		retryAfter string
		jsonErr    bool
		overloaded bool
	}{
		{"429 with Retry-After", http.StatusTooManyRequests, "3", true, true},
		{"503 with Retry-After and JSON", http.StatusServiceUnavailable, "2", true, true},
		{"503 with JSON, no Retry-After", http.StatusServiceUnavailable, "", true, true},
		{"503 with Retry-After, no JSON", http.StatusServiceUnavailable, "2", false, true},
		{"404", http.StatusNotFound, "", true, false},
		{"500", http.StatusInternalServerError, "", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first := newAnswerServer(t, tt.status)
			first.retryAfter, first.jsonErr = tt.retryAfter, tt.jsonErr
			second := newAnswerServer(t, http.StatusOK)
			c, err := api.NewClientServers([]string{first.URL, second.URL}, "tok")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				err = confirm(c)
				var se *api.StatusError
				if !errors.As(err, &se) || se.Status != tt.status {
					t.Fatalf("error %v, want the first server's %d", err, tt.status)
				}
				if got := api.Overloaded(err) != nil; got != tt.overloaded {
					t.Fatalf("Overloaded = %v, want %v", got, tt.overloaded)
				}
			}
			if first.hits.Load() != 3 || second.hits.Load() != 0 {
				t.Fatalf("hits first %d second %d, want 3 and 0", first.hits.Load(), second.hits.Load())
			}
		})
	}
}

// TestFailoverProxy503IsNotOverload: a bare 503 (a proxy without a server
// behind it) from the last server is not an overload answer: the agent
// treats it as no answer.
func TestFailoverProxy503IsNotOverload(t *testing.T) {
	a, b := newAnswerServer(t, http.StatusServiceUnavailable), newAnswerServer(t, http.StatusServiceUnavailable)
	c, err := api.NewClientServers([]string{a.URL, b.URL}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	err = confirm(c)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable || api.Overloaded(err) != nil {
		t.Fatalf("error %v (overloaded %v), want a 503 that is not overload", err, api.Overloaded(err) != nil)
	}
	if a.hits.Load() != 1 || b.hits.Load() != 1 {
		t.Fatalf("hits %d %d, want each server asked once", a.hits.Load(), b.hits.Load())
	}
}

// TestFailoverAllDown: every server refusing is an error naming how many
// were tried; the next call starts again with the next one.
func TestFailoverAllDown(t *testing.T) {
	c, err := api.NewClientServers([]string{deadAddress(t), deadAddress(t), deadAddress(t)}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	err = confirm(c)
	if err == nil || !strings.Contains(err.Error(), "no answer from 3 of 3 servers") {
		t.Fatalf("error %v, want one naming the 3 servers tried", err)
	}
	if api.Overloaded(err) != nil {
		t.Fatal("no answer is not overload")
	}
}

// TestFailoverHungServer: a server that accepts but does not answer
// within the request's deadline is left for the next call.
func TestFailoverHungServer(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	second := newAnswerServer(t, http.StatusOK)
	c, err := api.NewClientServers([]string{hung.URL, second.URL}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.Confirm(ctx, "web-1", api.ConfirmRequest{ID: "sha256-x", Number: 1})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first call: %v, want the deadline", err)
	}
	if err := confirm(c); err != nil || second.hits.Load() != 1 {
		t.Fatalf("second call: %v (second server hits %d), want it answered by the second server", err, second.hits.Load())
	}
}

// TestFailoverCancelStays: a caller that cancels does not move the client.
func TestFailoverCancelStays(t *testing.T) {
	started := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // the server notices the client leaving only after the body
		started <- struct{}{}
		<-r.Context().Done()
	}))
	defer slow.Close()
	second := newAnswerServer(t, http.StatusOK)
	c, err := api.NewClientServers([]string{slow.URL, second.URL}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if _, err := c.Confirm(ctx, "web-1", api.ConfirmRequest{ID: "sha256-x", Number: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want canceled", err)
	}
	if got := c.Servers()[0]; got != slow.URL || second.hits.Load() != 0 {
		t.Fatalf("in use %s, second hits %d: want the first still in use", got, second.hits.Load())
	}
}

// TestFailoverStreamBodyOneServer: a body that cannot be read twice (an
// upload from a stream) goes to one server only.
func TestFailoverStreamBodyOneServer(t *testing.T) {
	first := newAnswerServer(t, http.StatusBadGateway)
	second := newAnswerServer(t, http.StatusOK)
	c, err := api.NewClientServers([]string{first.URL, second.URL}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { _, _ = io.WriteString(pw, "blob"); pw.Close() }()
	err = c.PutBlob(context.Background(), "abc", pr, 4)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadGateway || second.hits.Load() != 0 {
		t.Fatalf("error %v, second hits %d: want the first's 502 and no resend", err, second.hits.Load())
	}
	if err := c.PutBlob(context.Background(), "abc", strings.NewReader("blob"), 4); err != nil || second.hits.Load() != 1 {
		t.Fatalf("next upload: %v (second hits %d), want it sent to the second", err, second.hits.Load())
	}
}

// TestNewClientServersErrors: no server, or a bad one, is an error naming
// which.
func TestNewClientServersErrors(t *testing.T) {
	if _, err := api.NewClientServers(nil, ""); err == nil {
		t.Fatal("no servers: want an error")
	}
	_, err := api.NewClientServers([]string{"http://a:1", "ftp://b"}, "")
	if err == nil || !strings.Contains(err.Error(), "server 2 of 2") || !strings.Contains(err.Error(), "ftp://b") {
		t.Fatalf("error %v, want one naming server 2 of 2", err)
	}
}

// TestRecordDialer: a name with several records is dialed record by
// record, starting with the one that answered last.
func TestRecordDialer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	// 127.0.0.2 refuses on this port (nothing listens there); 127.0.0.1 answers.
	records := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}
	var lookups atomic.Int32
	dial := api.NewRecordDialer(time.Second, func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host != "slipway.example" {
			t.Errorf("looked up %q", host)
		}
		lookups.Add(1)
		return records, nil
	})
	for i := range 2 {
		c, err := dial(context.Background(), "tcp", net.JoinHostPort("slipway.example", port))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if got := c.RemoteAddr().String(); got != l.Addr().String() {
			t.Fatalf("dial %d reached %s, want %s", i, got, l.Addr())
		}
		c.Close()
	}
	if _, err := dial(context.Background(), "tcp", net.JoinHostPort("slipway.example", "1")); err == nil || !strings.Contains(err.Error(), "2 address(es)") {
		t.Fatalf("all records refusing: %v, want an error naming 2 addresses", err)
	}
}

func TestStickyOrder(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("::1")
	for _, tt := range []struct {
		name string
		good netip.Addr
		want []netip.Addr
	}{
		{"none yet", netip.Addr{}, []netip.Addr{a, b, c}},
		{"middle", b, []netip.Addr{b, c, a}},
		{"last", c, []netip.Addr{c, a, b}},
		{"gone from the records", netip.MustParseAddr("10.0.0.9"), []netip.Addr{a, b, c}},
	} {
		if got := api.StickyOrder([]netip.Addr{a, b, c}, tt.good); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestFailoverThroughDialer: over the tailnet (WithDialer) every server's
// name reaches the dialer unresolved; a server whose node is not
// reachable is left for the next one, through the same dialer.
func TestFailoverThroughDialer(t *testing.T) {
	srv := newAnswerServer(t, http.StatusOK)
	var mu sync.Mutex
	var asked []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		asked = append(asked, addr)
		mu.Unlock()
		if addr != "slipway-b:80" {
			return nil, errors.New("no route to " + addr + " on the tailnet")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Listener.Addr().String())
	}
	c, err := api.NewClientServers([]string{"http://slipway-a", "http://slipway-b"}, "", api.WithDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := confirm(c); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(asked, []string{"slipway-a:80", "slipway-b:80"}) {
		t.Fatalf("dialer asked for %q, want slipway-a then slipway-b once (the connection is reused, the client sticks)", asked)
	}
}
