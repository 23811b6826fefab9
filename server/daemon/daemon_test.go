package daemon

import (
	"bytes"
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/shared/api"

	"github.com/slipway-dev/slipway/shared/metricshttp/metricstest"
)

const (
	adminToken = "test-admin-token-0123456789abcdef"
	newToken   = "test-admin-token-rotated-fedcba987"
)

// syncLog is a log sink safe for the server's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// states records sd_notify states (their first line).
type states struct {
	mu sync.Mutex
	s  []string
}

func (s *states) add(st string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s = append(s.s, strings.SplitN(st, "\n", 2)[0])
}

func (s *states) count(st string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.s {
		if x == st {
			n++
		}
	}
	return n
}

func (s *states) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.s) == 0 {
		return ""
	}
	return s.s[len(s.s)-1]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testServer is Serve running in the test with a config file in dir.
type testServer struct {
	t        *testing.T
	dir, cfg string
	addr     string
	metrics  string
	log      *syncLog
	notified *states
	reload   chan os.Signal
	cancel   context.CancelFunc
	done     chan error
	admin    *api.Client
	stopOnce sync.Once
	stopErr  error
	// clientOpts are the admin client's options (a CA file for HTTPS).
	clientOpts []api.ClientOption
}

func (s *testServer) writeConfig(extra string) {
	s.t.Helper()
	body := fmt.Sprintf("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nagent_socket = %q\nstate_dir = %q\n%s",
		filepath.Join(s.dir, "agent.sock"), filepath.Join(s.dir, "state"), extra)
	if err := os.WriteFile(s.cfg, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func tokenConfig(name, file string) string {
	return fmt.Sprintf("[[admin_token]]\nname = %q\nrole = \"admin\"\nfile = %q\n", name, file)
}

func startServe(t *testing.T) *testServer {
	t.Helper()
	return startServeWith(t, "")
}

// startServeWith starts Serve with extra config: top-level keys and
// sections, before the admin token.
func startServeWith(t *testing.T, extra string) *testServer {
	t.Helper()
	return startServeWithOpts(t, extra)
}

// startServeWithOpts is startServeWith with options for the admin client.
func startServeWithOpts(t *testing.T, extra string, clientOpts ...api.ClientOption) *testServer {
	t.Helper()
	dir := t.TempDir()
	s := &testServer{t: t, dir: dir, cfg: filepath.Join(dir, "server.toml"), log: &syncLog{}, notified: &states{}, reload: make(chan os.Signal, 1), done: make(chan error, 1), clientOpts: clientOpts}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(extra + tokenConfig("ops", filepath.Join(dir, "admin.token")))
	c, err := config.Load(s.cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	lv := &LogLevel{}
	lv.Set(zerolog.InfoLevel)
	log := LevelLogger(s.log, lv, "json")
	ready, metricsReady := make(chan string, 1), make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		s.done <- Serve(ctx, c, log, Options{
			Spec:         api.Spec,
			Ready:        func(a string) { ready <- a },
			MetricsReady: func(a string) { metricsReady <- a },
			Notify:       s.notified.add,
			Watchdog:     100 * time.Millisecond,
			Reload:       s.reload,
			Load:         func() (config.Server, error) { return config.Load(s.cfg, true) },
			Level:        lv,
		})
	}()
	select {
	case s.addr = <-ready:
	case err := <-s.done:
		t.Fatalf("Serve: %v\n%s", err, s.log)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	s.metrics = <-metricsReady
	scheme := "http://"
	if c.TLSCertFile != "" {
		scheme = "https://"
	}
	s.admin, err = api.NewClient(scheme+s.addr, adminToken, s.clientOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log)
		}
	})
	return s
}

// stop ends Serve as SIGTERM does and returns its error (once; the
// cleanup stops a server a test left running).
func (s *testServer) stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case s.stopErr = <-s.done:
		case <-time.After(ShutdownTimeout + 10*time.Second):
			s.stopErr = errors.New("Serve did not return")
		}
	})
	return s.stopErr
}

// doReload delivers a reload and waits until it is done (READY=1 after
// RELOADING=1).
func (s *testServer) doReload() {
	s.t.Helper()
	before := s.notified.count("READY=1")
	s.reload <- syscall.SIGHUP
	waitFor(s.t, "the reload", func() bool { return s.notified.count("READY=1") > before })
}

func scrape(t *testing.T, addr string) metricstest.Families {
	return metricstest.Scrape(t, "http://"+addr+"/metrics")
}

// metric returns the value of the series of name whose labels include
// want, or -1 if there is none.
func metric(fams metricstest.Families, name string, want map[string]string) float64 {
	if v, ok := fams.Value(name, want); ok {
		return v
	}
	return -1
}

// enrol enrols a node through the agent API on the agent socket and
// returns its client.
func (s *testServer) enrol(name string) *api.Client {
	s.t.Helper()
	return s.enrolOver("unix://"+filepath.Join(s.dir, "agent.sock"), name)
}

// enrolOver enrols a node through the agent API at server and returns its
// client.
func (s *testServer) enrolOver(server, name string, opts ...api.ClientOption) *api.Client {
	s.t.Helper()
	ctx := context.Background()
	jt, err := s.admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "10m"})
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := api.NewClient(server, "", opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	resp, err := c.Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: map[string]string{"role": "web"}})
	if err != nil {
		s.t.Fatal(err)
	}
	return c.WithToken(resp.NodeToken)
}

// TestServeOperations drives a real server: sd_notify and the watchdog,
// metrics after real actions (enrolment, reports, a release), a reload of
// admin tokens and log level that drops no request in flight, an invalid
// reload that changes nothing, and the graceful shutdown.
func TestServeOperations(t *testing.T) {
	s := startServe(t)
	ctx := context.Background()
	waitFor(t, "READY=1", func() bool { return s.notified.count("READY=1") == 1 })
	waitFor(t, "watchdog pings", func() bool { return s.notified.count("WATCHDOG=1") >= 3 })

	// Real actions: two nodes enrol, one reports, a release targets both.
	web1 := s.enrol("web-1")
	web2 := s.enrol("web-2")
	if err := web1.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	manifest := json.RawMessage(`{"name":"web","units":{"web.service":"[Service]\nExecStart=/bin/true\n"}}`)
	if _, err := s.admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifest}); err != nil {
		t.Fatal(err)
	}
	des, _, err := web1.Desired(ctx, "web-1", "", time.Second)
	if err != nil || des == nil {
		t.Fatalf("desired of web-1: %v %v", des, err)
	}
	bad, _ := api.NewClient("http://"+s.addr, "wrong-token-0123456789abcdef")
	if _, err := bad.Nodes(ctx); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	if resp, err := http.Get("http://" + s.addr + "/no/such/route"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /no/such/route: %v %v", resp, err)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + s.addr + p)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}

	fams := scrape(t, s.metrics)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"slipway_nodes", map[string]string{"state": "pending"}, 2}, // desired set, not reached yet
		{"slipway_nodes", map[string]string{"state": "converged"}, 0},
		{"slipway_node_desired_matches_actual", map[string]string{"node": "web-1"}, 0},
		{"slipway_node_desired_matches_actual", map[string]string{"node": "web-2"}, 0},
		{"slipway_releases_total", nil, 1},
		{"slipway_rollouts", map[string]string{"state": "running"}, 1}, // the release's rollout waits for the nodes
		{"slipway_http_requests_total", map[string]string{"route": api.RouteEnroll, "code": "200"}, 2},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteCreateJoinToken, "code": "201"}, 2},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteReport, "code": "204"}, 1},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteDesired, "code": "200"}, 1},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteNodes, "code": "401"}, 1},
		{"slipway_http_requests_total", map[string]string{"route": "unmatched", "code": "404"}, 1},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteHealthz, "code": "200"}, 1},
		{"slipway_http_request_duration_seconds", map[string]string{"route": api.RouteEnroll, "code": "200"}, 2},
	} {
		if got := metric(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// web-1 reaches the desired generation and says so.
	if err := web1.Report(ctx, "web-1", api.Report{State: api.AgentIdle, CurrentID: des.ID, Current: 1, LastGood: 1, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, s.metrics)
	if got := metric(fams, "slipway_node_desired_matches_actual", map[string]string{"node": "web-1"}); got != 1 {
		t.Errorf("web-1 on its desired generation, matches = %v", got)
	}

	t.Run("reload rotates admin tokens and log level without dropping requests", func(t *testing.T) {
		// A long-poll in flight across the reload.
		type result struct {
			d   *api.Desired
			err error
		}
		polled := make(chan result, 1)
		go func() {
			d, _, err := web1.Desired(ctx, "web-1", des.ETag(), 2*time.Second)
			polled <- result{d, err}
		}()
		waitFor(t, "the long-poll in flight, held without a goroutine", func() bool {
			fams := scrape(t, s.metrics)
			return metric(fams, "slipway_http_requests_in_flight", nil) >= 1 && metric(fams, "slipway_http_longpolls_held", nil) == 1
		})
		if err := os.WriteFile(filepath.Join(s.dir, "new.token"), []byte(newToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.writeConfig("log_level = \"debug\"\noffline_after = \"1h\"\n" + tokenConfig("rotated", filepath.Join(s.dir, "new.token")))
		s.doReload()
		if _, err := s.admin.Nodes(ctx); !errors.Is(err, api.ErrUnauthorized) {
			t.Fatalf("old token after the reload: %v", err)
		}
		rotated, _ := api.NewClient("http://"+s.addr, newToken)
		if _, err := rotated.Nodes(ctx); err != nil {
			t.Fatalf("new token after the reload: %v", err)
		}
		r := <-polled
		if r.err != nil || r.d != nil {
			t.Fatalf("long-poll across the reload: %+v %v", r.d, r.err)
		}
		logs := s.log.String()
		if !strings.Contains(logs, `"keys":["offline_after"]`) || !strings.Contains(logs, "take effect only when the server restarts") {
			t.Errorf("restart-only key not named:\n%s", logs)
		}
		if !strings.Contains(logs, `"level":"debug"`) {
			t.Errorf("no debug logs after log_level = debug")
		}
		if strings.Contains(logs, newToken) || strings.Contains(logs, adminToken) {
			t.Fatal("a token was logged")
		}
		s.admin = rotated

		// An invalid config: logged, nothing changes.
		s.writeConfig("log_level = \"error\"\nnot_a_key = 1\n")
		s.doReload()
		if !strings.Contains(s.log.String(), "reload: config rejected; keeping the running config") || !strings.Contains(s.log.String(), "not_a_key") {
			t.Errorf("rejected reload not logged")
		}
		if _, err := rotated.Nodes(ctx); err != nil {
			t.Fatalf("token lost by a rejected reload: %v", err)
		}
		// An unreadable token file: the running tokens stay.
		s.writeConfig(tokenConfig("gone", filepath.Join(s.dir, "missing.token")))
		s.doReload()
		if _, err := rotated.Nodes(ctx); err != nil {
			t.Fatalf("token lost by a reload with a missing token file: %v", err)
		}
	})

	t.Run("a held long-poll is woken by a new release", func(t *testing.T) {
		// The first release's rollout waits for web-2; end it to deploy again.
		ros, err := s.admin.Rollouts(ctx)
		if err != nil || len(ros) != 1 {
			t.Fatalf("rollouts: %v %v", ros, err)
		}
		if _, err := s.admin.RolloutAction(ctx, ros[0].ID, "abort"); err != nil {
			t.Fatal(err)
		}
		old, _, err := web2.Desired(ctx, "web-2", "", 0)
		if err != nil {
			t.Fatalf("desired of web-2: %v", err)
		}
		before := metric(scrape(t, s.metrics), "slipway_http_requests_total", map[string]string{"route": api.RouteDesired, "code": "200"})
		type result struct {
			d   *api.Desired
			err error
		}
		polled := make(chan result, 1)
		go func() {
			d, _, err := web2.Desired(ctx, "web-2", old.ETag(), time.Minute)
			polled <- result{d, err}
		}()
		waitFor(t, "the long-poll held", func() bool {
			return metric(scrape(t, s.metrics), "slipway_http_longpolls_held", nil) == 1
		})
		manifest := json.RawMessage(`{"name":"web","units":{"web.service":"[Service]\nExecStart=/bin/true\n# v2\n"}}`)
		if _, err := s.admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web-v2", Target: "role=web", Manifest: manifest}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-polled:
			if r.err != nil || r.d == nil || r.d.ETag() == old.ETag() {
				t.Fatalf("woken long-poll: %+v %v, want the new generation", r.d, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the held long-poll was not woken by the new release")
		}
		// Counted just after the answer is written: the client may read it
		// first.
		waitFor(t, "the answered long-poll counted", func() bool {
			return metric(scrape(t, s.metrics), "slipway_http_requests_total", map[string]string{"route": api.RouteDesired, "code": "200"}) >= before+1
		})
		fams := scrape(t, s.metrics)
		if got := metric(fams, "slipway_http_requests_total", map[string]string{"route": api.RouteDesired, "code": "200"}); got != before+1 {
			t.Errorf("desired 200s = %v after the answer, want %v: a held poll is counted once, when answered", got, before+1)
		}
		if got := metric(fams, "slipway_http_longpolls_held", nil); got != 0 {
			t.Errorf("slipway_http_longpolls_held = %v after the answer", got)
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		// A long-poll (1m) and an upload in flight when SIGTERM comes.
		cur, _, err := web1.Desired(ctx, "web-1", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		polled := make(chan error, 1)
		go func() {
			d, _, err := web1.Desired(ctx, "web-1", cur.ETag(), time.Minute)
			if err == nil && d != nil {
				err = fmt.Errorf("long-poll answered %+v", d)
			}
			polled <- err
		}()
		blob := bytes.Repeat([]byte("slipway "), 1<<16)
		sum := sha256.Sum256(blob)
		pr, pw := io.Pipe()
		uploaded := make(chan error, 1)
		go func() { uploaded <- s.admin.PutBlob(ctx, hex.EncodeToString(sum[:]), pr, int64(len(blob))) }()
		if _, err := pw.Write(blob[:1000]); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "both requests in flight", func() bool {
			return metric(scrape(t, s.metrics), "slipway_http_requests_in_flight", nil) >= 2
		})

		stopped := make(chan error, 1)
		start := time.Now()
		go func() { stopped <- s.stop() }()
		select {
		case err := <-polled:
			if err != nil {
				t.Fatalf("long-poll at shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the long-poll did not end at shutdown")
		}
		if s.notified.count("STOPPING=1") != 1 {
			t.Fatal("no STOPPING=1 at shutdown")
		}
		// The listeners closed before the long-poll ended.
		if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			t.Fatal("new connections accepted during shutdown")
		}
		if _, err := net.DialTimeout("unix", filepath.Join(s.dir, "agent.sock"), time.Second); err == nil {
			t.Fatal("agent socket still accepting during shutdown")
		}
		// The upload finishes after SIGTERM and is stored.
		if _, err := pw.Write(blob[1000:]); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		if err := <-uploaded; err != nil {
			t.Fatalf("upload in flight at shutdown: %v", err)
		}
		if err := <-stopped; err != nil {
			t.Fatalf("Serve after SIGTERM: %v", err)
		}
		if took := time.Since(start); took > ShutdownTimeout {
			t.Fatalf("shutdown took %s", took)
		}
		if _, err := net.DialTimeout("tcp", s.metrics, time.Second); err == nil {
			t.Fatal("metrics still served after Serve returned")
		}
		if s.notified.last() != "STOPPING=1" {
			t.Fatalf("last sd_notify state %q", s.notified.last())
		}
	})
}

// TestMetricsListenTaken: a taken metrics_listen fails the start with an
// error naming it, before READY.
func TestMetricsListenTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	c := config.Default()
	c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", l.Addr().String(), dir
	var notified states
	err = Serve(context.Background(), c, LevelLogger(io.Discard, &LogLevel{}, "json"), Options{Notify: notified.add})
	if err == nil || !strings.Contains(err.Error(), "metrics_listen") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Serve with a taken metrics_listen: %v", err)
	}
	if notified.count("READY=1") != 0 {
		t.Fatal("READY=1 sent although the start failed")
	}
}
