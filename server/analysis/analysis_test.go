package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

func TestExpand(t *testing.T) {
	w := Wave{Nodes: []string{"web-2", "web-1.eu"}, Release: "r4-web", Generation: "sha256-ab", Labels: map[string]string{"role": "web"}}
	one := Wave{Nodes: []string{"web-1"}}
	for _, tc := range []struct {
		q    string
		w    Wave
		want string // "!…" = an error containing …
	}{
		{`sum(rate(http_errors{instance=~"{{nodes}}"}[5m]))`, w, `sum(rate(http_errors{instance=~"web-1\.eu|web-2"}[5m]))`},
		{`up{node="{{ node }}"}`, one, `up{node="web-1"}`},
		{`x{release="{{release}}",gen="{{generation}}",role="{{labels.role}}"}`, w, `x{release="r4-web",gen="sha256-ab",role="web"}`},
		{`up{node="{{node}}"}`, w, "!{{node}} needs a wave of one node, this one has 2"},
		{`up{env="{{labels.env}}"}`, w, "!{{labels.env}}: the wave's nodes do not share a label env"},
		{`up{x="{{nodez}}"}`, w, "!unknown placeholder {{nodez}}"},
		{`up{x="{{ }}"}`, w, "!a {{ that does not start a placeholder"},
		{`up`, Wave{}, `up`},
	} {
		got, err := Expand(tc.q, tc.w)
		if want, isErr := strings.CutPrefix(tc.want, "!"); isErr {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Expand(%q) = %q, %v; want an error containing %q", tc.q, got, err, want)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.q, got, err, tc.want)
		}
	}
}

func TestParseCondition(t *testing.T) {
	for _, tc := range []struct{ in, reduce, want string }{
		{"result < 0.01", "", ""},
		{" result>=5 ", "sum", ""},
		{"result != 0", "avg", ""},
		{"errors < 1", "", "want \"result OP NUMBER\""},
		{"result ~ 1", "", "no comparison"},
		{"result < abc", "", `"abc" is not a finite number`},
		{"result < NaN", "", "not a finite number"},
		{"result < 1", "median", `reduce "median"`},
	} {
		_, err := ParseCondition(tc.in, tc.reduce)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseCondition(%q, %q) = %v, want %q", tc.in, tc.reduce, err, tc.want)
		}
	}
}

func TestJudge(t *testing.T) {
	two := []Series{{`{instance="a"}`, 0.002}, {`{instance="b"}`, 0.03}}
	for _, tc := range []struct {
		cond, reduce string
		series       []Series
		want         Outcome
		msg          string
	}{
		{"result < 0.01", "", two, Failed, `not result < 0.01 for 1 of 2 series: {instance="b"} = 0.03`},
		{"result < 0.05", "", two, Successful, "result < 0.05 for all 2 series"},
		{"result < 0.03", "sum", two, Failed, "sum of 2 series is 0.032: not result < 0.03"},
		{"result < 0.02", "avg", two, Successful, "avg of 2 series is 0.016"},
		{"result <= 0.002", "min", two, Successful, "min of 2 series is 0.002"},
		{"result > 0.1", "max", two, Failed, "max of 2 series is 0.03"},
		{"result == 1", "", []Series{{"{}", 1}}, Successful, ""},
		{"result < 1", "", nil, Inconclusive, "no data"},
		{"result < 1", "", []Series{{`{a="b"}`, nanValue()}}, Inconclusive, `series {a="b"} is NaN, not a number`},
	} {
		c, err := ParseCondition(tc.cond, tc.reduce)
		if err != nil {
			t.Fatal(err)
		}
		got, msg := c.Judge(tc.series)
		if got != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s (%s) on %v = %s %q, want %s %q", tc.cond, tc.reduce, tc.series, got, msg, tc.want, tc.msg)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

// fakeProm is Prometheus's HTTP API v1 for instant queries: it answers
// every query with the JSON its answer func gives, and records the
// requests.
type fakeProm struct {
	mu     sync.Mutex
	srv    *httptest.Server
	reqs   []*http.Request
	answer func(query string) (int, string)
}

func newFakeProm(t *testing.T, answer func(query string) (int, string)) *fakeProm {
	f := &fakeProm{answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.mu.Unlock()
		if r.URL.Path != "/prom/api/v1/query" || r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		status, body := f.answer(r.URL.Query().Get("query"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func vector(values ...float64) string {
	var rs []string
	for i, v := range values {
		rs = append(rs, fmt.Sprintf(`{"metric":{"instance":"web-%d"},"value":[1796600000.5,%q]}`, i+1, fmt.Sprint(v)))
	}
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(rs, ",") + `]}}`
}

var at = time.Date(2026, 12, 7, 10, 0, 0, 500e6, time.UTC)

func TestPrometheusQuery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string // series, or "!" + error
	}{
		{"vector", 200, vector(0.5, 2), `[{{instance="web-1"} 0.5} {{instance="web-2"} 2}]`},
		{"scalar", 200, `{"status":"success","data":{"resultType":"scalar","result":[1796600000,"0.25"]}}`, `[{{} 0.25}]`},
		{"nan", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`, `[{{} NaN}]`},
		{"empty", 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`, `[]`},
		{"matrix", 200, `{"status":"success","data":{"resultType":"matrix","result":[]}}`, `!result type "matrix": want an instant vector or a scalar`},
		{"bad query", 400, `{"status":"error","errorType":"bad_data","error":"1:5: parse error"}`, "!HTTP 400: bad_data: 1:5: parse error"},
		{"unavailable", 503, `Service Unavailable`, "!HTTP 503"},
		{"not json", 200, `<html>`, "!answer is not the API's JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeProm(t, func(string) (int, string) { return tc.status, tc.body })
			p := &Prometheus{URL: f.srv.URL + "/prom/", BearerToken: "tok"}
			got, err := p.Query(context.Background(), `up{job="web"}`, at)
			if want, isErr := strings.CutPrefix(tc.want, "!"); isErr {
				if !errors.Is(err, ErrQuery) || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want ErrQuery containing %q", err, want)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Fatalf("= %v, %v; want %s", got, err, tc.want)
			}
			r := f.reqs[0]
			if r.URL.Query().Get("query") != `up{job="web"}` || r.URL.Query().Get("time") != "1796637600.500" || r.Header.Get("Authorization") != "Bearer tok" {
				t.Fatalf("request %s %v", r.URL, r.Header)
			}
		})
	}
}

func TestPrometheusAuthAndUnreachable(t *testing.T) {
	f := newFakeProm(t, func(string) (int, string) { return 200, vector(1) })
	p := &Prometheus{URL: f.srv.URL + "/prom", Username: "slipway", Password: "pw"}
	if _, err := p.Query(context.Background(), "up", at); err != nil {
		t.Fatal(err)
	}
	if u, pw, ok := f.reqs[0].BasicAuth(); !ok || u != "slipway" || pw != "pw" {
		t.Fatalf("basic auth %q %q %v", u, pw, ok)
	}
	f.srv.Close()
	_, err := p.Query(context.Background(), "up", at)
	if !errors.Is(err, ErrQuery) || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "/prom") {
		t.Fatalf("unreachable: %v", err)
	}
}

// TestGateAgainstPrometheus runs gates measurement by measurement
// against the fake, whose error rate the test sets.
func TestGateAgainstPrometheus(t *testing.T) {
	cond, err := ParseCondition("result < 0.01", "")
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status int
		rate   float64
	}
	for _, tc := range []struct {
		name    string
		limit   int
		answers []answer
		want    []Verdict // after each measurement
	}{
		{"healthy passes after count", 0, []answer{{200, 0.001}, {200, 0.002}, {200, 0}}, []Verdict{Running, Running, Passed}},
		{"rising error rate halts", 0, []answer{{200, 0.001}, {200, 0.05}}, []Verdict{Running, Halt}},
		{"failure_limit tolerates one", 1, []answer{{200, 0.05}, {200, 0.001}, {200, 0.001}}, []Verdict{Running, Running, Passed}},
		{"errors in a row pause", 0, []answer{{200, 0.001}, {503, 0}, {503, 0}, {503, 0}}, []Verdict{Running, Running, Running, Paused}},
		{"an error run broken by data", 0, []answer{{503, 0}, {503, 0}, {200, 0.001}, {503, 0}, {503, 0}, {200, 0.001}, {200, 0.001}}, []Verdict{Running, Running, Running, Running, Running, Running, Passed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := 0
			var queries []string
			f := newFakeProm(t, func(q string) (int, string) {
				queries = append(queries, q)
				a := tc.answers[i]
				i++
				if a.status != 200 {
					return a.status, `{"status":"error","errorType":"unavailable","error":"overloaded"}`
				}
				return 200, vector(a.rate)
			})
			g := Gate{Name: "errors", Query: `sum(rate(http_errors{instance=~"{{nodes}}"}[1m]))`, Condition: cond, Count: 3, FailureLimit: tc.limit, ConsecutiveErrorLimit: 2}.WithDefaults()
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			p := &Prometheus{URL: f.srv.URL + "/prom"}
			var ms []Measurement
			now := at
			for k, want := range tc.want {
				if !g.Due(ms, now) {
					t.Fatalf("measurement %d not due at %s", k+1, now)
				}
				ms = append(ms, g.Measure(context.Background(), p, Wave{Nodes: []string{"web-1"}}, now))
				if v, why := g.Verdict(ms); v != want {
					t.Fatalf("after measurement %d (%+v): %s (%s), want %s", k+1, ms[k], v, why, want)
				}
				if g.Due(ms, now.Add(g.Interval-time.Second)) {
					t.Fatal("due before the interval passed")
				}
				now = now.Add(g.Interval)
			}
			if queries[0] != `sum(rate(http_errors{instance=~"web-1"}[1m]))` {
				t.Fatalf("query sent: %s", queries[0])
			}
		})
	}
}

func TestGateVerdictReasons(t *testing.T) {
	cond, _ := ParseCondition("result < 0.01", "")
	g := Gate{Name: "errors", Query: "x", Condition: cond, Count: 2, ConsecutiveErrorLimit: 1}.WithDefaults()
	_, why := g.Verdict([]Measurement{{Outcome: Successful}, {Outcome: Failed, Message: "not result < 0.01 for 1 of 1 series: {} = 0.2"}})
	if why != `analysis "errors" failed: 1 of 2 measurements failed (failure_limit 0); last: not result < 0.01 for 1 of 1 series: {} = 0.2` {
		t.Fatalf("halt reason: %s", why)
	}
	_, why = g.Verdict([]Measurement{{Outcome: Inconclusive, Message: "no data: the query returned no series"}, {Outcome: Inconclusive, Message: "no data: the query returned no series"}})
	if why != `analysis "errors" inconclusive: 2 measurements in a row without a result (consecutive_error_limit 1); last: no data: the query returned no series` {
		t.Fatalf("pause reason: %s", why)
	}
	if err := (Gate{}).WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "name is required") || !strings.Contains(err.Error(), "condition is required") {
		t.Fatalf("Validate of an empty gate: %v", err)
	}
	b, _ := json.Marshal(Measurement{At: at, Outcome: Failed, Message: "m"})
	if string(b) != `{"at":"2026-12-07T10:00:00.5Z","outcome":"failed","message":"m"}` {
		t.Fatalf("measurement JSON %s", b)
	}
}

func TestFromAPI(t *testing.T) {
	two := 2
	tests := []struct {
		name string
		in   api.AnalysisGate
		want string // error; "" = valid
	}{
		{"minimal", api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0"}, ""},
		{"full", api.AnalysisGate{Name: "e", Query: `sum(rate(x{instance=~"{{nodes}}",role="{{labels.role}}",r="{{release}}",g="{{generation}}"}[1m]))`, Condition: "result < 0.01",
			Scope: api.ScopeAggregate, Aggregate: "max", Interval: "5s", Count: 2, FailureLimit: 1, ConsecutiveErrorLimit: &two}, ""},
		{"unknown placeholder", api.AnalysisGate{Name: "e", Query: "x{n=\"{{host}}\"}", Condition: "result > 0"}, `analysis "e": query: unknown placeholder {{host}}`},
		{"stray braces", api.AnalysisGate{Name: "e", Query: "x{n=\"{{ }}\"}", Condition: "result > 0"}, `analysis "e": query: a {{ that does not start a placeholder`},
		{"bad interval", api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0", Interval: "5"}, `analysis "e": interval "5"`},
		{"aggregate without scope", api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0", Aggregate: "max"}, `aggregate "max" needs scope = "aggregate"`},
		{"bad aggregate", api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0", Scope: "aggregate", Aggregate: "p99"}, `aggregate "p99": want sum, max, min or avg`},
		{"negative limits", api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0", FailureLimit: -1}, "failure_limit and consecutive_error_limit ≥ 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := FromAPI(tc.in)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("FromAPI: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("FromAPI: %v, want %q", err, tc.want)
			case tc.want == "" && tc.in.Interval == "" && (g.Interval != DefaultInterval || g.Count != DefaultCount || g.ConsecutiveErrorLimit != DefaultErrorLimit):
				t.Fatalf("defaults %+v", g)
			}
		})
	}
	zero := 0
	g, err := FromAPI(api.AnalysisGate{Name: "e", Query: "up", Condition: "result > 0", ConsecutiveErrorLimit: &zero})
	if err != nil || g.ConsecutiveErrorLimit != 0 {
		t.Fatalf("consecutive_error_limit 0: %+v %v", g, err)
	}
	if _, err := FromStrategy([]api.AnalysisGate{{Name: "e", Query: "up", Condition: "result > 0"}, {Name: "e", Query: "up", Condition: "result > 0"}}); err == nil || !strings.Contains(err.Error(), `analysis "e": name used twice`) {
		t.Fatalf("twice: %v", err)
	}
}
