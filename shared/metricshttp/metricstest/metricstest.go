// Package metricstest reads Prometheus metrics in tests the way Prometheus
// does: it scrapes an endpoint (or takes its text) and parses it with
// Prometheus' own text parser, then looks series up by labels.
//
// It is test equipment: nothing outside _test.go files imports it.
package metricstest

import (
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are parsed metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (a /metrics endpoint), requires 200 and parses the body.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return Parse(t, resp.Body)
}

// Parse parses metrics in the text exposition format.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// Value returns the value of the first series of name whose labels include
// every pair of want: a counter's or gauge's value, a histogram's sample
// count. ok is false when there is no such series.
func (f Families) Value(name string, want map[string]string) (v float64, ok bool) {
next:
	for _, m := range f[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, w := range want {
			if got, ok := have[k]; !ok || got != w {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// MustValue is Value, failing the test when the series is missing.
func (f Families) MustValue(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	v, ok := f.Value(name, want)
	if !ok {
		if _, has := f[name]; !has {
			t.Fatalf("no metric %s (have: %s)", name, f.names())
		}
		t.Fatalf("no series %s%v", name, want)
	}
	return v
}

func (f Families) names() string {
	ns := make([]string, 0, len(f))
	for n := range f {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return strings.Join(ns, ", ")
}
