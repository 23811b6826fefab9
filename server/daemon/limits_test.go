package daemon

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// rawResponse reads one HTTP response from c (nil and the error when the
// server closed the connection first).
func rawResponse(c net.Conn) (*http.Response, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp, nil
}

// trickle writes msg one byte a second and reports how many bytes it
// wrote before the server closed the connection (len(msg): never).
func trickle(t *testing.T, c net.Conn, msg string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	for i := range len(msg) {
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			return i, time.Since(start)
		}
		// The server closing shows as a read of EOF (a write to a closed
		// peer may still succeed once).
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var b [512]byte
		if _, err := c.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return i + 1, time.Since(start)
		}
	}
	return len(msg), time.Since(start)
}

// TestSlowlorisCutOff: clients that trickle their headers, or their body,
// a byte a second are cut off after read_header_timeout or read_timeout,
// long before they would have finished: 50 at once (as in the review that
// found them left open), with no token.
func TestSlowlorisCutOff(t *testing.T) {
	s := startServeWith(t, "[limits]\nread_header_timeout = \"2s\"\nread_timeout = \"2s\"\n")
	headers := "GET /v1/nodes HTTP/1.1\r\nHost: slipway\r\nX-Slow: " + strings.Repeat("a", 30) + "\r\n\r\n"
	body := strings.Repeat("b", 30)
	for _, tc := range []struct {
		name, prefix, slow string
	}{
		{"headers", "", headers},
		{"body", "POST /v1/agent/enroll HTTP/1.1\r\nHost: slipway\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n", body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const clients = 50
			type cut struct {
				n    int
				took time.Duration
			}
			done := make(chan cut, clients)
			for range clients {
				go func() {
					c, err := net.Dial("tcp", s.addr)
					if err != nil {
						t.Error(err)
						done <- cut{}
						return
					}
					defer c.Close()
					if _, err := io.WriteString(c, tc.prefix); err != nil {
						t.Error(err)
					}
					n, took := trickle(t, c, tc.slow)
					done <- cut{n, took}
				}()
			}
			var longest time.Duration
			for range clients {
				c := <-done
				if c.n == len(tc.slow) {
					t.Errorf("the server took all %d bytes at a byte a second (%v)", c.n, c.took)
				}
				longest = max(longest, c.took)
			}
			t.Logf("%d clients trickling %d bytes at a byte a second: all cut off, the last after %v", clients, len(tc.slow), longest.Round(100*time.Millisecond))
		})
	}
}

// TestIdleKeepAliveClosed: a keep-alive connection idle for idle_timeout
// is closed by the server.
func TestIdleKeepAliveClosed(t *testing.T) {
	s := startServeWith(t, "[limits]\nidle_timeout = \"500ms\"\n")
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: slipway\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("healthz: %v %v (close %v)", resp, err, resp != nil && resp.Close)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	idle := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v, want EOF (closed by the server)", err)
	}
	t.Logf("idle connection closed after %v", time.Since(idle).Round(10*time.Millisecond))
}

// TestConnectionCaps: one connection over max_connections_per_address
// gets 429 with Retry-After and is closed; over max_connections, 503;
// when a connection closes, a new one is served again.
func TestConnectionCaps(t *testing.T) {
	for _, tc := range []struct {
		name, limits string
		status       int
		msg          string
	}{
		{"per address", "max_connections_per_address = 3\nper_address_exempt = []\n", http.StatusTooManyRequests, "too many open connections from your address (limit 3); try again"},
		{"total", "max_connections = 3\nmax_connections_per_address = 3\n", http.StatusServiceUnavailable, "the server has too many open connections (limit 3); try again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServeWith(t, "[limits]\n"+tc.limits)
			var held []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			// The server has accepted the three once one answers.
			get := func(c net.Conn) *http.Response {
				t.Helper()
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: slipway\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := rawResponse(c)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			if r := get(held[2]); r.StatusCode != http.StatusOK {
				t.Fatalf("third connection: %s", r.Status)
			}
			extra, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer extra.Close()
			r := get(extra)
			var e api.Error
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &e)
			if r.StatusCode != tc.status || r.Header.Get("Retry-After") != "1" || !r.Close || e.Error != tc.msg {
				t.Fatalf("fourth connection: %s Retry-After %q close %v %q, want %d Retry-After 1, closed, %q", r.Status, r.Header.Get("Retry-After"), r.Close, e.Error, tc.status, tc.msg)
			}
			limit := map[int]string{http.StatusTooManyRequests: "max_connections_per_address", http.StatusServiceUnavailable: "max_connections"}[tc.status]
			if got := metric(scrape(t, s.metrics), "slipway_http_limited_total", map[string]string{"limit": limit, "outcome": "answered"}); got != 1 {
				t.Fatalf("slipway_http_limited_total{limit=%q,outcome=answered} = %v, want 1", limit, got)
			}
			held[0].Close()
			waitFor(t, "a new connection served after one closed", func() bool {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					return false
				}
				defer c.Close()
				return get(c).StatusCode == http.StatusOK
			})
		})
	}
}

// TestLongPollOutlivesTimeouts: the desired long-poll and the event stream
// run far past read_timeout and write_timeout, also on a connection whose
// earlier request (a report) had those deadlines.
func TestLongPollOutlivesTimeouts(t *testing.T) {
	s := startServeWith(t, "[limits]\nread_timeout = \"200ms\"\nwrite_timeout = \"200ms\"\n")
	ctx := context.Background()
	c := s.enrolOver("http://"+s.addr, "web-1")
	if err := c.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d, changed, err := c.Desired(ctx, "web-1", "", 1500*time.Millisecond)
	if err != nil {
		t.Fatalf("long-poll past the timeouts: %v", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("long-poll returned after %v (%v %v): it did not wait", took, d, changed)
	}
	sctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	err = s.admin.StreamEvents(sctx, 0, func(api.Event) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("event stream past the timeouts ended with %v, want the caller's deadline", err)
	}
}

// TestBlobUploadLongerDeadline: a blob upload may take longer than
// read_timeout (blob_timeout and its size set its deadline); another body
// as slow is cut off.
func TestBlobUploadLongerDeadline(t *testing.T) {
	s := startServeWith(t, "[limits]\nread_timeout = \"300ms\"\nblob_timeout = \"10s\"\n")
	data := []byte(strings.Repeat("blob", 1024))
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(data[:100])
		time.Sleep(time.Second) // slower than read_timeout
		_, _ = pw.Write(data[100:])
		_ = pw.Close()
	}()
	req, err := http.NewRequest(http.MethodPut, "http://"+s.addr+"/v1/blobs/"+sha, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("slow blob upload: %s, want 204", resp.Status)
	}
}

// TestUnauthenticatedRateLimit: an enrolment flood from one address gets
// 429 with Retry-After once the burst is spent, before the store is
// asked; unauthenticated requests from it then get 429 too, while
// authenticated requests from the same address go on (and a forbidden one
// is still 403).
func TestUnauthenticatedRateLimit(t *testing.T) {
	s := startServeWith(t, "[limits]\nunauthenticated_burst = 5\nunauthenticated_rate = 0.01\n")
	node := s.enrolOver("http://"+s.addr, "web-1")
	post := func(path, token, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	var got []string
	for i := range 12 {
		r := post("/v1/agent/enroll", "", fmt.Sprintf(`{"name":"web-%d","join_token":"not-a-token","labels":{},"age_recipient":"","agent_version":"x"}`, i))
		got = append(got, fmt.Sprintf("%d/%s", r.StatusCode, r.Header.Get("Retry-After")))
	}
	want := "401/ 401/ 401/ 401/ 401/ 429/100 429/100 429/100 429/100 429/100 429/100 429/100"
	if strings.Join(got, " ") != want {
		t.Fatalf("enrol flood: %s\nwant %s", strings.Join(got, " "), want)
	}
	if r := post("/v1/rollouts/x/pause", "wrong-token-000000", "{}"); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("refused request after the flood: %s Retry-After %q, want 429 with Retry-After", r.Status, r.Header.Get("Retry-After"))
	}
	if _, err := s.admin.Nodes(context.Background()); err != nil {
		t.Fatalf("authenticated request from the flooding address: %v", err)
	}
	// 7 enrolments and the wrong token.
	if got := metric(scrape(t, s.metrics), "slipway_http_limited_total", map[string]string{"limit": "unauthenticated_rate", "outcome": "answered"}); got != 8 {
		t.Fatalf("slipway_http_limited_total{limit=unauthenticated_rate} = %v, want 8", got)
	}
	// Forbidden is not unauthenticated: the caller is known, and told so.
	if _, _, err := node.Desired(context.Background(), "web-2", "", 0); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("node web-1 asking for web-2 after the flood: %v, want 403", err)
	}
	evs, err := s.admin.Events(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range evs {
		if strings.HasSuffix(e.Action, ".denied") {
			denied++
		}
	}
	if denied > 6 {
		t.Fatalf("%d refusals audited, want at most the burst (5) and the 403: rate-limited ones are not", denied)
	}
}

// TestAgentSocketMode: the agent socket is made with agent_socket_mode
// (default 0660) whatever the umask, in agent_socket_group.
func TestAgentSocketMode(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  os.FileMode
	}{{"", 0o660}, {"agent_socket_mode = \"0600\"\nagent_socket_group = \"" + strconv.Itoa(os.Getgid()) + "\"\n", 0o600}} {
		t.Run(fmt.Sprintf("%o", tc.want), func(t *testing.T) {
			s := startServeWith(t, tc.extra)
			fi, err := os.Stat(filepath.Join(s.dir, "agent.sock"))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tc.want {
				t.Fatalf("agent.sock mode %v, want socket %v", fi.Mode(), tc.want)
			}
			if _, err := os.Stat(filepath.Join(s.dir, ".new.agent.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temporary socket left behind: %v", err)
			}
		})
	}
}

// TestMaxHeaderBytes: a request line and headers over max_header_bytes
// (the 900 KB paths of issue 14) get 431 from net/http, before any
// handler, audit or store.
func TestMaxHeaderBytes(t *testing.T) {
	s := startServeWith(t, "")
	resp, err := http.Get("http://" + s.addr + "/v1/nodes/" + strings.Repeat("n", 900<<10))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("900 KB path: %s, want 431", resp.Status)
	}
	evs, err := s.admin.Events(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(e.Action, "denied") || strings.Contains(e.Action, "refus") {
			t.Fatalf("the 431 was audited: %+v", e)
		}
	}
}
