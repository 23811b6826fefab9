package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// prometheusBin is Debian's prometheus (test/install-deps.sh installs it).
const prometheusBin = "/usr/bin/prometheus"

// appMetricsDir is where the nodes' app serves its metrics socket.
const appMetricsDir = "/run/appmetrics"

// TestAnalysisGateRevertsOnErrorRate: a real Prometheus (Debian's, started
// by the test on 127.0.0.1, scraping every second) scrapes
// app_requests_total and app_errors_total from a service on each of four
// real systemd nodes: slipway-testsvc serving on a unix socket in a
// directory bound from the host, which the test's scrape proxy on
// 127.0.0.1 reaches (the nodes have no network of their own). Releases
// are deployed with `slipway deploy` from a slipway.toml with an
// [[analysis]] error-rate gate ({{nodes}} filled per wave). A release
// whose service serves no errors passes the gate in each wave; a release
// whose service's errors rise to 20% of its requests (its units healthy,
// no node failing) is halted by the gate alone after its first wave, and
// auto_revert sends that wave back: every node runs the good release
// again and the second wave never got the bad one. `slipway rollout show`
// and the server's metrics show the measurements.
func TestAnalysisGateRevertsOnErrorRate(t *testing.T) {
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Fatalf("%v: run test/install-deps.sh (Debian package prometheus)", err)
	}
	sockHost := t.TempDir()
	must(t, os.Chmod(sockHost, 0o755))
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	_, names := s.bootFleetWith(t, releases, []nspawn.Bind{{Host: sockHost, Node: appMetricsDir}}, "ana-a", "ana-b", "ana-c", "ana-d")
	sort.Strings(names)
	promAddr := startPrometheus(t, scrapeProxy(t, sockHost), names)
	f, err := os.OpenFile(filepath.Join(dir, "server.toml"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = fmt.Fprintf(f, "[prometheus]\nurl = %q\ntimeout = \"2s\"\n", "http://"+promAddr)
	must(t, err)
	must(t, f.Close())
	s.start()

	w := &node{t: t, releases: releases}
	mk := func(version string, errorRatio float64, strategy string) string {
		toml := fmt.Sprintf(`name = "metricsapp"
target = "role=web"
[strategy]
%s
[health]
min_healthy_time = "1s"
healthy_deadline = "20s"
confirm_timeout = "10s"

[[analysis]]
name = "error-rate"
query = 'sum(rate(app_errors_total{instance=~"{{nodes}}"}[5s])) / sum(rate(app_requests_total{instance=~"{{nodes}}"}[5s]))'
condition = "result < 0.05"
scope = "aggregate"
interval = "2s"
count = 3
consecutive_error_limit = 5
`, strategy)
		unit := fmt.Sprintf("[Service]\nExecStart=%s/slipway-testsvc -listen unix:%s/%%H.sock -error-ratio %g -message %s\n", nodeBin, appMetricsDir, errorRatio, version)
		w.write(version, rel{toml: toml, units: map[string]string{"metricsapp.service": unit}})
		return filepath.Join(releases, version)
	}

	var good api.Rollout
	t.Run("no errors: the gate passes in every wave", func(t *testing.T) {
		s.t = t
		id := s.deployCLI(t, mk("v1", 0, "kind = \"rolling\"\nbatch_size = 2"))
		good = s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutPaused)
		if good.State != api.RolloutSucceeded || len(good.AnalysisRuns) != 1 {
			t.Fatalf("rollout %s (%s): %s, analysis %+v", good.State, good.Reason, waveSummary(good), good.AnalysisRuns)
		}
		run := good.AnalysisRuns[0]
		if run.Wave != 1 || run.Verdict != "passed" || run.Successful != 3 || run.Failed != 0 || !strings.Contains(run.Query, names[2]+"|"+names[3]) {
			t.Fatalf("analysis of the last wave: %+v", run)
		}
		for _, m := range run.Measurements {
			t.Logf("REPORT good release, %s: %s %v %s", m.At.Format(time.TimeOnly), m.Outcome, deref(m.Value), m.Message)
		}
	})

	t.Run("server killed mid-analysis measures on where it stood", func(t *testing.T) {
		s.t = t
		id := s.deployCLI(t, mk("v1b", 0, "kind = \"rolling\"\nbatch_size = 2"))
		waitFor(t, 2*time.Minute, "the first wave's first measurement", func() error {
			ro, err := s.client.Rollout(context.Background(), id)
			if err != nil {
				return err
			}
			if len(ro.AnalysisRuns) == 0 || ro.AnalysisRuns[0].Wave != 0 || len(ro.AnalysisRuns[0].Measurements) == 0 {
				return fmt.Errorf("%s: %s, analysis %+v", ro.State, waveSummary(ro), ro.AnalysisRuns)
			}
			return nil
		})
		s.stop() // SIGKILL
		s.start()
		ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutPaused)
		if ro.State != api.RolloutSucceeded || ro.AnalysisRuns[0].Wave != 1 || ro.AnalysisRuns[0].Successful != 3 {
			t.Fatalf("after the restart: %s (%s): %s, analysis %+v", ro.State, ro.Reason, waveSummary(ro), ro.AnalysisRuns)
		}
		evs, err := s.client.Events(context.Background(), 0, 1000)
		must(t, err)
		var passed []string
		for _, e := range evs {
			if e.Target == id && e.Action == "rollout.analysis.passed" {
				passed = append(passed, e.Detail)
			}
		}
		if len(passed) != 2 || !strings.HasPrefix(passed[0], "wave 1: ") || !strings.HasPrefix(passed[1], "wave 2: ") {
			t.Errorf("analysis passed events %q, want one per wave", passed)
		}
		good = ro
	})

	t.Run("errors rise: the gate halts after wave 1 and auto_revert sends it back", func(t *testing.T) {
		s.t = t
		id := s.deployCLI(t, mk("v2", 0.2, "kind = \"rolling\"\nbatch_size = 2\nauto_revert = true"))
		ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutReverted, api.RolloutFailed, api.RolloutSucceeded, api.RolloutPaused)
		if ro.State != api.RolloutReverted || !strings.Contains(ro.Reason, `analysis "error-rate" failed`) || ro.Failures != 0 {
			t.Fatalf("rollout %s (%s), %d failed nodes: %s", ro.State, ro.Reason, ro.Failures, waveSummary(ro))
		}
		run := ro.AnalysisRuns[0]
		last := run.Measurements[len(run.Measurements)-1]
		if run.Wave != 0 || run.Verdict != "failed" || last.Outcome != "failed" || last.Value == nil || *last.Value < 0.05 {
			t.Fatalf("analysis of wave 1: %+v", run)
		}
		for _, m := range run.Measurements {
			t.Logf("REPORT bad release, %s: %s %v %s", m.At.Format(time.TimeOnly), m.Outcome, deref(m.Value), m.Message)
		}
		for _, n := range ro.Waves[0].Nodes {
			if n.State != api.RolloutNodeReverted {
				t.Errorf("wave 1 node %s is %s (%s), want reverted (healthy units, sent back by the gate)", n.Name, n.State, n.Reason)
			}
		}
		for _, n := range ro.Waves[1].Nodes {
			if !n.PublishedAt.IsZero() {
				t.Errorf("wave 2 node %s got the release", n.Name)
			}
		}
		waitFor(t, time.Minute, "every node back on the good release", func() error {
			nodes, err := s.client.Nodes(context.Background())
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Actual != good.Manifest || n.Desired != good.Manifest {
					return fmt.Errorf("%s runs %s, desired %s", n.Name, n.Actual, n.Desired)
				}
			}
			return nil
		})
		out, errOut, err := s.slipway("rollout", "show", ro.ID)
		if err != nil || !strings.Contains(out, "analysis of wave 1:") || !strings.Contains(out, "error-rate  failed:") {
			t.Errorf("slipway rollout show: %v %s\n%s", err, errOut, out)
		}
		metrics := scrapeText(t, "http://"+s.metrics+"/metrics")
		for _, want := range []string{`slipway_analysis_measurements_total{gate="error-rate",result="failed"} 1`, `slipway_analysis_value{gate="error-rate"}`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("server metrics lack %s:\n%s", want, grepLines(metrics, "slipway_analysis"))
			}
		}
	})
}

// scrapeProxy serves GET /metrics/NODE on 127.0.0.1 from the unix socket
// NODE.sock in sockDir, where the node's app serves its /metrics.
func scrapeProxy(t *testing.T, sockDir string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/metrics/")
		if !ok || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(sockDir, name+".sock"))
		}}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("http://node/metrics")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// startPrometheus runs Debian's Prometheus on 127.0.0.1 with a temporary
// data directory, scraping every node's app through the proxy every
// second, the node's name as its instance label. It returns its address.
func startPrometheus(t *testing.T, proxy string, nodes []string) string {
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    scrape_timeout: 900ms\n    static_configs:\n"
	for _, n := range nodes {
		cfg += fmt.Sprintf("      - targets: [%q]\n        labels: {__metrics_path__: %q, instance: %q}\n", proxy, "/metrics/"+n, n)
	}
	must(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	addr := freeAddr(t)
	var log strings.Builder
	cmd := exec.Command(prometheusBin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", tail(log.String(), 30))
		}
	})
	waitFor(t, 30*time.Second, "prometheus to be ready", func() error {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %s", resp.Status)
		}
		return nil
	})
	return addr
}

func scrapeText(t *testing.T, url string) string {
	resp, err := http.Get(url)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(b)
}

func deref(v *float64) any {
	if v == nil {
		return "-"
	}
	return *v
}
