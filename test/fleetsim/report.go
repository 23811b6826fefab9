package fleetsim

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// Meta describes where and on what a run was measured.
type Meta struct {
	Commit string // git describe of the tree the server was built from
	Host   string // host name, CPUs, kernel, Go version
}

// WriteReport writes res as Markdown.
func WriteReport(w io.Writer, res Result, meta Meta) error {
	b := &strings.Builder{}
	p := res.Params
	fmt.Fprintf(b, "# Fleet benchmark: simulated agents against one slipway-server\n\n")
	fmt.Fprintf(b, "Written by `make bench-fleet` (test/cmd/slipway-fleetsim, package test/fleetsim) on %s, commit %s, %s; the run took %s. Load average (1, 5, 15 min) at the start of each fleet and at the end of the run: %s; the machine is shared, so figures grow with other load.\n\n",
		res.Start.Format(time.RFC3339), meta.Commit, meta.Host, res.Took, loads(res))
	writeMethod(b, p, res)
	writeGoals(b, res)
	writeDeploys(b, res)
	writeRoutes(b, res)
	writeIdle(b, res)
	writeEnrol(b, res)
	writeProfiles(b, res)
	writeLogs(b, res)
	_, err := io.WriteString(w, b.String())
	return err
}

func loads(res Result) string {
	var s []string
	for _, f := range res.Fleets {
		s = append(s, fmt.Sprintf("%d agents: %s", f.N, f.LoadStart))
	}
	return strings.Join(append(s, "end: "+res.LoadEnd), "; ")
}

func writeMethod(b *strings.Builder, p Params, res Result) {
	a := p.Agent
	fmt.Fprintf(b, "The real server binary (%s%s) runs as its own process on loopback with a fresh state directory per fleet size; every simulated agent lives in the benchmark's process and sends the real agent's requests over HTTP: enrol (one join token each, all agents at once), long-poll the desired generation (wait %s), a \"switching\" report, %s later a confirm carrying the \"confirm\"-phase report (one request where the agent made two before), asked every %s within the manifest's confirm_timeout (30 s; overload answers extend it as the real agent does, up to %s), a \"switched\" report, a report at least every %s (an unchanged one rides on the long-poll once the server counts it there, as the real agent does: shared/routinereport), a new long-poll at once. Switch failure rate %g. Connections: two shared keep-alive pools, one for long-polls (one per agent) and one for the other requests, idle ones closed after 90 s as the real agent's; at most two per agent plus 64 in all within the file limit of %d (%s). ",
		p.ServerBin, map[bool]string{true: ", with net/http/pprof on a separate loopback port", false: ""}[p.Pprof],
		a.PollWait, a.SwitchTime, a.ConfirmInterval, a.OverloadConfirmTimeout, a.ReportInterval, a.FailureRate, res.Files, connsOf(res))
	fmt.Fprintf(b, "Per fleet: enrolment, %s idle, then per strategy (%s) %d deploys, each created as `slipway deploy` does (GET /v1/nodes, POST /v1/releases; rolling in batches of %d%% of the fleet) and followed by polling the rollout every second until it ends, %s apart, and %s idle after them. Each idle window begins %s after the end of the enrolment or the last deploy: the keep-alive timeout (90 s, the server's and the agents') has closed the connections the burst opened, so the window sees the idle fleet's steady state. ",
		p.idleWindow(), strings.Join(p.Strategies, ", "), p.Deploys, p.RollingPercent, p.Settle, p.idleWindow(), max(p.IdleDelay, p.Settle))
	fmt.Fprintf(b, "Server CPU is utime+stime from /proc/<pid>/stat, RSS is VmRSS. *false revert*: a healthy agent that reverted because its confirm did not come in time (what the real agent would do); *5xx*, *429*: answers to the agents' requests; *timeouts*: agent requests without an answer within their deadline. Pulled and confirmed times count from the moment POST /v1/releases was sent.\n\n")
}

func connsOf(res Result) string {
	var s []string
	for _, f := range res.Fleets {
		s = append(s, fmt.Sprintf("%d agents: %d", f.N, f.MaxConns))
	}
	return strings.Join(s, ", ")
}

// writeGoals sets the figures of the largest fleet beside issue 13's goals.
func writeGoals(b *strings.Builder, res Result) {
	if len(res.Fleets) == 0 {
		return
	}
	f := slices.MaxFunc(res.Fleets, func(a, b FleetResult) int { return a.N - b.N })
	fmt.Fprintf(b, "## Goals (issue 13) at %d agents\n\n| goal | measured |\n|---|---|\n", f.N)
	for _, s := range []string{api.StrategyAllAtOnce, api.StrategyRolling} {
		var parts []string
		for _, d := range f.Deploys {
			if d.Strategy != s || d.Rollout == "" {
				continue // not deployed: see the Deploys table
			}
			all := "not all confirmed"
			if len(d.Confirmed) == f.N {
				all = "all confirmed in " + secs(d.Confirmed[len(d.Confirmed)-1])
			}
			parts = append(parts, fmt.Sprintf("deploy %d: %s, %s, %d 5xx, %d 429, %d false reverts, rollout ended %s after %s",
				d.Index, d.State, all, d.Counts.errors5xx(), d.Counts.tooMany(), d.FalseRev, d.State, secs(d.Done)))
		}
		goal := "all-at-once: 0 errors, 0 reverts, all confirmed in under 10 s"
		if s == api.StrategyRolling {
			goal = "rolling, 10% batches: under 60 s in total"
		}
		fmt.Fprintf(b, "| %s | %s |\n", goal, orDash(strings.Join(parts, "; ")))
	}
	var cpu, rss, store []string
	for _, r := range f.Idle {
		cpu = append(cpu, fmt.Sprintf("%.2f %s", r.CPUPerMin(), r.Label))
		rss = append(rss, fmt.Sprintf("%s %s", mib(r.RSS), r.Label))
		store = append(store, fmt.Sprintf("%s %s", mib(r.Store), r.Label))
	}
	fmt.Fprintf(b, "| idle server CPU under 2 s per minute, flat after deploys | %s |\n", orDash(strings.Join(cpu, "; ")))
	fmt.Fprintf(b, "| RSS under 300 MiB idle | %s |\n", orDash(strings.Join(rss, "; ")))
	fmt.Fprintf(b, "| store growth per deploy bounded | store.db %s%s |\n\n", orDash(strings.Join(store, "; ")), storeGrowth(f))
	if f.Err != "" {
		fmt.Fprintf(b, "The run of %d agents broke off: %s\n\n", f.N, f.Err)
	}
}

func storeGrowth(f FleetResult) string {
	var g []string
	prev := int64(-1)
	if len(f.Idle) > 0 {
		prev = f.Idle[0].Store
	}
	for _, d := range f.Deploys {
		if d.Store == 0 {
			continue // not deployed
		}
		if prev >= 0 {
			g = append(g, fmt.Sprintf("%+.1f", float64(d.Store-prev)/(1<<20)))
		}
		prev = d.Store
	}
	if len(g) == 0 {
		return ""
	}
	return "; growth per deploy (MiB, after each deploy): " + strings.Join(g, ", ")
}

func writeDeploys(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Deploys\n\nSeconds. *pulled*, *confirmed*: p50 / p99 / max over the agents that did (count in brackets). *rollout end*: the rollout's final state as the admin API showed it, polled every second. *create*: the round trip of the accepted POST /v1/releases; `slipway deploy` gives up on a 503 or 429, the benchmark tries again after Retry-After (the refused attempts are listed).\n\n")
	fmt.Fprintf(b, "| agents | deploy | strategy | pulled | confirmed | rollout end | false reverts | failed switches | 5xx | 429 | timeouts | server CPU s | simulator CPU s | RSS after | store after | create | load |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range res.Fleets {
		for _, d := range f.Deploys {
			strat := d.Strategy
			if d.BatchSize > 0 {
				strat += fmt.Sprintf(" (batch %d)", d.BatchSize)
			}
			end := d.State + " " + secs(d.Done)
			if d.Err != "" {
				end += " (" + d.Err + ")"
			}
			fmt.Fprintf(b, "| %d | %d | %s | %s | %s | %s | %d | %d | %d | %d | %d | %.1f | %.1f | %s | %s | %s | %s |\n",
				f.N, d.Index, strat, dist(d.Pulled), dist(d.Confirmed), end, d.FalseRev, d.Injected,
				d.Counts.errors5xx(), d.Counts.tooMany(), d.Counts.timeouts(), d.CPU, d.SimCPU, mib(d.RSS), mib(d.Store), createCell(d), d.Load)
		}
	}
	b.WriteString("\n")
	for _, f := range res.Fleets {
		for _, d := range f.Deploys {
			if d.Reason != "" {
				fmt.Fprintf(b, "- %d agents, deploy %d: rollout %s %s: %s\n", f.N, d.Index, d.Rollout, d.State, d.Reason)
			}
			for _, r := range d.RevReasons {
				fmt.Fprintf(b, "- %d agents, deploy %d, a false revert: %s\n", f.N, d.Index, r)
			}
		}
	}
	b.WriteString("\n")
}

func writeRoutes(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Answers per route\n\nThe agents' requests by route over enrolment and each deploy (to its end). *5xx*: by status; *max*: the slowest answered request (seconds; long-polls included on desired).\n\n")
	fmt.Fprintf(b, "| agents | phase | route | requests | 2xx | 304 | 5xx | 429 | other 4xx | timeouts | net errors | max |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range res.Fleets {
		routeRows(b, f.N, "enrolment", f.Enrol.Counts)
		for _, d := range f.Deploys {
			routeRows(b, f.N, fmt.Sprintf("deploy %d (%s)", d.Index, d.Strategy), d.Counts)
		}
	}
	b.WriteString("\n")
}

func routeRows(b *strings.Builder, n int, phase string, c Counts) {
	for r := range numRoutes {
		rc := c[r]
		if rc.Requests == 0 {
			continue
		}
		fmt.Fprintf(b, "| %d | %s | %s | %d | %d | %d | %s | %d | %d | %d | %d | %s |\n",
			n, phase, route(r), rc.Requests, rc.OK, rc.NotModified, by5xx(rc.Status5xx), rc.TooMany, rc.Other4xx, rc.Timeouts, rc.NetErrors, secs(rc.MaxLatency))
	}
}

func writeIdle(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Idle server\n\nCPU over the idle window while every agent long-polls and reports; the window is a whole number of the agents' long-poll waits (the one nearest the asked length), so every agent's poll cycle counts once per wait however the fleet's polls are bunched; *polls answered*: long-polls that ended in the window, and the most in one second of it; RSS and store.db at its end, *window peak*: the largest RSS sampled every second in it (*peak RSS*: the process's high-water mark); `slipway status` = GET /v1/nodes on a new connection, seconds (min / median / max of the samples).\n\n")
	fmt.Fprintf(b, "| agents | when | window | CPU s/min | polls answered (most in 1 s) | simulator CPU s/min | RSS | window peak | peak RSS | store.db | status | 5xx | 429 | timeouts | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range res.Fleets {
		for _, r := range f.Idle {
			d := r.Counts[routeDesired]
			fmt.Fprintf(b, "| %d | %s | %s | %.2f | %d (%d) | %.2f | %s | %s | %s | %s | %s | %d | %d | %d | %s |\n",
				f.N, r.Label, r.Window.Round(time.Second), r.CPUPerMin(), d.OK+d.NotModified, r.PollsPerSec, r.SimCPU/r.Window.Minutes(), mib(r.RSS), mib(r.WindowPeak), mib(r.Peak), mib(r.Store), statusDist(r.Status),
				r.Counts.errors5xx(), r.Counts.tooMany(), r.Counts.timeouts(), r.Load)
		}
	}
	b.WriteString("\n")
}

func writeEnrol(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Enrolment\n\nEvery agent starts at once with its own one-time join token (created beforehand through the admin API, 8 at a time).\n\n")
	fmt.Fprintf(b, "| agents | join tokens made in | all enrolled in | enrolled | refused | 5xx | 429 | timeouts | server CPU s |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range res.Fleets {
		e := f.Enrol
		fmt.Fprintf(b, "| %d | %s | %s | %d | %d | %d | %d | %d | %.1f |\n", f.N, secs(e.Tokens), secs(e.Took), e.Enrolled, len(e.Refused),
			e.Counts.errors5xx(), e.Counts.tooMany(), e.Counts.timeouts(), e.CPU)
	}
	b.WriteString("\n")
	for _, f := range res.Fleets {
		if len(f.Enrol.Refused) > 0 {
			fmt.Fprintf(b, "- %d agents: first refusal: %s\n", f.N, f.Enrol.Refused[0])
		}
	}
	b.WriteString("\n")
}

func writeProfiles(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Server CPU profiles\n\n")
	n := 0
	for _, f := range res.Fleets {
		for _, p := range f.Profiles {
			n++
			fmt.Fprintf(b, "### %s\n\n", p.Label)
			if p.Err != "" {
				fmt.Fprintf(b, "Error: %s\n\n", p.Err)
			}
			if p.Flat != "" {
				fmt.Fprintf(b, "Top 10 by own time:\n\n```text\n%s\n```\n\nTop 10 by cumulative time:\n\n```text\n%s\n```\n\n", p.Flat, p.Cum)
			}
		}
	}
	if n == 0 {
		b.WriteString("None taken (the server binary has no pprof listener, or -profile 0).\n\n")
	}
}

func writeLogs(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## Server log\n\nLines by level (log_level warn) and the most frequent warnings and errors, digits replaced by N.\n\n")
	for _, f := range res.Fleets {
		var lv []string
		for _, k := range slices.Sorted(maps.Keys(f.Log.Levels)) {
			lv = append(lv, fmt.Sprintf("%s %d", k, f.Log.Levels[k]))
		}
		fmt.Fprintf(b, "- %d agents: %s\n", f.N, orDash(strings.Join(lv, ", ")))
		for _, l := range f.Log.Top {
			fmt.Fprintf(b, "  - %d × %s: %s", l.Count, l.Level, l.Message)
			if l.Error != "" {
				fmt.Fprintf(b, ": `%s`", l.Error)
			}
			b.WriteString("\n")
		}
	}
}

func dist(d []time.Duration) string {
	if len(d) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s (%d)", secs(percentile(d, 0.5)), secs(percentile(d, 0.99)), secs(d[len(d)-1]), len(d))
}

func statusDist(d []time.Duration) string {
	if len(d) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s", secs(d[0]), secs(percentile(d, 0.5)), secs(d[len(d)-1]))
}

func by5xx(m map[int]int) string {
	if len(m) == 0 {
		return "0"
	}
	var s []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s = append(s, fmt.Sprintf("%d×%d", m[k], k))
	}
	return strings.Join(s, ", ")
}

func (c Counts) timeouts() int {
	n := 0
	for _, r := range c {
		n += r.Timeouts
	}
	return n
}

func createCell(d DeployResult) string {
	if len(d.Refused) == 0 {
		return secs(d.Create)
	}
	return fmt.Sprintf("%s (after %d refused: %s)", secs(d.Create), len(d.Refused), strings.Join(d.Refused, ", "))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
