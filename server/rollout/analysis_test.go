package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// fakeProm is a Prometheus HTTP API v1 that answers every instant query
// with the value its test sets: a number, "" for no data, or down for a
// 503. It records the queries.
type fakeProm struct {
	mu      sync.Mutex
	value   string
	down    bool
	queries []string
}

func (f *fakeProm) set(value string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.value, f.down = value, down
}

func (f *fakeProm) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}

func (f *fakeProm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, r.URL.Query().Get("query"))
	if f.down {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	result := "[]"
	if f.value != "" {
		result = fmt.Sprintf(`[{"metric":{"job":"web"},"value":[1700000000,%q]}]`, f.value)
	}
	fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":%s}}`, result)
}

// analysisSim is a sim of 4 nodes whose server asks fake for its gates.
func analysisSim(t *testing.T, fake *fakeProm) *sim {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	s := newSim(t, 0)
	s.prom = &analysis.Prometheus{URL: srv.URL}
	s.restart()
	return withNodes(t, s, 4)
}

func errorGate(count, failureLimit, errorLimit int) api.AnalysisGate {
	return api.AnalysisGate{Name: "errors", Query: `sum(rate(app_errors_total{instance=~"{{nodes}}",role="{{labels.role}}"}[1m]))`,
		Condition: "result < 0.05", Scope: api.ScopeAggregate, Interval: "5s", Count: count, FailureLimit: failureLimit, ConsecutiveErrorLimit: &errorLimit}
}

// deployGood puts v1 on every node with no gate: what a revert goes back to.
func deployGood(t *testing.T, s *sim) {
	t.Helper()
	rel, err := s.release(manifest("v1"), api.Strategy{}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.run(rel.Rollout, api.RolloutSucceeded)
}

func TestAnalysisGatePasses(t *testing.T) {
	fake := &fakeProm{value: "0.01"}
	s := analysisSim(t, fake)
	deployGood(t, s)
	v2 := manifest("v2")
	rel, err := s.release(v2, api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AnalysisGates: []api.AnalysisGate{errorGate(3, 0, 2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutReverted, api.RolloutFailed, api.RolloutPaused)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("%s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
	want := []string{
		`sum(rate(app_errors_total{instance=~"n1|n2",role="web"}[1m]))`,
		`sum(rate(app_errors_total{instance=~"n3|n4",role="web"}[1m]))`,
	}
	got := fake.seen()
	if len(got) != 6 || got[0] != want[0] || got[2] != want[0] || got[3] != want[1] || got[5] != want[1] {
		t.Fatalf("queries %q, want 3 × %q then 3 × %q", got, want[0], want[1])
	}
	if len(ro.AnalysisRuns) != 1 {
		t.Fatalf("runs %+v", ro.AnalysisRuns)
	}
	run := ro.AnalysisRuns[0]
	if run.Wave != 1 || run.Verdict != "passed" || run.Successful != 3 || len(run.Measurements) != 3 || run.Query != want[1] ||
		run.Measurements[0].Value == nil || *run.Measurements[0].Value != 0.01 {
		t.Fatalf("run %+v", run)
	}
	for i := 1; i < 3; i++ {
		if d := run.Measurements[i].At.Sub(run.Measurements[i-1].At); d < 5e9 {
			t.Errorf("measurements %d and %d %s apart, interval 5s", i-1, i, d)
		}
	}
	var passed []string
	for _, e := range s.events() {
		if strings.Contains(e, "rollout.analysis.passed") {
			passed = append(passed, e)
		}
	}
	if len(passed) != 2 || !strings.Contains(passed[0], `wave 1: analysis "errors" passed: 3 of 3 measurements successful`) {
		t.Errorf("rollout.analysis.passed events %q, want one per wave", passed)
	}
	counts, values := s.ros.AnalysisStats()
	if n := counts[[2]string{"errors", "successful"}]; n != 6 || len(counts) != 1 || values["errors"] != 0.01 {
		t.Errorf("stats %v %v", counts, values)
	}
}

func TestAnalysisGateFailureHaltsAndReverts(t *testing.T) {
	fake := &fakeProm{value: "0.01"}
	s := analysisSim(t, fake)
	deployGood(t, s)
	v1 := manifest("v1")
	fake.set("0.3", false) // the new release raises the error rate; its units are healthy
	v2 := manifest("v2")
	rel, err := s.release(v2, api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AutoRevert: true, AnalysisGates: []api.AnalysisGate{errorGate(3, 1, 2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutReverted, api.RolloutFailed, api.RolloutPaused)
	if ro.State != api.RolloutReverted || !strings.Contains(ro.Reason, `analysis "errors" failed: 2 of 2 measurements failed (failure_limit 1)`) ||
		!strings.Contains(ro.Reason, "auto_revert sent 2 node(s) back: n1, n2") {
		t.Fatalf("%s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
	if ro.Waves[0].State != api.WaveFailed || ro.Waves[1].State != api.WavePending || ro.Failures != 0 {
		t.Errorf("waves\n%s failures %d", describe(ro), ro.Failures)
	}
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if d := s.desired(n); d != v1.id {
			t.Errorf("%s desired %s, want v1 %s", n, d, v1.id)
		}
	}
	if s.seen["n3"][v2.id] != 0 {
		t.Errorf("the second wave was published")
	}
	if got := len(fake.seen()); got != 2 {
		t.Errorf("%d queries, want 2 (the gate fails at its second failed measurement)", got)
	}
	if _, err := s.release(v2, api.Strategy{}, false); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("deploying the release again: %v, want quarantined (ErrConflict)", err)
	}
}

func TestAnalysisGateInconclusivePausesThenResumes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value string
		down  bool
		why   string
	}{
		{"no data", "", false, "no data: the query returned no series"},
		{"prometheus down", "", true, "HTTP 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeProm{}
			s := analysisSim(t, fake)
			fake.set(tc.value, tc.down)
			rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AnalysisGates: []api.AnalysisGate{errorGate(2, 0, 2)}}, false)
			if err != nil {
				t.Fatal(err)
			}
			ro := s.run(rel.Rollout, api.RolloutPaused, api.RolloutSucceeded, api.RolloutFailed)
			if ro.State != api.RolloutPaused || !strings.Contains(ro.Reason, `analysis "errors" inconclusive: 3 measurements in a row without a result (consecutive_error_limit 2)`) ||
				!strings.Contains(ro.Reason, tc.why) || !strings.Contains(ro.Reason, "slipway rollout resume "+rel.Rollout) {
				t.Fatalf("%s (%s)", ro.State, ro.Reason)
			}
			if run := ro.AnalysisRuns[0]; run.Verdict != "inconclusive" || run.Inconclusive != 3 || run.Measurements[2].Value != nil {
				t.Fatalf("run %+v", run)
			}
			// Paused: no more queries.
			n := len(fake.seen())
			for range 20 {
				s.tick()
			}
			if got := len(fake.seen()); got != n {
				t.Fatalf("%d queries while paused", got-n)
			}
			fake.set("0", false)
			if _, err := s.ros.RolloutAction(context.Background(), "token:test", rel.Rollout, "resume"); err != nil {
				t.Fatal(err)
			}
			ro = s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutPaused, api.RolloutFailed)
			if ro.State != api.RolloutSucceeded {
				t.Fatalf("after resume: %s (%s)", ro.State, ro.Reason)
			}
		})
	}
}

// A server restarted in the middle of a wave's analysis measures on from
// the measurements its rollout recorded: the gate still takes count
// measurements in all, at its interval.
func TestAnalysisSurvivesRestart(t *testing.T) {
	fake := &fakeProm{value: "0"}
	s := analysisSim(t, fake)
	rel, err := s.release(manifest("v1"), api.Strategy{AnalysisGates: []api.AnalysisGate{errorGate(4, 0, 2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	for len(fake.seen()) < 2 {
		s.tick()
	}
	s.restart() // the second measurement is lost in flight
	ro, err := s.ros.Rollout(context.Background(), rel.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	if ro.Waves[0].State != api.WaveAnalysing || len(ro.AnalysisRuns) != 1 || ro.AnalysisRuns[0].Successful != 1 {
		t.Fatalf("before the restart the rollout recorded %+v\n%s", ro.AnalysisRuns, describe(ro))
	}
	ro = s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutPaused, api.RolloutFailed)
	run := ro.AnalysisRuns[0]
	if ro.State != api.RolloutSucceeded || run.Successful != 4 || len(run.Measurements) != 4 {
		t.Fatalf("%s (%s) %+v", ro.State, ro.Reason, run)
	}
	if got := len(fake.seen()); got != 5 {
		t.Errorf("%d queries, want 5 (4 recorded, 1 lost in the restart)", got)
	}
}

func TestAnalysisNeedsPrometheus(t *testing.T) {
	s := newSim(t, 1)
	_, err := s.release(manifest("v1"), api.Strategy{AnalysisGates: []api.AnalysisGate{errorGate(2, 0, 2)}}, false)
	if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), "set [prometheus] url in server.toml") {
		t.Fatalf("deploy with a gate on a server without Prometheus: %v", err)
	}
	bad := errorGate(2, 0, 2)
	bad.Condition = "errors < 1"
	s.prom = &analysis.Prometheus{URL: "http://127.0.0.1:1"}
	s.restart()
	_, err = s.release(manifest("v1"), api.Strategy{AnalysisGates: []api.AnalysisGate{bad}}, false)
	if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), `analysis "errors": condition "errors < 1"`) {
		t.Fatalf("deploy with a bad condition: %v", err)
	}
}

// A canary wave with an analysis window and a gate waits for both: the
// gate passes first, the window ends later; the gate's pass is audited
// once.
func TestAnalysisGateAndCanaryWindow(t *testing.T) {
	fake := &fakeProm{value: "0"}
	s := analysisSim(t, fake)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 3, Analysis: "30s", AnalysisGates: []api.AnalysisGate{errorGate(2, 0, 2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutFailed, api.RolloutPaused)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("%s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
	if d := ro.Waves[1].StartedAt.Sub(ro.Waves[0].FinishedAt); d < 30*time.Second {
		t.Errorf("wave 1 started %s after the canary, analysis window 30s", d)
	}
	n := 0
	for _, e := range s.events() {
		if strings.Contains(e, "rollout.analysis.passed canary:") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the canary's gate passed %d times in the audit log", n)
	}
}

// A rollout a gate failed (no auto_revert) is retried as a failed node
// would be: the gate measures the wave again from the start.
func TestAnalysisGateFailureRetried(t *testing.T) {
	fake := &fakeProm{value: "0.3"}
	s := analysisSim(t, fake)
	rel, err := s.release(manifest("v1"), api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, AnalysisGates: []api.AnalysisGate{errorGate(2, 0, 2)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ro := s.run(rel.Rollout, api.RolloutFailed, api.RolloutSucceeded, api.RolloutPaused)
	if ro.State != api.RolloutFailed || ro.Waves[0].State != api.WaveFailed || ro.Waves[0].Nodes[0].State != api.RolloutNodeHealthy {
		t.Fatalf("%s (%s)\n%s", ro.State, ro.Reason, describe(ro))
	}
	fake.set("0", false)
	ro, err = s.ros.RolloutRetry(context.Background(), "token:test", rel.Rollout, "")
	if err != nil || ro.Reason != "retried by token:test: analysis errors" || len(ro.AnalysisRuns) != 0 {
		t.Fatalf("retry: %v %s %+v", err, ro.Reason, ro.AnalysisRuns)
	}
	ro = s.run(rel.Rollout, api.RolloutSucceeded, api.RolloutFailed, api.RolloutPaused)
	if ro.State != api.RolloutSucceeded || ro.AnalysisRuns[0].Wave != 1 {
		t.Fatalf("after the retry: %s (%s) %+v", ro.State, ro.Reason, ro.AnalysisRuns)
	}
	if _, err := s.ros.RolloutRetry(context.Background(), "token:test", rel.Rollout, ""); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("retry of a rollout that succeeded: %v", err)
	}
}
