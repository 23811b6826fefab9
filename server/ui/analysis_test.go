package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// TestRolloutPageShowsAnalysis: the rollout page lists each analysis gate
// of the wave analysed with its verdict, query and measurements.
func TestRolloutPageShowsAnalysis(t *testing.T) {
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}`)
	}))
	defer prom.Close()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	f := newFixtureWith(t, registry.Config{Now: func() time.Time { return now }}, rollout.Config{Prometheus: &analysis.Prometheus{URL: prom.URL}})
	ctx := context.Background()
	jt, err := f.reg.CreateJoinToken(ctx, "token:ops", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: jt.Token, Labels: map[string]string{"role": "web"}}); err != nil {
		t.Fatal(err)
	}
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/true\n"}}
	raw, _ := m.Canonical()
	id, _ := m.ID()
	gate := api.AnalysisGate{Name: "error-rate", Query: `rate(errors{instance=~"{{nodes}}"}[1m])`, Condition: "result < 0.1", Interval: "1s"}
	rel, err := f.ros.CreateRelease(ctx, "token:ops", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: raw,
		Strategy: &api.Strategy{AnalysisGates: []api.AnalysisGate{gate}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Confirm(ctx, "web-1", api.ConfirmRequest{ID: id, Number: 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Report(ctx, "web-1", api.Report{State: api.AgentIdle, CurrentID: id, Current: 1, Outcome: "switched"}); err != nil {
		t.Fatal(err)
	}
	var ro api.Rollout
	for i := 0; i < 200 && ro.State != api.RolloutFailed; i++ {
		if err := f.ros.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		f.ros.WaitMeasurements()
		now = now.Add(time.Second)
		if ro, err = f.ros.Rollout(ctx, rel.Rollout); err != nil {
			t.Fatal(err)
		}
	}
	if ro.State != api.RolloutFailed {
		t.Fatalf("rollout %s (%s)", ro.State, ro.Reason)
	}
	c := f.client()
	f.login(c, viewerTok)
	st, _, page := f.do(c, "GET", "/ui/rollouts/"+ro.ID, nil)
	for _, want := range []string{
		`<h2>Analysis</h2>`, `<tr data-gate="error-rate">`, `<span class="badge gate-failed">failed</span>`,
		`<code>rate(errors{instance=~&#34;web-1&#34;}[1m])</code>`, `not result &lt; 0.1 for 1 of 1 series: {} = 0.25`,
		`analysis <code>error-rate</code>: result &lt; 0.1`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("rollout page (%d) lacks %s", st, want)
		}
	}
}
