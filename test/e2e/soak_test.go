package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/release"
)

// TestFleetSoak is the fleet soak (`make soak`, issue 15 item 5; skipped
// unless SLIPWAY_SOAK=1): a real slipway-server and four real systemd
// nodes for SLIPWAY_FLEET_SOAK_DURATION (default 30m). Every 20 s it
// deploys a release (queued behind a running rollout; a random 20% of them
// fail on every node; strategies drawn at random), SIGKILLs a random
// agent now and then (systemd restarts it) and SIGKILLs and restarts the
// server every few minutes. It samples the file descriptors, goroutines
// (from /metrics) and RSS of the server, and the file descriptors, threads
// and RSS of every agent, and at the end deploys a good release and checks
// that desired and actual agree everywhere. SLIPWAY_SOAK_SEED repeats the
// random draws. It writes test/reports/soak.md.
func TestFleetSoak(t *testing.T) {
	if os.Getenv("SLIPWAY_SOAK") != "1" {
		t.Skip("soak: set SLIPWAY_SOAK=1 (make soak)")
	}
	dur := envDuration(t, "SLIPWAY_FLEET_SOAK_DURATION", soakDefault)
	seed := uint64(envInt(t, "SLIPWAY_SOAK_SEED", int(time.Now().UnixNano()%1e9)))
	s := startServer(t, t.TempDir(), freeAddr(t))
	releases := t.TempDir()
	nodes, names := s.bootFleet(t, releases, "sk-a", "sk-b", "sk-c", "sk-d")
	sk := &soak{t: t, s: s, rng: rand.New(rand.NewPCG(seed, seed)), nodes: nodes, names: names, seed: seed,
		w: &node{t: t, releases: releases}, releases: releases, rollouts: map[string]bool{}, serverErrors: map[string]int{}}
	sk.run(dur)
	sk.settle()
	sk.final()
	sk.s.stop()
	sk.collectServerLog()
	sk.write(dur)
}

// soakDefault is the soak's length unless SLIPWAY_FLEET_SOAK_DURATION says.
const soakDefault = 30 * time.Minute

// Soak timings.
const (
	soakReleaseEvery = 20 * time.Second
	soakSampleEvery  = 15 * time.Second
	// After a release, with probability soakKillShare, a random agent is
	// SIGKILLed within soakKillWithin: often in the middle of its switch.
	soakKillShare  = 0.5
	soakKillWithin = 10 * time.Second
	soakServerMin  = 3 * time.Minute // server restarts: uniform in [min, max]
	soakServerMax  = 7 * time.Minute
	// soakWarmup: samples this soon after a process (re)started are left
	// out of the slope within its lives (its heap grows to its working
	// size first).
	soakWarmup   = time.Minute
	soakBadShare = 0.2
)

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute {
		t.Fatalf("%s=%q: want a duration of at least 1m (e.g. 5m)", name, v)
	}
	return d
}

type soak struct {
	t        *testing.T
	s        *server
	rng      *rand.Rand
	seed     uint64
	nodes    []*fleetNode
	names    []string
	w        *node
	releases string
	start    time.Time
	took     time.Duration

	deploys, bad, agentKills, serverRestarts int
	deployErrors                             []string
	rollouts                                 map[string]bool // rollout ID → bad release
	maxQueued                                int
	samples                                  []soakSample
	serverErrors                             map[string]int // error-level messages of the server's log
	settleTook                               time.Duration
	result                                   soakResult
}

// procSample is one process's resources; zero when it could not be read
// (an agent being restarted).
type procSample struct {
	ok                   bool
	pid                  int // a new pid is a new life of the process
	rssKiB, fds, threads int
	goroutines           int // the server's only (from /metrics)
	heapBytes            int // the server's only: Go heap in use (from /metrics)
	storeBytes           int // the server's only: size of store.db (bbolt's file, mapped into its memory)
}

type soakSample struct {
	at        time.Duration
	server    procSample
	agents    []procSample // in the order of names
	divergent int          // nodes whose desired != actual at that moment
	queued    int          // rollouts running or queued
}

// run drives releases, kills and samples for dur.
func (sk *soak) run(dur time.Duration) {
	sk.start = time.Now()
	end := sk.start.Add(dur)
	nextRelease, nextSample := sk.start, sk.start
	var nextKill time.Time // zero: none pending
	// The first restart comes by half the run at the latest, so that a
	// shortened run restarts the server too.
	nextRestart := sk.start.Add(min(sk.uniform(soakServerMin, soakServerMax), dur/2))
	for i := 0; time.Now().Before(end); {
		now := time.Now()
		switch {
		case !now.Before(nextRestart):
			sk.restartServer()
			nextRestart = now.Add(sk.uniform(soakServerMin, soakServerMax))
		case !now.Before(nextRelease):
			sk.deploy(i)
			i++
			nextRelease = nextRelease.Add(soakReleaseEvery)
			if nextKill.IsZero() && sk.rng.Float64() < soakKillShare {
				nextKill = time.Now().Add(sk.uniform(0, soakKillWithin))
			}
		case !nextKill.IsZero() && !now.Before(nextKill):
			sk.killAgent()
			nextKill = time.Time{}
		case !now.Before(nextSample):
			sk.sample()
			nextSample = nextSample.Add(soakSampleEvery)
		default:
			time.Sleep(200 * time.Millisecond)
		}
	}
	sk.took = time.Since(sk.start)
}

func (sk *soak) uniform(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(sk.rng.Int64N(int64(hi-lo)))
}

// soakStrategies are drawn at random for each release.
var soakStrategies = []api.Strategy{
	{Kind: api.StrategyAllAtOnce},
	{Kind: api.StrategyAllAtOnce, AutoRevert: true},
	{Kind: api.StrategyRolling, BatchSize: 2, AutoRevert: true},
	{Kind: api.StrategyCanary, Canary: 1, BatchSize: 3, Analysis: "2s"},
}

// deploy writes release i (bad with probability soakBadShare) and creates
// it, queued behind a running rollout.
func (sk *soak) deploy(i int) {
	bad := sk.rng.Float64() < soakBadShare
	unit := rolloutUnit(fmt.Sprintf("r%d", i), "")
	if bad {
		unit = "[Unit]\nDescription=soak bad r" + strconv.Itoa(i) + "\n[Service]\nExecStartPre=/bin/sh -c 'echo bad release on purpose; exit 1'\nExecStart=/bin/sleep infinity\n"
	}
	strat := soakStrategies[sk.rng.IntN(len(soakStrategies))]
	name := fmt.Sprintf("r%03d", i)
	sk.w.write(name, rel{toml: soakTOML, units: map[string]string{"app.service": unit, "keep.service": sleeper}})
	id, err := sk.create(filepath.Join(sk.releases, name), strat)
	sk.deploys++
	sk.t.Logf("%s: release %s (bad %v, %s auto_revert %v): rollout %s %v", time.Since(sk.start).Round(time.Second), name, bad, strat.Kind, strat.AutoRevert, id, err)
	if err != nil {
		sk.deployErrors = append(sk.deployErrors, fmt.Sprintf("%s at %s: %v", name, time.Since(sk.start).Round(time.Second), err))
		return
	}
	if bad {
		sk.bad++
	}
	sk.rollouts[id] = bad
}

const soakTOML = "name = \"soak\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"\nconfirm_timeout = \"15s\"\n"

func (sk *soak) create(dir string, strat api.Strategy) (string, error) {
	rl, err := loadCanonical(dir)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := sk.s.client.CreateRelease(ctx, api.CreateReleaseRequest{Name: "soak", Target: "role=web", Manifest: rl, Strategy: &strat, Queue: true})
	if err != nil {
		return "", err
	}
	return r.Rollout, nil
}

// killAgent SIGKILLs the agent of a random node; systemd restarts it.
func (sk *soak) killAgent() {
	n := sk.nodes[sk.rng.IntN(len(sk.nodes))]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, stderr, err := n.Exec(ctx, "systemctl", "kill", "--kill-whom=main", "-s", "KILL", "slipway-agent.service"); err != nil {
		sk.t.Logf("kill the agent of %s: %v %s", n.Name, err, stderr)
		return
	}
	sk.agentKills++
	sk.t.Logf("%s: SIGKILLed the agent of %s", time.Since(sk.start).Round(time.Second), n.Name)
}

// restartServer SIGKILLs the server and starts it again.
func (sk *soak) restartServer() {
	sk.s.stop()
	sk.collectServerLog()
	sk.s.start()
	sk.serverRestarts++
	sk.t.Logf("%s: server SIGKILLed and restarted", time.Since(sk.start).Round(time.Second))
}

// sample reads the resources of the server and the agents.
func (sk *soak) sample() {
	smp := soakSample{at: time.Since(sk.start), server: sk.serverSample()}
	for _, n := range sk.nodes {
		smp.agents = append(smp.agents, agentSample(n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ns, err := sk.s.client.Nodes(ctx); err == nil {
		for _, n := range ns {
			if n.Desired != n.Actual {
				smp.divergent++
			}
		}
	}
	if ros, err := sk.s.client.Rollouts(ctx); err == nil {
		for _, ro := range ros {
			if ro.State == api.RolloutRunning || ro.State == api.RolloutQueued || ro.State == api.RolloutAwaiting {
				smp.queued++
			}
		}
	}
	sk.maxQueued = max(sk.maxQueued, smp.queued)
	sk.t.Logf("%s: sample: server %s, agents %s, desired≠actual %d, rollouts running or queued %d", smp.at.Round(time.Second),
		fmtProc(smp.server, true), agentsLine(smp.agents), smp.divergent, smp.queued)
	sk.samples = append(sk.samples, smp)
}

func (sk *soak) serverSample() procSample {
	if sk.s.cmd == nil || sk.s.cmd.Process == nil {
		return procSample{}
	}
	pid := sk.s.cmd.Process.Pid
	p, err := readProc(fmt.Sprintf("/proc/%d", pid), os.ReadFile, func(dir string) (int, error) {
		es, err := os.ReadDir(dir)
		return len(es), err
	})
	if err != nil {
		return procSample{}
	}
	p.pid = pid
	metrics := metricValues("http://"+sk.s.metrics+"/metrics", "go_goroutines", "go_memstats_heap_inuse_bytes")
	p.goroutines, p.heapBytes = metrics[0], metrics[1]
	if fi, err := os.Stat(filepath.Join(sk.s.dir, "state", "store.db")); err == nil {
		p.storeBytes = int(fi.Size())
	}
	return p
}

// agentSample reads the agent's /proc inside its node (its PID there).
func agentSample(n *fleetNode) procSample {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _, err := n.Exec(ctx, "/bin/sh", "-c", `p=$(systemctl show -p MainPID --value slipway-agent.service); [ "$p" -gt 0 ] || exit 1
echo "$p $(ls /proc/$p/fd | wc -l) $(awk '/^VmRSS:/{print $2}' /proc/$p/status) $(awk '/^Threads:/{print $2}' /proc/$p/status)"`)
	if err != nil {
		return procSample{}
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		return procSample{}
	}
	p := procSample{ok: true}
	p.pid, _ = strconv.Atoi(f[0])
	p.fds, _ = strconv.Atoi(f[1])
	p.rssKiB, _ = strconv.Atoi(f[2])
	p.threads, _ = strconv.Atoi(f[3])
	return p
}

// readProc reads a process's RSS and threads (status) and its open file
// descriptors (fd/) from a /proc/<pid> directory.
func readProc(dir string, readFile func(string) ([]byte, error), countDir func(string) (int, error)) (procSample, error) {
	b, err := readFile(filepath.Join(dir, "status"))
	if err != nil {
		return procSample{}, err
	}
	p := procSample{ok: true}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			p.rssKiB, _ = strconv.Atoi(f[0])
		case "Threads":
			p.threads, _ = strconv.Atoi(f[0])
		}
	}
	if p.fds, err = countDir(filepath.Join(dir, "fd")); err != nil {
		return procSample{}, err
	}
	return p, nil
}

// metricValues reads unlabelled gauges from a Prometheus text endpoint
// (-1 for one it cannot).
func metricValues(url string, names ...string) []int {
	out := make([]int, len(names))
	for i := range out {
		out[i] = -1
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		for i, name := range names {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					out[i] = int(f)
				}
			}
		}
	}
	return out
}

// loadCanonical loads a release directory and returns its canonical
// manifest.
func loadCanonical(dir string) ([]byte, error) {
	r, err := release.Load(dir)
	if err != nil {
		return nil, err
	}
	return r.Manifest.Canonical()
}

func agentsLine(ps []procSample) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmtProc(p, false))
	}
	return strings.Join(parts, ", ")
}

// collectServerLog counts the error-level messages of the stopped server's
// log (a restart starts a new log).
func (sk *soak) collectServerLog() {
	if sk.s.log == nil {
		return
	}
	countErrors(sk.s.log.String(), sk.serverErrors)
}

// countErrors adds the messages of the error-level (and worse) JSON log
// lines in log to counts.
func countErrors(log string, counts map[string]int) {
	for _, l := range strings.Split(log, "\n") {
		var e struct {
			Level   string `json:"level"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			continue
		}
		if e.Level == "error" || e.Level == "fatal" || e.Level == "panic" {
			counts[e.Message]++
		}
	}
}
