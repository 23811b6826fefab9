package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"

	"github.com/slipway-dev/slipway/shared/metricshttp/metricstest"
)

func TestRevertReason(t *testing.T) {
	ms := func(phases ...string) map[string]time.Duration {
		m := map[string]time.Duration{}
		for _, p := range phases {
			m[p] = time.Second
		}
		return m
	}
	tests := []struct {
		name        string
		o           activate.Outcome
		interrupted bool
		want        string
	}{
		{"unit job failed", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "revert"), Reason: `start bad.service: job result "failed"`}, false, ReasonUnitFailed},
		{"daemon-reload failed", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "revert"), Reason: "daemon-reload: connection closed"}, false, ReasonOther},
		{"unit failed while verifying", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "verify", "revert"), Reason: `health check "unit:web.service" failing after 1.2s: failed (Result=exit-code)`}, false, ReasonUnitFailed},
		{"http check red", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "verify", "revert"), Reason: `health check "web-http" failing after 2m0s: GET http://127.0.0.1:8080/health: status 503`}, false, ReasonHealthCheck},
		{"green too briefly", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "verify", "revert"), Reason: "generation unhealthy after 2m0s: green for only 1s of min_healthy_time 10s"}, false, ReasonHealthCheck},
		{"no confirm", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "verify", "confirm", "revert"), Reason: "no confirm from the server within confirm_timeout 30s: context deadline exceeded"}, false, ReasonNoConfirm},
		{"SIGTERM while confirming", activate.Outcome{Op: "switch", Timings: ms("stage", "switch", "verify", "confirm", "revert"), Reason: "no confirm: context canceled"}, true, ReasonInterrupted},
		{"found at start", activate.Outcome{Op: "recover", Timings: ms("revert"), Reason: "agent stopped during the units phase of the switch to generation 3 (pid 42)"}, false, ReasonInterrupted},
		{"no phases", activate.Outcome{Op: "switch", Reason: "?"}, false, ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RevertReason(tt.o, tt.interrupted); got != tt.want {
				t.Fatalf("RevertReason = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestObserveAndServe records outcomes, serves them on a real listener and
// reads them back with Prometheus' own text parser.
func TestObserveAndServe(t *testing.T) {
	now := time.Unix(1_700_000_000, 500_000_000)
	current, currentErr := 7, error(nil)
	a := New(Options{
		Current:    func() (int, error) { return current, currentErr },
		LastSwitch: time.Unix(1_600_000_000, 0),
		Now:        func() time.Time { return now },
	})
	var logs strings.Builder
	ep, err := Listen("127.0.0.1:0", a.Handler(zerolog.New(&logs)), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ep.Serve(ctx) }()
	url := "http://" + ep.Addr() + "/metrics"

	fams := scrape(t, url)
	for _, o := range []string{"switched", "unchanged", "reverted", "revert_failed", "rejected"} {
		if v := value(t, fams, "slipway_agent_switches_total", "outcome", o); v != 0 {
			t.Errorf("switches_total{outcome=%q} = %v before any switch", o, v)
		}
	}
	if v := value(t, fams, "slipway_agent_last_switch_timestamp_seconds"); v != 1_600_000_000 {
		t.Errorf("last switch seeded as %v", v)
	}
	if v := value(t, fams, "slipway_agent_current_generation"); v != 7 {
		t.Errorf("current generation %v", v)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	timings := func(sw, verify time.Duration, more ...string) map[string]time.Duration {
		m := map[string]time.Duration{"stage": time.Millisecond, "switch": sw, "verify": verify}
		for _, p := range more {
			m[p] = time.Second
		}
		return m
	}
	a.Observe(activate.Outcome{Op: "switch", Outcome: "switched", Timings: timings(300*time.Millisecond, 5*time.Second)}, false)
	a.Observe(activate.Outcome{Op: "switch", Outcome: "reverted", Timings: timings(200*time.Millisecond, 2*time.Second, "confirm", "revert"), Reason: "no confirm from the server"}, false)
	a.Observe(activate.Outcome{Op: "switch", Outcome: "revert-failed", Timings: timings(time.Second, 0, "revert"), Reason: `health check "unit:web.service" failing`}, false)
	a.Observe(activate.Outcome{Op: "switch", Outcome: "rejected", Timings: map[string]time.Duration{"stage": time.Millisecond}}, false)
	a.Observe(activate.Outcome{Op: "recover", Outcome: "reverted", Timings: map[string]time.Duration{"revert": time.Second}}, false)
	a.Observe(activate.Outcome{Op: "recover", Outcome: "rollback-undone", Timings: map[string]time.Duration{"revert": time.Second}}, false)
	a.Observe(activate.Outcome{Op: "recover", Outcome: "nothing-to-recover"}, false)
	a.Observe(activate.Outcome{Op: "switch"}, false) // refused before anything: not a switch
	current = 9

	fams = scrape(t, url)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"slipway_agent_switches_total", "outcome", "switched", 1},
		{"slipway_agent_switches_total", "outcome", "reverted", 1}, // the recover's revert ends a switch counted elsewhere
		{"slipway_agent_switches_total", "outcome", "revert_failed", 1},
		{"slipway_agent_switches_total", "outcome", "rejected", 1},
		{"slipway_agent_switches_total", "outcome", "unchanged", 0},
		{"slipway_agent_reverts_total", "reason", "no_confirm", 1},
		{"slipway_agent_reverts_total", "reason", "unit_failed", 1},
		{"slipway_agent_reverts_total", "reason", "interrupted", 2}, // the recover's revert and its undone rollback
		{"slipway_agent_reverts_total", "reason", "health_check", 0},
		{"slipway_agent_reverts_total", "reason", "other", 0},
		{"slipway_agent_switch_duration_seconds", "", "", 3}, // sample count
		{"slipway_agent_verify_duration_seconds", "", "", 3},
		{"slipway_agent_current_generation", "", "", 9},
		{"slipway_agent_last_switch_timestamp_seconds", "", "", 1_700_000_000.5},
	} {
		var got float64
		if c.label == "" {
			got = value(t, fams, c.name)
		} else {
			got = value(t, fams, c.name, c.label, c.value)
		}
		if got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	h := fams["slipway_agent_switch_duration_seconds"].GetMetric()[0].GetHistogram()
	if got, want := h.GetSampleSum(), 1.5; got != want {
		t.Errorf("switch duration sum %v, want %v", got, want)
	}

	// A failing state read fails that metric only; the rest is served.
	currentErr = errors.New("state.db: locked")
	fams = scrape(t, url)
	if _, ok := fams["slipway_agent_current_generation"]; ok {
		t.Error("current generation served although it could not be read")
	}
	if value(t, fams, "slipway_agent_switches_total", "outcome", "switched") != 1 {
		t.Error("other metrics lost with the failing one")
	}
	if !strings.Contains(logs.String(), "state.db: locked") {
		t.Errorf("scrape error not logged: %s", logs.String())
	}

	// Only /metrics is served.
	resp, err := http.Get("http://" + ep.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / = %s", resp.Status)
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("still serving after its context ended")
	}
}

func TestListenTaken(t *testing.T) {
	a := New(Options{})
	ep, err := Listen("127.0.0.1:0", a.Handler(zerolog.Nop()), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	_, err = Listen(ep.Addr(), a.Handler(zerolog.Nop()), zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "metrics_listen") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second Listen on %s: %v", ep.Addr(), err)
	}
}

func scrape(t *testing.T, url string) metricstest.Families { return metricstest.Scrape(t, url) }

// value is the value of the series of name with the given label pairs.
func value(t *testing.T, fams metricstest.Families, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	return fams.MustValue(t, name, want)
}
