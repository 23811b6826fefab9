package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// benchSample is one measured switch.
type benchSample struct {
	wall, stage, sw, verify, revert time.Duration
}

type benchRow struct {
	name    string
	samples []benchSample
}

// BenchmarkSwitch measures, on a real systemd node, the time from
// `slipway-agent apply` to healthy for 1, 10 and 50 trivial units (every
// unit restarted on each switch, min_healthy_time 1ms (0 would mean the 5s default), no checks), and the
// revert time from a failure detected to the previous generation active
// (10 units plus one that fails to start), and how long a switch whose
// http check fails from the start takes to revert, with and without
// initial_delay. It writes test/reports/switch-bench.md.
//
//	make bench   (SLIPWAY_E2E=1 go test -run XXX -bench BenchmarkSwitch -benchtime 11x ./test/e2e/)
func BenchmarkSwitch(b *testing.B) {
	n := bootNode(b, "bench")
	var rows []*benchRow
	for _, units := range []int{1, 10, 50} {
		row := &benchRow{name: fmt.Sprintf("apply, %d units", units)}
		rows = append(rows, row)
		b.Run(fmt.Sprintf("units=%d", units), func(b *testing.B) {
			n.t = b
			for _, v := range []string{"a", "b"} {
				n.write(fmt.Sprintf("bench-%d-%s", units, v), rel{toml: "name = \"bench\"\n[health]\nmin_healthy_time = \"1ms\"\n", units: trivialUnits(units, v)})
			}
			if _, stderr, code := n.apply(fmt.Sprintf("bench-%d-a", units)); code != 0 {
				b.Fatalf("warm-up apply: exit %d\n%s", code, stderr)
			}
			row.samples = row.samples[:0]
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v := []string{"b", "a"}[i%2]
				start := time.Now()
				o, stderr, code := n.apply(fmt.Sprintf("bench-%d-%s", units, v))
				wall := time.Since(start)
				if code != 0 || o.Outcome != "switched" {
					b.Fatalf("apply: exit %d %+v\n%s", code, o, stderr)
				}
				row.samples = append(row.samples, benchSample{wall: wall, stage: o.Timings["stage"], sw: o.Timings["switch"], verify: o.Timings["verify"]})
			}
			b.StopTimer()
			b.ReportMetric(ms(median(row.samples, func(s benchSample) time.Duration { return s.sw })), "switch-ms")
		})
	}
	revert := &benchRow{name: "revert, 10 units + 1 failing"}
	rows = append(rows, revert)
	b.Run("revert", func(b *testing.B) {
		n.t = b
		u := trivialUnits(10, "a")
		u["bench-bad.service"] = "[Service]\nType=oneshot\nExecStart=/bin/false\n"
		n.write("bench-revert", rel{toml: "name = \"bench\"\n[health]\nmin_healthy_time = \"1ms\"\n", units: u})
		if _, stderr, code := n.apply("bench-10-a"); code != 0 {
			b.Fatalf("base apply: exit %d\n%s", code, stderr)
		}
		revert.samples = revert.samples[:0]
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			o, stderr, code := n.apply("bench-revert", "--retry-quarantined")
			wall := time.Since(start)
			if code != 3 || o.Outcome != "reverted" {
				b.Fatalf("apply: exit %d %+v\n%s", code, o, stderr)
			}
			revert.samples = append(revert.samples, benchSample{wall: wall, stage: o.Timings["stage"], sw: o.Timings["switch"], revert: o.Timings["revert"]})
		}
		b.StopTimer()
		b.ReportMetric(ms(median(revert.samples, func(s benchSample) time.Duration { return s.revert })), "revert-ms")
	})
	rows = append(rows, benchFailingCheck(b, n)...)
	writeReport(b, rows)
}

// benchFailingCheck measures a switch to a web service whose /health answers
// 500 from the first request (default check interval 2s and
// failure_threshold 3, healthy_deadline 20s): without initial_delay (the
// default 30s grace outlasts the deadline, so the deadline decides, as
// every check did before initial_delay existed) and with initial_delay 2s.
func benchFailingCheck(b *testing.B, n *node) []*benchRow {
	const toml = "name = \"bench-web\"\n[health]\nmin_healthy_time = \"1ms\"\nhealthy_deadline = \"20s\"\n" +
		"[[health.check]]\nname = \"web-http\"\nhttp = \"http://127.0.0.1:8080/health\"\n"
	const artifact = "[[artifact]]\nname = \"web\"\npath = \"bin/web\"\nmode = \"0755\"\n"
	n.t = b
	n.write("bench-web-ok", rel{toml: toml + artifact, units: map[string]string{"web.service": webUnit("ok")}, web: true})
	var rows []*benchRow
	for _, c := range []struct{ key, name, extra string }{
		{"http500-deadline", "revert, http check failing from the start, deadline 20s, no initial_delay", ""},
		{"http500-grace2s", "revert, http check failing from the start, deadline 20s, initial_delay 2s", "initial_delay = \"2s\"\n"},
	} {
		row := &benchRow{name: c.name}
		rows = append(rows, row)
		b.Run(c.key, func(b *testing.B) {
			n.t = b
			n.write("bench-"+c.key, rel{toml: toml + c.extra + artifact, units: map[string]string{"web.service": webUnit("sick --health-status 500")}, web: true})
			if _, stderr, code := n.apply("bench-web-ok"); code != 0 {
				b.Fatalf("base apply: exit %d\n%s", code, stderr)
			}
			row.samples = row.samples[:0]
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				o, stderr, code := n.apply("bench-"+c.key, "--retry-quarantined")
				wall := time.Since(start)
				if code != 3 || o.Outcome != "reverted" || !strings.Contains(o.Reason, `"web-http"`) {
					b.Fatalf("apply: exit %d %+v\n%s", code, o, stderr)
				}
				row.samples = append(row.samples, benchSample{wall: wall, stage: o.Timings["stage"], sw: o.Timings["switch"], verify: o.Timings["verify"], revert: o.Timings["revert"]})
			}
			b.StopTimer()
			b.ReportMetric(ms(median(row.samples, func(s benchSample) time.Duration { return s.verify })), "verify-ms")
		})
	}
	return rows
}

func trivialUnits(n int, variant string) map[string]string {
	u := map[string]string{}
	for i := 0; i < n; i++ {
		u[fmt.Sprintf("bench-%02d.service", i)] = "[Service]\nExecStart=/bin/sleep infinity\n# variant " + variant + "\n"
	}
	return u
}

func median(ss []benchSample, f func(benchSample) time.Duration) time.Duration {
	if len(ss) == 0 {
		return 0
	}
	v := make([]time.Duration, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeReport(b *testing.B, rows []*benchRow) {
	var s strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&s, "# Switch and revert timings on a real systemd node\n\n")
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&s, "Written by `make bench` (BenchmarkSwitch in test/e2e/bench_test.go) on %s, host %s, %d CPUs, kernel %s, load average at the end %s (figures grow with other load on the machine).\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&s, "One systemd-nspawn node (Debian bookworm, systemd 252); trivial units are `ExecStart=/bin/sleep infinity`, all restarted on every switch; min_healthy_time 1ms (0 would mean the 5s default), no checks except in the *http check failing* rows: one web service (slipway-testsvc) whose `/health` answers 500 from the first request, one http check with the default interval 2s and failure_threshold 3, healthy_deadline 20s; without initial_delay its default 30s grace outlasts the deadline, so the deadline decides (what every check did before initial_delay), with initial_delay 2s the check fails after the grace and 3 counted failures.\n\n")
	fmt.Fprintf(&s, "Medians over the runs. *wall*: `slipway-agent apply` from the host, process start to exit, including nsenter, loading and hashing the release and bbolt. *switch*: flip of `current` and links, daemon-reload, and waiting for every systemd job (this is the switch overhead; the services' own start time is negligible for sleep). *verify*: unit state checks (and, in the http rows, the time until the failing check failed the switch). *revert*: from the failure detected to the previous generation's units active again (flip back, daemon-reload, jobs, unit checks).\n\n")
	fmt.Fprintf(&s, "| case | runs | wall ms | stage ms | switch ms | verify ms | revert ms |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		m := func(f func(benchSample) time.Duration) string { return fmt.Sprintf("%.1f", ms(median(r.samples, f))) }
		fmt.Fprintf(&s, "| %s | %d | %s | %s | %s | %s | %s |\n", r.name, len(r.samples),
			m(func(x benchSample) time.Duration { return x.wall }), m(func(x benchSample) time.Duration { return x.stage }),
			m(func(x benchSample) time.Duration { return x.sw }), m(func(x benchSample) time.Duration { return x.verify }),
			m(func(x benchSample) time.Duration { return x.revert }))
	}
	p := filepath.Join("..", "reports", "switch-bench.md")
	if err := os.WriteFile(p, []byte(s.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to test/reports/switch-bench.md:\n%s", s.String())
}
