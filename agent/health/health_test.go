package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/generation"
)

var (
	active     = UnitHealth{Healthy: true, State: "active (running)"}
	activating = UnitHealth{State: "activating (auto-restart)"}
	failed     = UnitHealth{Failed: true, State: "failed (Result=exit-code)"}
)

// step is a unit's state from `after` (since the fake was made) on.
type step struct {
	after time.Duration
	h     UnitHealth
	err   error
}

// fakeProbe answers from a script over time and records its calls.
type fakeProbe struct {
	mu     sync.Mutex
	start  time.Time
	script map[string][]step
	calls  map[string]int
}

func newFakeProbe(script map[string][]step) *fakeProbe {
	return &fakeProbe{start: time.Now(), script: script, calls: map[string]int{}}
}

func (f *fakeProbe) Probe(_ context.Context, unit string) (UnitHealth, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[unit]++
	steps, ok := f.script[unit]
	if !ok {
		return UnitHealth{}, fmt.Errorf("unknown unit %q", unit)
	}
	since, cur := time.Since(f.start), steps[0]
	for _, s := range steps {
		if since >= s.after {
			cur = s
		}
	}
	return cur.h, cur.err
}

func (f *fakeProbe) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("fakeProbe{calls: %v}", f.calls)
}

// eventually retries cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(msg)
		}
	}
}

// checkNoLeak fails t if the goroutine count does not fall back to before.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	n := 0
	eventually(t, 3*time.Second, func() bool { n = runtime.NumGoroutine(); return n <= before },
		fmt.Sprintf("goroutine leak: %d before Verify, still %d after", before, runtime.NumGoroutine()))
}

// server answers every request with status(n), n counting from 0.
func server(t *testing.T, status func(n int) int) string {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := status(int(n.Add(1) - 1))
		if code/100 == 3 {
			http.Redirect(w, r, "/elsewhere", code)
			return
		}
		w.WriteHeader(code)
		fmt.Fprint(w, strings.Repeat("x", 100<<10)) // more than the 64 KiB read
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/health"
}

func always(code int) func(int) int { return func(int) int { return code } }

func fast(c generation.Check) generation.Check {
	c.Interval = generation.Duration(10 * time.Millisecond)
	if c.Timeout == 0 {
		c.Timeout = generation.Duration(2 * time.Second)
	}
	return c
}

func httpCheck(name, url string) generation.Check {
	return fast(generation.Check{Name: name, Kind: generation.CheckHTTP, Target: url})
}

func tcpCheck(name, addr string) generation.Check {
	return fast(generation.Check{Name: name, Kind: generation.CheckTCP, Target: addr})
}

func execCheck(name string, argv ...string) generation.Check {
	return fast(generation.Check{Name: name, Kind: generation.CheckExec, Command: argv})
}

func unitCheck(name, unit string) generation.Check {
	return fast(generation.Check{Name: name, Kind: generation.CheckUnit, Target: unit})
}

func TestVerify(t *testing.T) {
	ok := server(t, always(200))
	unavailable := server(t, always(503))
	redirect := server(t, always(302))
	passTwiceThen500 := server(t, func(n int) int { return map[bool]int{true: 200, false: 500}[n < 2] })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := gone.Addr().String()
	gone.Close()

	slowTimeout := execCheck("slow", "/bin/sleep", "10")
	slowTimeout.Timeout = generation.Duration(50 * time.Millisecond)
	strict := httpCheck("strict", passTwiceThen500)
	strict.FailureThreshold = 2
	strictNoPass := httpCheck("strict", unavailable)
	strictNoPass.FailureThreshold = 1
	// Fails from the first request; its startup grace is 200ms.
	neverPasses := httpCheck("web-http", unavailable)
	neverPasses.InitialDelay = generation.Duration(200 * time.Millisecond)
	// Answers 503 five times, then 200: a slow starter inside its grace.
	slowStarter := httpCheck("slow", server(t, func(n int) int { return map[bool]int{true: 503, false: 200}[n < 5] }))
	slowStarter.FailureThreshold = 1
	slowStarter.InitialDelay = generation.Duration(5 * time.Second)
	// Passes twice then fails, with a grace longer than the test: the
	// first pass ends the grace.
	strictGrace := httpCheck("strict", server(t, func(n int) int { return map[bool]int{true: 200, false: 500}[n < 2] }))
	strictGrace.FailureThreshold = 2
	strictGrace.InitialDelay = generation.Duration(time.Minute)

	const long = 10 * time.Second // a deadline that fast failures must beat
	tests := []struct {
		name        string
		units       map[string][]step // started by the switch: in Spec.Units
		others      map[string][]step // probed only through unit checks
		checks      []generation.Check
		env         []string
		min         time.Duration
		deadline    time.Duration
		wantCheck   string // "" → healthy
		wantReason  string // substring of Failure.Reason
		minElapsed  time.Duration
		maxElapsed  time.Duration // 0 → no bound
		wantNoCheck bool          // *Failure with Check ""
	}{
		{
			name:  "healthy after min_healthy_time",
			units: map[string][]step{"web.service": {{h: active}}, "web.socket": {{h: active}}},
			checks: []generation.Check{
				httpCheck("web-http", ok), tcpCheck("web-tcp", ln.Addr().String()),
				execCheck("true", "/bin/true"), unitCheck("web-unit", "web.service"),
			},
			min: 100 * time.Millisecond, deadline: long,
			minElapsed: 100 * time.Millisecond, maxElapsed: 5 * time.Second,
		},
		{
			name:   "min_healthy_time 0 is healthy at first green",
			units:  map[string][]step{"web.service": {{h: active}}},
			checks: []generation.Check{httpCheck("web-http", ok)},
			min:    0, deadline: long, maxElapsed: 5 * time.Second,
		},
		{
			name: "nothing to check", deadline: long, maxElapsed: 5 * time.Second,
		},
		{
			name:  "green clock starts when the unit is up",
			units: map[string][]step{"web.service": {{h: activating}, {after: 100 * time.Millisecond, h: active}}},
			min:   100 * time.Millisecond, deadline: long,
			minElapsed: 200 * time.Millisecond, maxElapsed: 5 * time.Second,
		},
		{
			name: "exec env reaches the command",
			checks: []generation.Check{
				execCheck("env", "/bin/sh", "-c", `test "$SLIPWAY_HEALTH_TEST" = yes`),
			},
			env: []string{"SLIPWAY_HEALTH_TEST=yes"}, deadline: long, maxElapsed: 5 * time.Second,
		},
		{
			name:   "deadline names the failing check and its error",
			units:  map[string][]step{"web.service": {{h: active}}},
			checks: []generation.Check{httpCheck("web-http", unavailable), httpCheck("ok-http", ok)},
			min:    0, deadline: 200 * time.Millisecond,
			wantCheck: "web-http", wantReason: "GET " + unavailable + ": status 503",
			minElapsed: 200 * time.Millisecond,
		},
		{
			name:      "http redirect is not followed and fails",
			checks:    []generation.Check{httpCheck("web-http", redirect)},
			deadline:  200 * time.Millisecond,
			wantCheck: "web-http", wantReason: "status 302",
		},
		{
			name:      "tcp refused",
			checks:    []generation.Check{tcpCheck("web-tcp", closedAddr)},
			deadline:  200 * time.Millisecond,
			wantCheck: "web-tcp", wantReason: "connection refused",
		},
		{
			name:      "exec exit status",
			checks:    []generation.Check{execCheck("false", "/bin/false")},
			deadline:  200 * time.Millisecond,
			wantCheck: "false", wantReason: "exit status 1",
		},
		{
			name: "exec output in the reason",
			checks: []generation.Check{
				execCheck("script", "/bin/sh", "-c", "echo starting; echo boom >&2; exit 3"),
			},
			deadline:  200 * time.Millisecond,
			wantCheck: "script", wantReason: "exit status 3: starting\nboom",
		},
		{
			name: "exec output keeps the tail",
			checks: []generation.Check{
				execCheck("noisy", "/bin/sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; exit 2"),
			},
			deadline:  200 * time.Millisecond,
			wantCheck: "noisy", wantReason: "line 198\nline 199",
		},
		{
			name:      "exec timeout",
			checks:    []generation.Check{slowTimeout},
			deadline:  300 * time.Millisecond,
			wantCheck: "slow", wantReason: "timed out after 50ms",
		},
		{
			name:      "unit failed fails fast",
			units:     map[string][]step{"web.service": {{h: failed}}},
			checks:    []generation.Check{httpCheck("web-http", ok)},
			deadline:  long,
			wantCheck: "unit:web.service", wantReason: "failed (Result=exit-code)",
			maxElapsed: 5 * time.Second,
		},
		{
			name:      "unit failing after activating fails fast",
			units:     map[string][]step{"web.service": {{h: activating}, {after: 50 * time.Millisecond, h: failed}}},
			deadline:  long,
			wantCheck: "unit:web.service", wantReason: "failed",
			minElapsed: 50 * time.Millisecond, maxElapsed: 5 * time.Second,
		},
		{
			name:      "unit check failed fails fast",
			units:     map[string][]step{"web.service": {{h: active}}},
			others:    map[string][]step{"db.service": {{h: failed}}},
			checks:    []generation.Check{unitCheck("db", "db.service")},
			deadline:  long,
			wantCheck: "db", wantReason: "db.service: failed (Result=exit-code)",
			maxElapsed: 5 * time.Second,
		},
		{
			name:      "units are named before checks",
			units:     map[string][]step{"web.service": {{h: activating}}},
			checks:    []generation.Check{httpCheck("a-http", unavailable)},
			deadline:  200 * time.Millisecond,
			wantCheck: "unit:web.service", wantReason: "activating (auto-restart)",
		},
		{
			name:      "checks are named in name order",
			checks:    []generation.Check{httpCheck("b-http", unavailable), tcpCheck("a-tcp", closedAddr)},
			deadline:  200 * time.Millisecond,
			wantCheck: "a-tcp", wantReason: "connection refused",
		},
		{
			name:      "probe errors wait for the deadline",
			units:     map[string][]step{"web.service": {{err: errors.New("dbus gone")}}},
			deadline:  200 * time.Millisecond,
			wantCheck: "unit:web.service", wantReason: "probe: dbus gone",
			minElapsed: 200 * time.Millisecond,
		},
		{
			name:   "failure_threshold after a first pass fails fast",
			checks: []generation.Check{strict},
			min:    long, deadline: long,
			wantCheck: "strict", wantReason: "status 500",
			maxElapsed: 5 * time.Second,
		},
		{
			name:      "inside the startup grace only the deadline applies",
			checks:    []generation.Check{strictNoPass}, // default initial_delay 30s
			deadline:  300 * time.Millisecond,
			wantCheck: "strict", wantReason: "status 503",
			minElapsed: 300 * time.Millisecond,
		},
		{
			name:      "a check that never passes fails after initial_delay, before the deadline",
			checks:    []generation.Check{neverPasses},
			deadline:  long,
			wantCheck: "web-http", wantReason: "status 503",
			minElapsed: 200 * time.Millisecond, maxElapsed: 5 * time.Second,
		},
		{
			name:   "a slow starter passing inside its grace is healthy",
			checks: []generation.Check{slowStarter},
			min:    0, deadline: long, maxElapsed: 5 * time.Second,
		},
		{
			name:   "a first pass ends the grace",
			checks: []generation.Check{strictGrace},
			min:    long, deadline: long,
			wantCheck: "strict", wantReason: "status 500",
			maxElapsed: 5 * time.Second,
		},
		{
			name:  "green but not long enough at the deadline",
			units: map[string][]step{"web.service": {{h: active}}},
			min:   long, deadline: 200 * time.Millisecond,
			wantNoCheck: true, wantReason: "green for only",
		},
		{
			name:      "unknown check kind",
			checks:    []generation.Check{{Name: "odd", Kind: "smoke-signal", Target: "x"}},
			deadline:  long,
			wantCheck: "odd", wantReason: `unknown check kind "smoke-signal"`,
			maxElapsed: time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			script := maps.Clone(tt.units)
			maps.Copy(script, tt.others)
			probe := newFakeProbe(script)
			v := &Verifier{
				Probe:        probe.Probe,
				Log:          zerolog.New(&logs),
				UnitInterval: 10 * time.Millisecond,
				ExecEnv:      tt.env,
			}
			var units []string
			for u := range tt.units {
				units = append(units, u)
			}
			spec := Spec{Units: units, Checks: tt.checks, MinHealthyTime: tt.min, HealthyDeadline: tt.deadline}

			before := runtime.NumGoroutine()
			start := time.Now()
			err := v.Verify(context.Background(), spec)
			elapsed := time.Since(start)
			checkNoLeak(t, before)
			t.Logf("elapsed %s, %s, err: %v", elapsed, probe, err)

			if tt.wantCheck == "" && !tt.wantNoCheck {
				if err != nil {
					t.Fatalf("Verify: %v, want healthy\nlogs:\n%s", err, logs.String())
				}
				for u := range tt.units {
					if probe.calls[u] == 0 {
						t.Errorf("unit %s never probed", u)
					}
				}
			} else {
				f, ok := errors.AsType[*Failure](err)
				if !ok {
					t.Fatalf("Verify: %v, want a *Failure", err)
				}
				if !errors.Is(err, ErrUnhealthy) {
					t.Errorf("Verify: %v does not wrap ErrUnhealthy", err)
				}
				if f.Check != tt.wantCheck || !strings.Contains(f.Reason, tt.wantReason) {
					t.Errorf("Failure = {Check: %q, Reason: %q}, want {Check: %q, Reason containing %q}",
						f.Check, f.Reason, tt.wantCheck, tt.wantReason)
				}
				if len(f.Reason) > 1024 {
					t.Errorf("reason is %d bytes long, want a bounded tail", len(f.Reason))
				}
			}
			if elapsed < tt.minElapsed {
				t.Errorf("Verify returned after %s, want at least %s", elapsed, tt.minElapsed)
			}
			if tt.maxElapsed > 0 && elapsed > tt.maxElapsed {
				t.Errorf("Verify returned after %s, want at most %s", elapsed, tt.maxElapsed)
			}
		})
	}
}

// A check that fails after passing restarts the green clock; below its
// failure threshold it does not fail the generation.
func TestVerifyFlappingResetsGreenClock(t *testing.T) {
	const minHealthy = 150 * time.Millisecond
	var mu sync.Mutex
	var lastFail time.Time
	url := server(t, func(n int) int {
		if n >= 5 && n < 8 { // three failures after five passes
			mu.Lock()
			lastFail = time.Now()
			mu.Unlock()
			return 500
		}
		return 200
	})
	c := httpCheck("flappy", url)
	c.FailureThreshold = 10

	before := runtime.NumGoroutine()
	v := &Verifier{Log: zerolog.Nop(), UnitInterval: 10 * time.Millisecond}
	err := v.Verify(context.Background(), Spec{
		Checks: []generation.Check{c}, MinHealthyTime: minHealthy, HealthyDeadline: 10 * time.Second,
	})
	done := time.Now()
	checkNoLeak(t, before)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lastFail.IsZero() {
		t.Fatal("healthy before the check ever failed")
	}
	if green := done.Sub(lastFail); green < minHealthy {
		t.Errorf("healthy %s after the last failure, want at least %s", green, minHealthy)
	}
}

func TestVerifyContextCancel(t *testing.T) {
	slow := execCheck("slow", "/bin/sleep", "10")
	slow.Timeout = generation.Duration(time.Minute)
	probe := newFakeProbe(map[string][]step{"web.service": {{h: activating}}})
	v := &Verifier{Probe: probe.Probe, Log: zerolog.Nop(), UnitInterval: 10 * time.Millisecond}

	unavailable := server(t, always(503))

	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := v.Verify(ctx, Spec{
		Units:           []string{"web.service"},
		Checks:          []generation.Check{slow, httpCheck("web-http", unavailable)},
		HealthyDeadline: time.Minute,
	})
	elapsed := time.Since(start)
	checkNoLeak(t, before)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify: %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrUnhealthy) {
		t.Errorf("Verify: %v, cancellation must not read as unhealthy", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("Verify returned %s after start, want promptly after the 50ms cancel", elapsed)
	}
}

func TestVerifyProgressAndLogs(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []Progress
		logs bytes.Buffer
	)
	probe := newFakeProbe(map[string][]step{
		"web.service": {{h: activating}, {after: 50 * time.Millisecond, h: active}},
	})
	v := &Verifier{
		Probe:        probe.Probe,
		Log:          zerolog.New(&logs),
		UnitInterval: 10 * time.Millisecond,
		OnProgress: func(p Progress) {
			mu.Lock()
			seen = append(seen, p)
			mu.Unlock()
		},
	}
	err := v.Verify(context.Background(), Spec{
		Units:           []string{"web.service"},
		MinHealthyTime:  100 * time.Millisecond,
		HealthyDeadline: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("OnProgress never called")
	}
	if !slices.IsSortedFunc(seen, func(a, b Progress) int { return int(a.Elapsed - b.Elapsed) }) {
		t.Errorf("progress elapsed not increasing: %+v", seen)
	}
	if p := seen[0]; p.Green || p.Failing != "unit:web.service: activating (auto-restart)" {
		t.Errorf("first progress = %+v, want not green, failing unit:web.service", p)
	}
	if p := seen[len(seen)-1]; !p.Green || p.GreenFor <= 0 || p.Failing != "" {
		t.Errorf("last progress = %+v, want green for a while", p)
	}

	// Transitions only: one fail and one pass line for the unit, then the verdict.
	var lines []string
	for l := range strings.Lines(logs.String()) {
		lines = append(lines, l)
	}
	want := []string{
		`{"level":"warn","component":"health","err":"activating (auto-restart)","check":"unit:web.service","kind":"unit","result":"fail","message":"health check fail"}`,
		`{"level":"info","component":"health","check":"unit:web.service","kind":"unit","result":"pass","message":"health check pass"}`,
		`"message":"generation healthy"`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d log lines, want %d:\n%s", len(lines), len(want), logs.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("log line %d = %s, want it to contain %s", i, lines[i], w)
		}
	}
}

func TestFailureError(t *testing.T) {
	tests := []struct {
		name string
		in   *Failure
		want string
	}{
		{
			name: "check",
			in:   &Failure{Check: "web-http", Reason: "GET http://127.0.0.1:8080/health: connection refused", Elapsed: 2 * time.Minute},
			want: `health check "web-http" failing after 2m0s: GET http://127.0.0.1:8080/health: connection refused`,
		},
		{
			name: "unit",
			in:   &Failure{Check: "unit:web.service", Reason: "failed (Result=exit-code)", Elapsed: 1500 * time.Millisecond},
			want: `health check "unit:web.service" failing after 1.5s: failed (Result=exit-code)`,
		},
		{
			name: "no check",
			in:   &Failure{Reason: "green for only 1s of min_healthy_time 10s", Elapsed: 5 * time.Second},
			want: `generation unhealthy after 5s: green for only 1s of min_healthy_time 10s`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.in, ErrUnhealthy) {
				t.Error("does not unwrap to ErrUnhealthy")
			}
		})
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"short", []string{"a", "b"}, "ab"},
		{"one big write", []string{strings.Repeat("x", 1000) + "end"}, strings.Repeat("x", maxOutput-3) + "end"},
		{"many writes", slices.Repeat([]string{"0123456789"}, 100), strings.Repeat("0123456789", 52)[8:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tl tail
			for _, w := range tt.writes {
				if n, err := tl.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := string(tl.b); got != tt.want {
				t.Errorf("tail = %q (%d bytes), want %q", got, len(got), tt.want)
			}
		})
	}
}

// A short MinHealthyTime is honoured at once, not rounded up to the next
// unit poll.
func TestVerifyShortMinHealthyTimeDoesNotWaitForNextPoll(t *testing.T) {
	probe := newFakeProbe(map[string][]step{"web.service": {{h: active}}})
	v := &Verifier{Probe: probe.Probe, Log: zerolog.Nop(), UnitInterval: 2 * time.Second}
	start := time.Now()
	err := v.Verify(context.Background(), Spec{Units: []string{"web.service"}, MinHealthyTime: 5 * time.Millisecond, HealthyDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= time.Second {
		t.Fatalf("healthy after %s; the 2s poll interval was waited for", took)
	}
}
