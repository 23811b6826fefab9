package fleetsim

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// FleetResult is one fleet size's figures.
type FleetResult struct {
	N         int
	MaxConns  int
	LoadStart string
	LoadEnd   string
	Took      time.Duration
	Enrol     EnrolResult
	Idle      []IdleResult
	Deploys   []DeployResult
	Profiles  []Profile
	Log       LogSummary
	Err       string // why the fleet's run broke off ("" = it did not)
}

// EnrolResult is the fleet's enrolment: every agent at once.
type EnrolResult struct {
	Tokens   time.Duration // creating the join tokens (admin API), before the agents start
	Took     time.Duration // agents started → every agent enrolled or refused
	Enrolled int
	Refused  []string
	Counts   Counts
	CPU      float64 // server CPU seconds during enrolment
}

// IdleResult is the server between deploys.
type IdleResult struct {
	Label     string
	Window    time.Duration
	CPU       float64 // seconds over Window
	SimCPU    float64 // the simulator's own CPU seconds over Window
	RSS, Peak int64
	Store     int64
	Status    []time.Duration // GET /v1/nodes round trips, sorted
	Load      string
	Counts    Counts // the agents' answers during the window
	// Sampled every second in the window: the largest RSS, and the most
	// long-polls answered within one second (how bunched the fleet's
	// polls are).
	WindowPeak  int64
	PollsPerSec int
}

// CPUPerMin is the idle CPU in seconds per minute.
func (r IdleResult) CPUPerMin() float64 { return r.CPU / r.Window.Minutes() }

// runFleet runs one fleet size on a fresh server: enrol, idle, deploys
// per strategy each followed by an idle measurement.
func runFleet(ctx context.Context, p Params, n int, dir string, files uint64) (fr FleetResult) {
	fr.N, fr.LoadStart, fr.MaxConns = n, LoadAvg(), maxConns(p, n, files)
	start := time.Now()
	defer func() { fr.Took, fr.LoadEnd = time.Since(start).Round(time.Second), LoadAvg() }()
	logf(p, "fleet of %d: starting the server (%s)", n, p.ServerBin)
	srv, err := StartServer(ctx, ServerOptions{Bin: p.ServerBin, Dir: dir, Pprof: p.Pprof, AgentWriteLimit: p.WriteLimit})
	if err != nil {
		fr.Err = err.Error()
		return fr
	}
	defer func() {
		srv.Stop()
		fr.Log = summariseLog(srv.LogPath)
	}()
	fl, err := enrolFleet(ctx, p, srv, n, fr.MaxConns, &fr.Enrol)
	if fl != nil {
		defer fl.Stop()
	}
	if err != nil {
		fr.Err = err.Error()
		return fr
	}
	if err := fr.measureIdle(ctx, p, srv, fl, dir, "before any deploy"); err != nil {
		return fr
	}
	for _, s := range p.Strategies {
		for i := range p.Deploys {
			d, err := deploy(ctx, p, srv, fl, deploySpec{n: n, strategy: s, index: len(fr.Deploys) + 1, ofStrategy: i + 1, dir: dir}, &fr.Profiles)
			fr.Deploys = append(fr.Deploys, d)
			if err != nil {
				fr.Err = err.Error()
				return fr
			}
			sleep(ctx, p.Settle)
		}
		if err := fr.measureIdle(ctx, p, srv, fl, dir, "after the "+s+" deploys"); err != nil {
			return fr
		}
	}
	return fr
}

// enrolFleet creates a join token per agent, starts the agents and waits
// until every one enrolled.
func enrolFleet(ctx context.Context, p Params, srv *Server, n, conns int, er *EnrolResult) (*Fleet, error) {
	t0 := time.Now()
	joins, err := joinTokens(ctx, srv.Admin, n)
	if err != nil {
		return nil, err
	}
	er.Tokens = time.Since(t0)
	logf(p, "fleet of %d: %d join tokens in %s; starting the agents (%d connections at most)", n, n, er.Tokens.Round(time.Millisecond), conns)
	cpu0, _ := CPUSeconds(srv.Pid)
	t1 := time.Now()
	cfg := p.Agent
	cfg.Labels = map[string]string{"fleet": "sim"}
	fl := StartFleet(srv.URL, joins, "sim", conns, cfg)
	ectx, cancel := context.WithTimeout(ctx, p.EnrolTimeout)
	defer cancel()
	enrolled, refused, err := fl.WaitEnrolled(ectx)
	er.Took, er.Enrolled, er.Counts = time.Since(t1), enrolled, fl.Stats().Snapshot()
	cpu1, _ := CPUSeconds(srv.Pid)
	er.CPU = cpu1 - cpu0
	for _, e := range refused {
		er.Refused = append(er.Refused, e.Error())
	}
	logf(p, "fleet of %d: %d enrolled, %d refused in %s", n, enrolled, len(refused), er.Took.Round(time.Millisecond))
	if err != nil {
		return fl, fmt.Errorf("enrolment: %d of %d enrolled: %w", enrolled, n, err)
	}
	if enrolled == 0 {
		return fl, fmt.Errorf("enrolment: no agent enrolled; first refusal: %s", er.Refused[0])
	}
	sleep(ctx, p.Settle)
	return fl, nil
}

// joinTokens creates n one-time join tokens, a few requests at a time.
func joinTokens(ctx context.Context, admin *api.Client, n int) ([]string, error) {
	out := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			jt, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "24h"})
			out[i], errs[i] = jt.Token, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("join tokens: %w", err)
		}
	}
	return out, nil
}

// measureIdle records the server's CPU over p.idleWindow() while the agents
// only report and long-poll, then its memory, store and status latency.
func (fr *FleetResult) measureIdle(ctx context.Context, p Params, srv *Server, fl *Fleet, dir, label string) error {
	sleep(ctx, p.IdleDelay-p.Settle) // Settle has passed since the burst
	c0 := fl.Stats().Snapshot()
	cpu0, err := CPUSeconds(srv.Pid)
	if err != nil {
		fr.Err = err.Error()
		return err
	}
	t0, sim0 := time.Now(), selfCPU()
	path := filepath.Join(dir, fmt.Sprintf("cpu-idle-%d.pprof", len(fr.Idle)+1))
	window := p.idleWindow()
	prof := backgroundProfile(ctx, p, srv, window-time.Second, path, fmt.Sprintf("%d agents, idle %s, %s", fr.N, label, window-time.Second))
	peaks := sampleWindow(ctx, srv.Pid, fl, window)
	if pr := prof(); pr != nil {
		fr.Profiles = append(fr.Profiles, *pr)
	}
	cpu1, err := CPUSeconds(srv.Pid)
	if err != nil {
		fr.Err = err.Error()
		return err
	}
	r := IdleResult{Label: label, Window: time.Since(t0), CPU: cpu1 - cpu0, SimCPU: selfCPU() - sim0, Load: LoadAvg(), Counts: fl.Stats().Snapshot().Sub(c0)}
	r.RSS, r.Peak, _ = RSS(srv.Pid)
	r.WindowPeak, r.PollsPerSec = peaks.rss, peaks.polls
	r.Store, _ = srv.StoreSize()
	r.Status = statusLatency(ctx, srv, p.StatusSamples)
	fr.Idle = append(fr.Idle, r)
	logf(p, "fleet of %d: idle %s: %.2f s CPU/min, RSS %d MiB (window peak %d MiB), polls %d (most in 1 s: %d), store %d MiB, status %v", fr.N, label, r.CPUPerMin(), r.RSS>>20, r.WindowPeak>>20, answeredPolls(r.Counts), r.PollsPerSec, r.Store>>20, r.Status)
	return ctx.Err()
}

// windowPeaks are the largest of the per-second samples of an idle window.
type windowPeaks struct {
	rss   int64
	polls int
}

// sampleWindow waits window, reading the server's RSS and the long-polls
// answered every second.
func sampleWindow(ctx context.Context, pid int, fl *Fleet, window time.Duration) windowPeaks {
	var pk windowPeaks
	end := time.Now().Add(window)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := answeredPolls(fl.Stats().Snapshot())
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return pk
		case <-tick.C:
		}
		if rss, _, err := RSS(pid); err == nil {
			pk.rss = max(pk.rss, rss)
		}
		n := answeredPolls(fl.Stats().Snapshot())
		pk.polls = max(pk.polls, n-last)
		last = n
	}
	return pk
}

func answeredPolls(c Counts) int { return c[routeDesired].OK + c[routeDesired].NotModified }

// statusLatency times `slipway status`'s request, GET /v1/nodes, on a new
// client (a new connection) each time, as the CLI makes it.
func statusLatency(ctx context.Context, srv *Server, samples int) []time.Duration {
	var out []time.Duration
	for range samples {
		c, err := api.NewClient(srv.URL, srv.token)
		if err != nil {
			break
		}
		t := time.Now()
		if _, err := c.Nodes(ctx); err != nil {
			continue
		}
		out = append(out, time.Since(t))
	}
	slices.Sort(out)
	return out
}
