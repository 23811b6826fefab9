package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/metrics"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"

	"github.com/slipway-dev/slipway/shared/metricshttp/metricstest"
)

// TestMetricsFromSwitches runs real switches through the fake server and
// reads the agent's metrics back with Prometheus' text parser: a switch,
// a revert for each of health_check, no_confirm and interrupted (SIGTERM
// while waiting for the confirm).
func TestMetricsFromSwitches(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	m := metrics.New(metrics.Options{Current: func() (int, error) {
		s, err := n.db.Snapshot()
		return s.Meta.Current, err
	}})
	var mu sync.Mutex
	var seen []string // op/outcome of every OnOutcome call
	n.cfg.OnOutcome = func(o activate.Outcome, interrupted bool) {
		mu.Lock()
		seen = append(seen, o.Op+"/"+o.Outcome)
		mu.Unlock()
		m.Observe(o, interrupted)
	}
	hs := httptest.NewServer(m.Handler(zerolog.Nop()))
	defer hs.Close()

	art, _ := switchToFirst(t, n, srv)
	fams := scrapeMetrics(t, hs.URL)
	if v := metricValue(t, fams, "slipway_agent_switches_total", "outcome", "switched"); v != 1 {
		t.Fatalf("switches_total{switched} = %v after the first switch", v)
	}
	if v := metricValue(t, fams, "slipway_agent_current_generation", "", ""); v != 1 {
		t.Fatalf("current generation %v", v)
	}
	if v := metricValue(t, fams, "slipway_agent_switch_duration_seconds", "", ""); v != 1 {
		t.Fatalf("%v switch durations observed", v)
	}
	if v := metricValue(t, fams, "slipway_agent_last_switch_timestamp_seconds", "", ""); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last switch at %v", v)
	}

	// A health check that never passes: reverted, health_check.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	m2 := webManifest("2", art)
	m2.Health = generation.Health{
		MinHealthyTime:  generation.Duration(time.Millisecond),
		HealthyDeadline: generation.Duration(300 * time.Millisecond),
		Checks:          []generation.Check{{Name: "port", Kind: "tcp", Target: closed.Addr().String(), Interval: generation.Duration(50 * time.Millisecond)}},
	}
	id2 := srv.publish(m2, "r2-web")
	n.waitReport("generation 2 reverted", func(r api.Report) bool { return r.State == api.AgentFailed && r.Target == id2 })

	// No confirm: reverted, no_confirm.
	srv.setNever(true)
	m3 := webManifest("3", art)
	m3.ConfirmTimeout = generation.Duration(300 * time.Millisecond)
	id3 := srv.publish(m3, "r3-web")
	n.waitReport("generation 3 reverted", func(r api.Report) bool { return r.State == api.AgentFailed && r.Target == id3 })

	// Stopped while waiting for the confirm: reverted, interrupted.
	m4 := webManifest("4", art)
	m4.ConfirmTimeout = generation.Duration(time.Minute)
	srv.publish(m4, "r4-web")
	_, _, _, _, confirms := srv.counts()
	waitFor(t, "confirm attempts for generation 4", func() bool { _, _, _, _, c := srv.counts(); return c >= confirms+2 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	fams = scrapeMetrics(t, hs.URL)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"slipway_agent_switches_total", "outcome", "switched", 1},
		{"slipway_agent_switches_total", "outcome", "reverted", 3},
		{"slipway_agent_switches_total", "outcome", "revert_failed", 0},
		{"slipway_agent_reverts_total", "reason", "health_check", 1},
		{"slipway_agent_reverts_total", "reason", "no_confirm", 1},
		{"slipway_agent_reverts_total", "reason", "interrupted", 1},
		{"slipway_agent_reverts_total", "reason", "unit_failed", 0},
		{"slipway_agent_switch_duration_seconds", "", "", 4},
		{"slipway_agent_verify_duration_seconds", "", "", 4},
		{"slipway_agent_current_generation", "", "", 1},
	} {
		got := metricValue(t, fams, c.name, c.label, c.value)
		if got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"recover/nothing-to-recover", "switch/switched", "switch/reverted", "switch/reverted", "switch/reverted"}; !slices.Equal(seen, want) {
		t.Errorf("OnOutcome calls %q, want %q", seen, want)
	}
}

// TestNotifyWatchdogFromStart: the watchdog is pinged from the start, also
// while enrolment waits for a server that is not there yet (that can take
// longer than WatchdogSec), and STOPPING=1 comes last.
func TestNotifyWatchdogFromStart(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	sock := filepath.Join(t.TempDir(), "server.sock")
	n := newNode(t, srv, "unix://"+sock)
	var mu sync.Mutex
	var states []string
	n.cfg.Watchdog = 60 * time.Millisecond
	n.cfg.Notify = func(s string) {
		mu.Lock()
		defer mu.Unlock()
		states = append(states, s)
	}
	count := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		c := 0
		for _, x := range states {
			if x == s {
				c++
			}
		}
		return c
	}
	n.start()
	waitFor(t, "enrolment retries", func() bool { return n.logs.count("cannot enrol yet") >= 2 })
	waitFor(t, "watchdog pings before enrolment", func() bool { return count("WATCHDOG=1") >= 5 })
	if count("READY=1") != 1 {
		t.Fatalf("READY=1 sent %d times", count("READY=1"))
	}
	if !strings.Contains(n.logs.String(), "cannot enrol yet") || strings.Contains(n.logs.String(), "enrolled;") {
		t.Fatal("enrolled although the server is not there")
	}
	srv.listenUnix(sock)
	n.waitReport("idle", func(r api.Report) bool { return r.State == api.AgentIdle })
	pings := count("WATCHDOG=1")
	waitFor(t, "watchdog pings after enrolment", func() bool { return count("WATCHDOG=1") >= pings+3 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	// Run waited for the watchdog goroutine before it sent STOPPING=1.
	mu.Lock()
	defer mu.Unlock()
	if last := states[len(states)-1]; last != "STOPPING=1" {
		t.Fatalf("last sd_notify state %q", last)
	}
}

func scrapeMetrics(t *testing.T, url string) metricstest.Families { return metricstest.Scrape(t, url) }

// metricValue is a series' value; label "" for a metric without labels.
func metricValue(t *testing.T, fams metricstest.Families, name, label, value string) float64 {
	t.Helper()
	var want map[string]string
	if label != "" {
		want = map[string]string{label: value}
	}
	return fams.MustValue(t, name, want)
}

// A confirmed NixOS switch whose boot default could not be set is not
// reported as "the node was not changed": the status keeps the outcome
// (boot-default-failed) and the daemon tries again.
func TestSettleBootDefaultFailedRetries(t *testing.T) {
	d := &Daemon{kick: make(chan struct{}, 1)}
	des := &api.Desired{ID: "sha256-" + strings.Repeat("1", 64)}
	o := activate.Outcome{Outcome: "boot-default-failed", From: 1, To: 2, Reason: "boot loader: exit status 1"}
	err := fmt.Errorf("generation 2: %w: exit status 1", activate.ErrBootDefault)
	if again := d.settle(context.Background(), zerolog.Nop(), des, o, err); !again {
		t.Fatal("settle did not ask to try again")
	}
	st := d.status()
	if st.State != api.AgentIdle || st.Outcome != "boot-default-failed" || st.Target != des.ID || !strings.Contains(st.Reason, "boot default") {
		t.Fatalf("status %+v", st)
	}
}
