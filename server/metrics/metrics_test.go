package metrics

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"

	"github.com/slipway-dev/slipway/shared/metricshttp/metricstest"
)

// fakeFleet records how often it was read and answers what it is given.
type fakeFleet struct {
	mu       sync.Mutex
	nodes    []api.Node
	releases int
	err      error
	reads    int
}

func (f *fakeFleet) Nodes(context.Context) ([]api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.nodes, f.err
}

func (f *fakeFleet) Releases(context.Context) ([]api.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return make([]api.Release, f.releases), f.err
}

type fakeRollouts map[string]int

func (f fakeRollouts) RolloutCounts(context.Context) (map[string]int, error) { return f, nil }

// analysedRollouts also counts analysis measurements.
type analysedRollouts struct{ fakeRollouts }

func (analysedRollouts) AnalysisStats() (map[[2]string]uint64, map[string]float64) {
	return map[[2]string]uint64{{"errors", "successful"}: 4, {"errors", "failed"}: 1, {"latency", "inconclusive"}: 2},
		map[string]float64{"errors": 0.25}
}

func TestFleetMetrics(t *testing.T) {
	f := &fakeFleet{releases: 2, nodes: []api.Node{
		{Name: "web-1", State: api.NodeConverged, Desired: "sha256-a", Actual: "sha256-a", Liveness: api.LivenessAlive},
		{Name: "web-2", State: api.NodeFailed, Desired: "sha256-b", Actual: "sha256-a", Liveness: api.LivenessFailed},
		{Name: "web-3", State: api.NodeNew},
		{Name: "db-1", State: api.NodeConverged, Desired: "sha256-c", Actual: "sha256-c", Liveness: api.LivenessAlive},
	}}
	s := New(f)
	var logs strings.Builder
	hs := httptest.NewServer(s.Handler(zerolog.New(&logs)))
	defer hs.Close()

	fams := scrape(t, hs.URL)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"slipway_nodes", "state", "converged", 2},
		{"slipway_nodes", "state", "failed", 1},
		{"slipway_nodes", "state", "new", 1},
		{"slipway_nodes", "state", "offline", 0},
		{"slipway_nodes", "state", "drift", 0},
		{"slipway_nodes_by_liveness", "liveness", "alive", 2},
		{"slipway_nodes_by_liveness", "liveness", "failed", 1},
		{"slipway_nodes_by_liveness", "liveness", "suspect", 0},
		{"slipway_nodes_by_liveness", "liveness", "left", 0},
		{"slipway_nodes_by_liveness", "liveness", "unknown", 1}, // gossip never saw web-3
		{"slipway_node_desired_matches_actual", "node", "web-1", 1},
		{"slipway_node_desired_matches_actual", "node", "web-2", 0},
		{"slipway_node_desired_matches_actual", "node", "web-3", 1}, // nothing desired: nothing to miss
		{"slipway_releases_total", "", "", 2},
		{"slipway_rollouts", "state", "running", 0}, // no rollout engine yet
	} {
		if got := value(t, fams, c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	if got := len(fams["slipway_nodes"].GetMetric()); got != len(NodeStates) {
		t.Errorf("%d node states exported, want %d", got, len(NodeStates))
	}
	if got := len(fams["slipway_nodes_by_liveness"].GetMetric()); got != len(Livenesses) {
		t.Errorf("%d livenesses exported, want %d", got, len(Livenesses))
	}
	if fams["slipway_releases_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("slipway_releases_total is a %s", fams["slipway_releases_total"].GetType())
	}

	// The rollout engine plugs in its counts.
	s.SetRollouts(fakeRollouts{"running": 1, "paused": 2, "succeeded": 5})
	fams = scrape(t, hs.URL)
	for st, want := range map[string]float64{"running": 1, "paused": 2, "succeeded": 5} {
		if got := value(t, fams, "slipway_rollouts", "state", st); got != want {
			t.Errorf("slipway_rollouts{state=%q} = %v, want %v", st, got, want)
		}
	}

	if _, ok := fams["slipway_analysis_measurements_total"]; ok {
		t.Error("analysis measurements exported by a counter without them")
	}

	// The registry counts analysis measurements too.
	s.SetRollouts(analysedRollouts{fakeRollouts{"running": 1}})
	fams = scrape(t, hs.URL)
	for _, c := range []struct {
		gate, result string
		want         float64
	}{{"errors", "successful", 4}, {"errors", "failed", 1}, {"latency", "inconclusive", 2}} {
		if got := fams.MustValue(t, "slipway_analysis_measurements_total", map[string]string{"gate": c.gate, "result": c.result}); got != c.want {
			t.Errorf("slipway_analysis_measurements_total{gate=%q,result=%q} = %v, want %v", c.gate, c.result, got, c.want)
		}
	}
	if got := value(t, fams, "slipway_analysis_value", "gate", "errors"); got != 0.25 {
		t.Errorf("slipway_analysis_value{gate=errors} = %v", got)
	}
	if fams["slipway_analysis_measurements_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("slipway_analysis_measurements_total is a %s", fams["slipway_analysis_measurements_total"].GetType())
	}

	// Values are read at every scrape.
	f.mu.Lock()
	f.nodes[1].State, f.nodes[1].Actual = api.NodeConverged, "sha256-b"
	f.mu.Unlock()
	fams = scrape(t, hs.URL)
	if got := value(t, fams, "slipway_node_desired_matches_actual", "node", "web-2"); got != 1 {
		t.Errorf("web-2 converged but matches = %v", got)
	}

	// A store that fails: the fleet metrics are missing, the scrape is
	// still served, the error is logged.
	f.mu.Lock()
	f.err = errors.New("store: timeout")
	f.mu.Unlock()
	fams = scrape(t, hs.URL)
	if _, ok := fams["slipway_nodes"]; ok {
		t.Error("slipway_nodes served from a failing store")
	}
	if _, ok := fams["slipway_nodes_by_liveness"]; ok {
		t.Error("slipway_nodes_by_liveness served from a failing store")
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the whole scrape failed with the store")
	}
	if !strings.Contains(logs.String(), "store: timeout") {
		t.Errorf("scrape error not logged: %s", logs.String())
	}
}

func TestRequestMetrics(t *testing.T) {
	s := New(&fakeFleet{})
	s.ObserveRequest("GET /v1/nodes", 200, 30*time.Millisecond)
	s.ObserveRequest("GET /v1/nodes", 200, 40*time.Millisecond)
	s.ObserveRequest("GET /v1/nodes", 401, time.Millisecond)
	s.ObserveRequest(RouteUnmatched, 404, time.Millisecond)
	s.InFlight(1)
	s.InFlight(1)
	s.InFlight(-1)
	hs := httptest.NewServer(s.Handler(zerolog.Nop()))
	defer hs.Close()
	fams := scrape(t, hs.URL)
	count := func(route, code string) float64 {
		for _, m := range fams["slipway_http_requests_total"].GetMetric() {
			l := labels(m)
			if l["route"] == route && l["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
		return -1
	}
	if got := count("GET /v1/nodes", "200"); got != 2 {
		t.Errorf("GET /v1/nodes 200: %v", got)
	}
	if got := count("GET /v1/nodes", "401"); got != 1 {
		t.Errorf("GET /v1/nodes 401: %v", got)
	}
	if got := count("unmatched", "404"); got != 1 {
		t.Errorf("unmatched 404: %v", got)
	}
	for _, m := range fams["slipway_http_request_duration_seconds"].GetMetric() {
		if l := labels(m); l["route"] == "GET /v1/nodes" && l["code"] == "200" {
			if h := m.GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() < 0.069 || h.GetSampleSum() > 0.071 {
				t.Errorf("duration histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	if got := value(t, fams, "slipway_http_requests_in_flight", "", ""); got != 1 {
		t.Errorf("in flight %v", got)
	}
}

func TestListenTaken(t *testing.T) {
	s := New(&fakeFleet{})
	ep, err := Listen("127.0.0.1:0", s.Handler(zerolog.Nop()), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	if _, err := Listen(ep.Addr(), s.Handler(zerolog.Nop()), zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Fatalf("second Listen on %s: %v", ep.Addr(), err)
	}
}

func scrape(t *testing.T, url string) metricstest.Families { return metricstest.Scrape(t, url) }

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value is a series' value; label "" matches any series.
func value(t *testing.T, fams metricstest.Families, name, label, val string) float64 {
	t.Helper()
	var want map[string]string
	if label != "" {
		want = map[string]string{label: val}
	}
	return fams.MustValue(t, name, want)
}
