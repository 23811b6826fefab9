package longpoll

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

type connValue struct{}

// pollServer is a real http.Server on loopback whose /poll requests are
// held until woken (wake) or their ?wait passes, and whose other requests
// answer at once with the value the original ConnContext put in the
// connection's context.
type pollServer struct {
	t        *testing.T
	h        *Holder
	srv      *http.Server
	addr     string
	mu       sync.Mutex
	polls    []*Poll
	unheld   atomic.Int64
	answered atomic.Int64 // statuses seen by a Tracker's OnAnswer
}

func startPollServer(t *testing.T) *pollServer {
	t.Helper()
	ps := &pollServer{t: t, h: New(time.Second, zerolog.Nop())}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps.addr = ln.Addr().String()
	ps.srv = &http.Server{
		Handler:           ps,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connValue{}, "from ConnContext")
		},
	}
	ps.h.Attach(ps.srv)
	go func() { _ = ps.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ps.srv.Shutdown(ctx)
		_ = ps.h.Shutdown(ctx)
	})
	return ps
}

func (ps *pollServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, tr := Track(r.Context())
	tr.OnAnswer(func(int) { ps.answered.Add(1) })
	r = r.WithContext(ctx)
	if r.URL.Path != "/poll" {
		fmt.Fprint(w, r.Context().Value(connValue{}))
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	w.Header().Set("X-Before", "kept")
	p := Begin(w, r)
	if p == nil {
		ps.unheld.Add(1)
		w.WriteHeader(http.StatusTeapot)
		return
	}
	answer := answer
	if r.URL.Query().Get("panic") != "" {
		answer = func(context.Context, http.ResponseWriter, bool) { panic("answer broke") }
	}
	if r.URL.Query().Get("early") != "" {
		p.Wake()
	}
	ps.mu.Lock()
	ps.polls = append(ps.polls, p)
	ps.mu.Unlock()
	if !p.Hold(wait, answer) {
		ps.t.Error("Hold = false on an HTTP/1.1 connection")
	}
}

// answer: 200 "woke" when woken, 304 with an ETag otherwise.
func answer(ctx context.Context, w http.ResponseWriter, woke bool) {
	if ctx.Value(connValue{}) == nil {
		http.Error(w, "lost the request's context values", http.StatusInternalServerError)
		return
	}
	if !woke {
		w.Header().Set("ETag", `"same"`)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	fmt.Fprint(w, "woke")
}

func (ps *pollServer) wakeAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.polls {
		p.Wake()
	}
	ps.polls = nil
}

func (ps *pollServer) waitHeld(n int) {
	ps.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ps.h.Held() < n {
		if time.Now().After(deadline) {
			ps.t.Fatalf("%d polls held, want %d", ps.h.Held(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectAnswered checks that Tracker.OnAnswer ran exactly n times. An
// answer is recorded just after it is written: the client may read it
// first.
func (ps *pollServer) expectAnswered(n int64) {
	ps.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ps.answered.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a second record would come now
	if got := ps.answered.Load(); got != n {
		ps.t.Fatalf("OnAnswer ran %d times for %d held polls", got, n)
	}
}

func (ps *pollServer) url(path string) string { return "http://" + ps.addr + path }

func TestWokenPollAnswersAndKeepsTheConnection(t *testing.T) {
	ps := startPollServer(t)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := c.Get(ps.url("/poll?wait=30s"))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	ps.waitHeld(1)
	ps.wakeAll()
	resp := <-done
	if resp == nil {
		t.FailNow()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "woke" || resp.Header.Get("X-Before") != "kept" {
		t.Fatalf("answer = %d %q X-Before=%q, want 200 \"woke\" with the header set before Hold", resp.StatusCode, body, resp.Header.Get("X-Before"))
	}
	if ps.h.Held() != 0 {
		t.Fatalf("Held() = %d after the answer", ps.h.Held())
	}
	// The next request reuses the connection, now served by the twin, with
	// the original ConnContext's value.
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ps.url("/plain"), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !reused || string(body) != "from ConnContext" {
		t.Fatalf("next request: reused=%v body=%q, want the same connection and the ConnContext value", reused, body)
	}
	ps.expectAnswered(1)
}

func TestPollExpiresWithItsAnswer(t *testing.T) {
	ps := startPollServer(t)
	start := time.Now()
	resp, err := http.Get(ps.url("/poll?wait=100ms"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != `"same"` {
		t.Fatalf("answer = %d %q ETag=%q, want 304 without body, with the ETag", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("answered after %v, before the wait passed", took)
	}
}

func TestWakeBeforeHoldAnswersAtOnce(t *testing.T) {
	ps := startPollServer(t)
	resp, err := http.Get(ps.url("/poll?wait=1h&early=1"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "woke" {
		t.Fatalf("answer %q, want \"woke\": a Wake between Begin and Hold was lost", body)
	}
}

func TestRequestsThatCannotBeHeld(t *testing.T) {
	ps := startPollServer(t)
	for _, raw := range []string{
		"GET /poll?wait=1h HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		resp := rawRequest(t, ps.addr, raw)
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("%q: status %d, want the ordinary path's 418", strings.SplitN(raw, "\r\n", 2)[0], resp.StatusCode)
		}
	}
	if ps.unheld.Load() != 4 {
		t.Fatalf("%d requests not held, want 4", ps.unheld.Load())
	}
}

func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c := sendRaw(t, addr, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestPipelinedRequestClosesAfterTheAnswer(t *testing.T) {
	ps := startPollServer(t)
	// Two requests at once: net/http has read into the second when the
	// first is held.
	c := sendRaw(t, ps.addr, "GET /poll?wait=50ms HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
	expectClosingAnswer(t, c)
}

// expectClosingAnswer reads a 304 with Connection: close from c, and then
// the end of the connection.
func expectClosingAnswer(t *testing.T, c net.Conn) {
	t.Helper()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified || !resp.Close {
		t.Fatalf("status %d close=%v, want 304 with Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want the connection closed", err)
	}
}

// Held polls cost no goroutine and no net/http buffers each: hold many
// over raw connections (no client goroutines or buffers either), count the
// goroutines and weigh the heap.
func TestHeldPollsHoldNoGoroutines(t *testing.T) {
	ps := startPollServer(t)
	const n = 300
	heapBefore := liveHeap()
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = sendRaw(t, ps.addr, "GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	ps.waitHeld(n)
	time.Sleep(100 * time.Millisecond) // let the handlers' goroutines end
	if grew := runtime.NumGoroutine() - before; grew > n/10 {
		t.Fatalf("%d goroutines more with %d polls held, want (almost) none per poll", grew, n)
	}
	// net/http's buffers alone are 4 KiB (reader) + 4 KiB (writer) + 2 KiB
	// (response) per connection; what a held poll keeps is far less.
	perPoll := (liveHeap() - heapBefore) / n
	t.Logf("live heap per held poll (both ends of the connection): %d bytes", perPoll)
	if perPoll > 6<<10 {
		t.Fatalf("live heap grew %d bytes per held poll: something keeps net/http's connection buffers", perPoll)
	}
	ps.wakeAll()
	for i, c := range conns {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("conn %d: status %d", i, resp.StatusCode)
		}
	}
}

func TestShutdownAnswersHeldPollsAndCloses(t *testing.T) {
	ps := startPollServer(t)
	c := sendRaw(t, ps.addr, "GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\n\r\n")
	ps.waitHeld(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ps.h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	expectClosingAnswer(t, c)
	// After Shutdown nothing more is held.
	resp := rawRequest(t, ps.addr, "GET /poll?wait=1h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusTeapot {
		t.Fatalf("after Shutdown: status %d, want the ordinary path", resp.StatusCode)
	}
}

// Wakes racing with expiry answer each poll exactly once.
func TestWakeRacesExpiry(t *testing.T) {
	ps := startPollServer(t)
	const n = 50
	tr := &http.Transport{}
	defer tr.CloseIdleConnections() // else the server's Shutdown waits for them
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := c.Get(ps.url("/poll?wait=20ms"))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				ps.wakeAll()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	wg.Wait()
	close(stop)
	ps.expectAnswered(n)
}

func TestFirstRequestTimeout(t *testing.T) {
	for _, tt := range []struct {
		hdr, read, idle, want time.Duration
	}{
		{10 * time.Second, 30 * time.Second, 90 * time.Second, 100 * time.Second},
		{0, 30 * time.Second, 90 * time.Second, 120 * time.Second},
		{10 * time.Second, 0, 0, 0},
		{0, 0, 90 * time.Second, 0},
		{10 * time.Second, 5 * time.Second, 0, 15 * time.Second},
	} {
		s := &http.Server{ReadHeaderTimeout: tt.hdr, ReadTimeout: tt.read, IdleTimeout: tt.idle}
		if got := firstRequestTimeout(s); got != tt.want {
			t.Errorf("header %v read %v idle %v: %v, want %v", tt.hdr, tt.read, tt.idle, got, tt.want)
		}
	}
}

func liveHeap() int64 {
	runtime.GC()
	runtime.GC() // sync.Pool keeps its items one cycle more
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// An Answer that panics closes its connection and leaves the server
// serving (net/http is not there to recover it).
func TestPanickingAnswerClosesTheConnection(t *testing.T) {
	ps := startPollServer(t)
	c := sendRaw(t, ps.addr, "GET /poll?wait=10ms&panic=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Fatal("a response after the answer panicked, want the connection closed")
	}
	ps.expectAnswered(1)
	resp, err := http.Get(ps.url("/poll?wait=10ms"))
	if err != nil {
		t.Fatalf("the server after a panicking answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("status %d after a panicking answer, want 304", resp.StatusCode)
	}
}

// sendRaw opens a connection to addr, writes raw to it and returns it
// (closed when the test ends).
func sendRaw(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c
}
func TestCoalesceEndsLongWaitsOnATick(t *testing.T) {
	base := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		begin time.Duration // after base
		wait  time.Duration
		want  time.Duration
	}{
		{0, 55 * time.Second, 55 * time.Second},                              // already on a tick
		{300 * time.Millisecond, 55 * time.Second, 54700 * time.Millisecond}, // ends at base+55s
		{999 * time.Millisecond, 55 * time.Second, 54001 * time.Millisecond},
		{300 * time.Millisecond, 1500 * time.Millisecond, 1500 * time.Millisecond}, // short waits are kept
		{300 * time.Millisecond, 2 * time.Second, 1700 * time.Millisecond},
	} {
		got := coalesce(base.Add(tc.begin), tc.wait)
		if got != tc.want {
			t.Errorf("coalesce(+%s, %s) = %s, want %s", tc.begin, tc.wait, got, tc.want)
		}
		if got > tc.wait || got <= tc.wait-expiryTick {
			t.Errorf("coalesce(+%s, %s) = %s: not within a tick below the wait", tc.begin, tc.wait, got)
		}
	}
	// Polls begun within one tick of each other end together.
	a := base.Add(100 * time.Millisecond)
	b := base.Add(900 * time.Millisecond)
	if ea, eb := a.Add(coalesce(a, time.Minute)), b.Add(coalesce(b, time.Minute)); !ea.Equal(eb) {
		t.Errorf("polls begun at +100ms and +900ms end at %s and %s", ea, eb)
	}
}
