package meshbench

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// defaultPollInterval is the agent's default gossip poll_interval
// (agent/config DefaultGossipPollInterval).
const defaultPollInterval = 60 * time.Second

// pollOnlyInterval is the polling-only mode's poll_interval: 30s, not
// the default 60s, to keep `make bench` under 8 minutes on 2 CPUs (the
// mode costs three poll intervals per fleet size). A pull then waits for
// the agent's next poll, so its figures scale with the interval;
// SLIPWAY_MESHBENCH_POLL_INTERVAL=60s measures the default (about 3
// minutes more).
const pollOnlyInterval = 30 * time.Second

// quietPeriod separates two publishes with wake-ups or long-polls: it
// starts once the previous rollout succeeded and, with gossip, every
// agent's SetTags returned (waitTags), so the previous release's traffic
// has died down, as between two releases of a real fleet.
const quietPeriod = 3 * time.Second

// caseResult is one (agents, mode): its publishes and the process's
// footprint once the fleet was up.
type caseResult struct {
	spec       fleetSpec
	first      *roundResult // the warm-up publish, right after the fleet joined
	next       *roundResult // a publish right after the last rollout succeeded
	rounds     []roundResult
	setup      time.Duration
	goroutines int
	heapMiB    float64
	logs       map[string]int // warn and above, server and agents: message → count
}

// runCase starts a fleet, publishes rounds times quiet apart, and stops
// the fleet. With extra, a warm-up publish comes first and one more
// publish follows the last without a quiet period (back to back).
func runCase(tb testing.TB, spec fleetSpec, rounds int, extra bool, quiet time.Duration) caseResult {
	tb.Helper()
	f := startFleet(tb, spec)
	res := caseResult{spec: spec, setup: f.setup}
	if extra {
		first := f.publish()
		f.waitTags(&first)
		res.first = &first
		time.Sleep(quiet) // pacing: see quietPeriod
	}
	res.goroutines, res.heapMiB = processFootprint()
	for i := range rounds {
		r := f.publish()
		if i < rounds-1 || !extra {
			f.waitTags(&r)
			time.Sleep(quiet) // pacing: see quietPeriod
		}
		res.rounds = append(res.rounds, r)
	}
	if extra {
		// Right after the last rollout succeeded: the agents that just
		// switched may still be updating their tags.
		next := f.publish()
		res.next = &next
	}
	res.logs = f.logs.count()
	f.stop()
	return res
}

func (r caseResult) pulls() []time.Duration {
	var all []time.Duration
	for _, rd := range r.rounds {
		all = append(all, rd.pulls...)
	}
	slices.Sort(all)
	return all
}

func (r caseResult) lasts() []time.Duration {
	var l []time.Duration
	for _, rd := range r.rounds {
		l = append(l, rd.last())
	}
	return l
}

// percentile is the nearest-rank percentile p (0 < p ≤ 1) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func medianOf(ds []time.Duration, f func(roundResult) time.Duration, rounds []roundResult) time.Duration {
	for _, r := range rounds {
		ds = append(ds, f(r))
	}
	slices.Sort(ds)
	return percentile(ds, 0.5)
}

// BenchmarkPublishToPulled measures publish → every agent has pulled its
// new desired generation, for 10 and 100 agents in three modes: serf
// wake-ups (5 publishes), interval polls without events (2 publishes;
// poll interval 30s, the agents' starts spread over one), and long-polls
// (3 publishes). With wake-ups and long-polls it also reports the first
// publish after the fleet joined and one right after a rollout (back to
// back). It writes
// test/reports/mesh-bench.md. b.N is not used: run it with -benchtime 1x.
//
//	make bench   (go test -run XXX -bench BenchmarkPublishToPulled -benchtime 1x ./test/meshbench/)
//
// SLIPWAY_MESHBENCH_SIZES (default "10,100") and
// SLIPWAY_MESHBENCH_POLL_INTERVAL (the polling-only mode's poll_interval,
// default 30s: see pollOnlyInterval) change it; the report says what was
// used.
func BenchmarkPublishToPulled(b *testing.B) {
	sizes, err := envSizes("SLIPWAY_MESHBENCH_SIZES", []int{10, 100})
	if err != nil {
		b.Fatal(err)
	}
	pollOnly := pollOnlyInterval
	if v := os.Getenv("SLIPWAY_MESHBENCH_POLL_INTERVAL"); v != "" {
		if pollOnly, err = time.ParseDuration(v); err != nil || pollOnly <= 0 {
			b.Fatalf("SLIPWAY_MESHBENCH_POLL_INTERVAL=%q: want a positive duration", v)
		}
	}
	before := runtime.NumGoroutine()
	began := time.Now()
	var results []caseResult
	for _, m := range []mode{modeLongPoll, modeWake, modePoll} {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s-n%d", m.slug(), n), func(b *testing.B) {
				spec := fleetSpec{n: n, mode: m, pollInterval: defaultPollInterval}
				rounds, extra, quiet := 3, true, quietPeriod
				switch m {
				case modeWake:
					rounds = 5
				case modePoll:
					// No warm-up (it would cost a poll interval); the
					// first publish follows the last agent's start.
					rounds, extra, quiet = 2, false, 0
					spec.pollInterval, spec.stagger = pollOnly, pollOnly
				}
				r := runCase(b, spec, rounds, extra, quiet)
				results = append(results, r)
				all := r.pulls()
				b.ReportMetric(percentile(all, 0.5).Seconds(), "median-pull-s")
				b.ReportMetric(percentile(all, 0.9).Seconds(), "p90-pull-s")
				b.ReportMetric(medianOf(nil, roundResult.last, r.rounds).Seconds(), "last-pull-s")
			})
		}
	}
	checkGoroutines(b, before)
	if b.Failed() || len(results) == 0 {
		return
	}
	report := render(results, began, time.Since(began))
	p := filepath.Join("..", "reports", "mesh-bench.md")
	if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to test/reports/mesh-bench.md:\n%s", report)
}

func envSizes(key string, def []int) ([]int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	var out []int
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: want fleet sizes like 10,100", key, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// revision names the source the benchmark ran from: the git commit, and
// whether tracked files had uncommitted changes.
func revision() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "source revision unknown"
	}
	rev := "commit " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}

// maxLogKinds is how many kinds of log lines the report lists per case.
const maxLogKinds = 6

// secs formats d in seconds with millisecond resolution.
func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// render is the report: the tables, and how it was measured.
func render(results []caseResult, began time.Time, took time.Duration) string {
	var s strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	loadF := strings.Fields(string(load))
	if len(loadF) > 3 {
		loadF = loadF[:3]
	}
	pollOnly := pollOnlyInterval
	for _, r := range results {
		if r.spec.mode == modePoll {
			pollOnly = r.spec.pollInterval
		}
	}
	pollNote := ""
	if pollOnly != defaultPollInterval {
		pollNote = fmt.Sprintf(", not the default %s, to keep the benchmark under 8 minutes on 2 CPUs; "+
			"a pull waits for the agent's next poll, so with %s expect every figure of this mode about %.1f times as long",
			defaultPollInterval, defaultPollInterval, defaultPollInterval.Seconds()/pollOnly.Seconds())
	}
	fmt.Fprintf(&s, "# Publish → every agent has pulled: serf wake-ups, interval polls, long-polls\n\n")
	fmt.Fprintf(&s, "Written by `make bench` (BenchmarkPublishToPulled in test/meshbench/) on %s, %s, host %s, %d CPUs, kernel %s, %s; "+
		"the whole benchmark took %s; load average at the end %s (figures grow with other load on the machine).\n\n",
		began.UTC().Format(time.RFC3339), revision(), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
		took.Round(time.Second), strings.Join(loadF, " "))

	s.WriteString("Seconds from the admin's CreateRelease request (all-at-once, every node) to the moment each agent had the new desired generation " +
		"on its connection to the server. *pulls* pools every agent of every publish; *last agent* is the time until the last agent had pulled, per publish.\n\n")
	s.WriteString("| agents | mode | poll interval | publishes | pulls | min | median | p90 | max | last agent, per publish |\n")
	s.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		all := r.pulls()
		var lasts []string
		for _, l := range r.lasts() {
			lasts = append(lasts, secs(l))
		}
		poll := "—"
		if r.spec.mode != modeLongPoll {
			poll = r.spec.pollInterval.String()
		}
		fmt.Fprintf(&s, "| %d | %s | %s | %d | %d | %s | %s | %s | %s | %s |\n",
			r.spec.n, r.spec.mode, poll, len(r.rounds), len(all),
			secs(percentile(all, 0)), secs(percentile(all, 0.5)), secs(percentile(all, 0.9)), secs(percentile(all, 1)),
			strings.Join(lasts, " / "))
	}

	s.WriteString("\nThe same publishes in detail (medians over the publishes unless said). *woken poll started*: when the agents' daemons started the poll " +
		"a desired-changed event asked for (their debug line, logged WakeDelay = 0.5 s after the event reached the daemon), median / max over every agent; " +
		"*not woken*: pulls no wake-up started. *rollout succeeded*: every node switched, reported and confirmed, as the admin API shows it (polled every 50 ms " +
		"once all had pulled). *SetTags returned*: the last agent's serf tags update after its switch returned (or gave up); *timed out*: SetTags calls that " +
		"gave up after serf's BroadcastTimeout (5 s), of all switches measured. *CreateRelease*: the admin call's own round trip. Goroutines and heap in use: " +
		"the whole process (server, agents, harness) once the fleet was up.\n\n")
	s.WriteString("| agents | mode | woken poll started | not woken | rollout succeeded | SetTags returned | timed out | CreateRelease | goroutines | heap MiB |\n")
	s.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		woken, unwoken := "—", "—"
		if r.spec.mode == modeWake {
			var ws []time.Duration
			n := 0
			for _, rd := range r.rounds {
				ws = append(ws, rd.woken...)
				n += rd.unwoken
			}
			slices.Sort(ws)
			woken, unwoken = secs(percentile(ws, 0.5))+" / "+secs(percentile(ws, 1)), fmt.Sprint(n)
		}
		tags, fails := "—", "—"
		var withTags []roundResult
		switches := 0
		failed := 0
		for _, rd := range r.rounds {
			if rd.hasTags {
				withTags = append(withTags, rd)
				switches += len(rd.pulls)
				failed += rd.tagsFails
			}
		}
		if len(withTags) > 0 {
			tags = secs(medianOf(nil, func(r roundResult) time.Duration { return r.tags }, withTags))
			fails = fmt.Sprintf("%d of %d", failed, switches)
		}
		fmt.Fprintf(&s, "| %d | %s | %s | %s | %s | %s | %s | %s | %d | %.0f |\n",
			r.spec.n, r.spec.mode, woken, unwoken,
			secs(medianOf(nil, func(r roundResult) time.Duration { return r.succeeded }, r.rounds)),
			tags, fails,
			secs(medianOf(nil, func(r roundResult) time.Duration { return r.call }, r.rounds)),
			r.goroutines, r.heapMiB)
	}

	s.WriteString("\nTwo more publishes per fleet with wake-ups and long-polls, not in the figures above: the *first* one right after the fleet joined " +
		"(a warm-up; with gossip the joins are still being gossiped), and a *back-to-back* one right after the last measured rollout succeeded, " +
		"without waiting for SetTags or the quiet period. Pulls: median / last agent, seconds:\n\n")
	s.WriteString("| agents | mode | first publish after the fleet joined | back-to-back publish |\n|---|---|---|---|\n")
	for _, r := range results {
		if r.first == nil || r.next == nil {
			continue
		}
		mid := func(rd *roundResult) string {
			ps := slices.Sorted(slices.Values(rd.pulls))
			return secs(percentile(ps, 0.5)) + " / " + secs(rd.last())
		}
		fmt.Fprintf(&s, "| %d | %s | %s | %s |\n", r.spec.n, r.spec.mode, mid(r.first), mid(r.next))
	}

	s.WriteString("\nWarnings and errors the server and the agents logged, whole run of each fleet (count × level: message (error)):\n\n")
	for _, r := range results {
		kinds := slices.SortedFunc(maps.Keys(r.logs), func(a, b string) int { return cmp.Or(r.logs[b]-r.logs[a], strings.Compare(a, b)) })
		var msgs []string
		for i, k := range kinds {
			if i == maxLogKinds {
				msgs = append(msgs, fmt.Sprintf("and %d other kinds", len(kinds)-i))
				break
			}
			msgs = append(msgs, fmt.Sprintf("%d × %s", r.logs[k], k))
		}
		if len(msgs) == 0 {
			msgs = []string{"none"}
		}
		fmt.Fprintf(&s, "- %d agents, %s: %s\n", r.spec.n, r.spec.mode, strings.Join(msgs, "; "))
	}

	s.WriteString("\n## How it runs\n\n")
	s.WriteString("Everything is in the benchmark's process, on 127.0.0.1. Real: slipway-server (`server/daemon.Serve`: bbolt store in a temporary directory, " +
		"an admin token, the HTTP API on a free port, the rollout engine), the agent daemons (`agent/daemon`'s loop with `agent/activate`, `agent/stage` and " +
		"`agent/state` on a temporary state directory each), enrolled with one-time join tokens made through the admin API, real HTTP between them, and real serf " +
		"members (`shared/gossip`, hashicorp/serf over memberlist's UDP and TCP sockets, a port of their own each) encrypted with one AES-256 keyring. " +
		"Faked: systemd only (every job succeeds at once, units are active after a start). Not the tailnet: loopback has no WireGuard, DERP or MagicDNS, " +
		"so over a real mesh every hop costs more. One machine runs the server and every agent: with 100 agents the CPUs are shared by 100 daemons and 101 serf members.\n\n")
	s.WriteString("Each (agents, mode) gets a fresh server and fresh agents. The release is one trivial unit (`ExecStart=/bin/sleep infinity`), " +
		"min_healthy_time 1ms, no health checks, a new unit text per publish (so a new generation ID); strategy all-at-once over every node.\n\n")
	s.WriteString("Modes:\n\n")
	s.WriteString("- **wake-ups**: server `[gossip]` on (bind 127.0.0.1:0, keyring file), agents with gossip joined to it, poll_interval 60s (the default). " +
		"After the commit the server sends one `desired-changed` user event (registry `OnDesired`); an agent it concerns polls WakeDelay later " +
		"(500 ms, the daemon's default, which absorbs the rest of a burst), so 0.5 s is this mode's floor by design. " +
		"serf's user events are limited to 512 bytes: the list of 100 node names does not fit, so the server sends the event naming no node (every agent checks); " +
		"10 names fit. The event travels only piggybacked on memberlist's gossip and probe packets, in the space memberlist's own membership broadcasts " +
		"(joins, tag updates) leave free. A warm-up publish, then 5 measured publishes, each " + quietPeriod.String() + " after every agent's SetTags of the " +
		"previous one returned, then one back to back.\n")
	fmt.Fprintf(&s, "- **polling only**: the same fetch mode as wake-ups (gossip on, a poll without waiting every poll_interval, jittered ±10%%), but no event reaches the agents: "+
		"the server runs without `[gossip]` and the agents form a serf cluster of their own, joined to a seed member (a bare `shared/gossip` member) that sends nothing. "+
		"poll_interval %s%s. Agents are started evenly over one poll interval, so their poll phases are spread as in a fleet that has run for a while "+
		"(started together they would all poll at about the same time; a publish in polling mode does not bring them back in step, since each pulls at its own phase). "+
		"The first publish follows the last start; the second follows the first's SetTags. No warm-up.\n", pollOnly, pollNote)
	s.WriteString("- **long-poll**: `[gossip]` off on both sides; each agent holds one desired long-poll (wait 30s, the default) that the server answers at the commit. " +
		"A warm-up publish, then 3 measured publishes, each " + quietPeriod.String() + " after the previous rollout succeeded, then one back to back.\n\n")
	s.WriteString("With gossip, after every switch the daemon updates its serf tags (the current generation) with `SetTags`, in a goroutine of its own " +
		"(agent/daemon gossip.go tagLoop), outside the daemon's gossip lock, so wake-ups are not held up by it. SetTags waits until memberlist has " +
		"finished broadcasting the update, up to serf's BroadcastTimeout (5 s); past that serf stops waiting (the tags are applied and their broadcast stays " +
		"queued). The *SetTags returned* column shows how long that lasts, *timed out* how often serf stopped waiting (shared/gossip's debug line).\n\n")
	s.WriteString("Where the pull is measured: on the agent side, at the socket: each daemon dials the server through a dialer of the benchmark's " +
		"(daemon.Config.Dial; the benchmark checks that every agent dialled through it). That dialer wraps the agent's connections and notes the first read that carries the published generation's ID (the desired answer's ETag and body). " +
		"The clock starts right before the CreateRelease request is sent, so every figure includes the admin call. " +
		"The woken polls and SetTags come from the daemons' own log lines (the daemon logs at debug into the benchmark; only warnings are kept).\n\n")
	s.WriteString("Timers: serf's default LAN configuration (`serf.DefaultConfig`, memberlist `DefaultLANConfig`: gossip every 200 ms to 3 members, probe every 1 s, " +
		"probe timeout 500 ms, suspicion multiplier 4, retransmit multiplier 4, push/pull every 30 s, TCP timeout 10 s, broadcast timeout 5 s); `gossip.Intervals` left zero. " +
		"Agent daemon defaults otherwise (report every 60 s, confirm every 1 s, resync every 5 min).\n")
	return s.String()
}
