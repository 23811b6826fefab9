package fleetsim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// deploySpec is one deploy of a fleet's run.
type deploySpec struct {
	n          int
	strategy   string
	index      int // among the fleet's deploys, from 1
	ofStrategy int // among the strategy's deploys, from 1
	dir        string
}

// DeployResult is one deploy: release created through the admin API as
// `slipway deploy` does (GET /v1/nodes, POST /v1/releases), followed
// until the rollout ended.
type DeployResult struct {
	Index      int
	Strategy   string
	BatchSize  int // rolling
	Rollout    string
	State      string // the rollout's state at the end ("" if never seen)
	Reason     string
	ListNodes  time.Duration   // the CLI's GET /v1/nodes
	Create     time.Duration   // POST /v1/releases round trip (the accepted one)
	Refused    []string        // POST /v1/releases attempts answered overloaded before it
	Pulled     []time.Duration // per agent, CreateRelease sent → it had the generation, sorted
	Confirmed  []time.Duration // per agent, CreateRelease sent → the server confirmed it, sorted
	Done       time.Duration   // CreateRelease sent → the rollout's end seen (polled every second)
	FalseRev   int             // healthy agents that reverted: no confirm in time
	Injected   int             // simulated switch failures (FailureRate) reverted
	RevReasons []string        // distinct reasons of false reverts, a few
	Counts     Counts          // the agents' answers from the deploy to its end
	CPU        float64         // server CPU seconds over the same span
	SimCPU     float64         // the simulator's own CPU seconds (it shares the machine)
	RSS        int64
	Store      int64
	Load       string
	Err        string
}

// terminal rollout states.
var terminal = []string{api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutAborted}

func deploy(ctx context.Context, p Params, srv *Server, fl *Fleet, ds deploySpec, profs *[]Profile) (DeployResult, error) {
	d := DeployResult{Index: ds.index, Strategy: ds.strategy}
	m := &generation.Manifest{Name: "fleet", Units: map[string]string{
		unitName: fmt.Sprintf("[Unit]\nDescription=fleetsim deploy %d\n\n[Service]\nExecStart=/bin/sleep infinity\n", ds.index),
	}}
	canon, err := m.Canonical()
	if err != nil {
		return d, fmt.Errorf("deploy %d: %w", ds.index, err)
	}
	id, _ := m.ID()
	strat := api.Strategy{Kind: ds.strategy}
	if ds.strategy == api.StrategyRolling {
		d.BatchSize = max(1, ds.n*p.RollingPercent/100)
		strat.BatchSize = d.BatchSize
	}
	fl.Expect(id)
	c0, cpu0, sim0, dials0 := fl.Stats().Snapshot(), cpuOf(srv), selfCPU(), fl.Dials()
	fl.Stats().ResetMax()
	t := time.Now()
	if _, err := srv.Admin.Nodes(ctx); err != nil {
		return d, fmt.Errorf("deploy %d: list nodes: %w", ds.index, err)
	}
	d.ListNodes = time.Since(t)
	prof := startProfile(ctx, p, srv, ds)
	rel, t0, err := d.createRelease(ctx, srv, api.CreateReleaseRequest{Name: "fleet", Target: "fleet=sim", Manifest: canon, Strategy: &strat})
	if err != nil {
		d.Err = err.Error()
		return d, fmt.Errorf("deploy %d: create release: %w", ds.index, err)
	}
	d.Rollout = rel.Rollout
	logf(p, "fleet of %d: deploy %d (%s) release %s rollout %s", ds.n, ds.index, ds.strategy, rel.ID, rel.Rollout)
	d.followRollout(ctx, p, srv, fl, id, t0, ds.n)
	d.Counts, d.CPU, d.SimCPU = fl.Stats().Snapshot().Sub(c0), cpuOf(srv)-cpu0, selfCPU()-sim0
	d.RSS, _, _ = RSS(srv.Pid)
	d.Store, _ = srv.StoreSize()
	d.Load = LoadAvg()
	if pr := prof(); pr != nil {
		*profs = append(*profs, *pr)
	}
	logf(p, "fleet of %d: deploy %d: %s in %s; pulled %d, confirmed %d, false reverts %d, 5xx %d, 429 %d; %d new connections",
		ds.n, ds.index, d.State, d.Done.Round(time.Millisecond), len(d.Pulled), len(d.Confirmed), d.FalseRev, d.Counts.errors5xx(), d.Counts.tooMany(), fl.Dials()-dials0)
	if d.State == "" {
		return d, fmt.Errorf("deploy %d: %s", ds.index, d.Err)
	}
	return d, nil
}

// createAttempts bounds the attempts at POST /v1/releases while the
// server answers overloaded.
const createAttempts = 10

// createRelease posts the release. `slipway deploy` gives up on the first
// 503 or 429; the benchmark tries again after Retry-After (at least a
// second), up to createAttempts, and records the refusals (Refused), so
// that the deploys can be measured. It returns the time the accepted
// request was sent.
func (d *DeployResult) createRelease(ctx context.Context, srv *Server, req api.CreateReleaseRequest) (api.Release, time.Time, error) {
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		rel, err := srv.Admin.CreateRelease(ctx, req)
		d.Create = time.Since(t0)
		se := api.Overloaded(err)
		if se == nil || attempt == createAttempts || ctx.Err() != nil {
			return rel, t0, err
		}
		d.Refused = append(d.Refused, fmt.Sprintf("HTTP %d after %s", se.Status, secs(d.Create)))
		// The server may have created the release and its rollout before
		// it failed (starting the rollout's first wave): a retry would be
		// refused with 409. Take that rollout.
		if ro, ok := createdRollout(ctx, srv, req.Name, t0); ok {
			d.Refused[len(d.Refused)-1] += fmt.Sprintf(" although it created rollout %s", ro.ID)
			return api.Release{ID: ro.Release, Rollout: ro.ID}, t0, nil
		}
		sleep(ctx, max(se.RetryAfter, time.Second))
	}
}

// createdRollout finds a rollout of release name created since t0.
func createdRollout(ctx context.Context, srv *Server, name string, t0 time.Time) (api.Rollout, bool) {
	ros, err := srv.Admin.Rollouts(ctx)
	if err != nil {
		return api.Rollout{}, false
	}
	for _, ro := range ros {
		if strings.HasSuffix(ro.Release, "-"+name) && !ro.CreatedAt.Before(t0.Add(-time.Second)) {
			return ro, true
		}
	}
	return api.Rollout{}, false
}

// followRollout polls the rollout every second until it ends (or
// DeployTimeout), then waits a little for the agents' last confirms, and
// takes the agents' figures.
func (d *DeployResult) followRollout(ctx context.Context, p Params, srv *Server, fl *Fleet, id string, t0 time.Time, n int) {
	dctx, cancel := context.WithTimeout(ctx, p.DeployTimeout)
	defer cancel()
	for dctx.Err() == nil {
		sleep(dctx, time.Second)
		ro, err := srv.Admin.Rollout(dctx, d.Rollout)
		if err != nil {
			d.Err = err.Error()
			continue
		}
		d.State, d.Reason, d.Err = ro.State, ro.Reason, ""
		if slices.Contains(terminal, ro.State) {
			d.Done = time.Since(t0)
			break
		}
	}
	if d.Done == 0 {
		d.Done = time.Since(t0)
		d.Err = fmt.Sprintf("the rollout did not end within %s (state %q)", p.DeployTimeout, d.State)
		// Abort it, or the next deploy of the group would be refused (409).
		if _, err := srv.Admin.RolloutAction(ctx, d.Rollout, "abort"); err != nil {
			d.Err += "; abort: " + err.Error()
		} else {
			d.Err += "; aborted by the benchmark"
		}
	}
	// The agents note a confirm when its answer arrives; the rollout may
	// end a moment before the last of them.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); sleep(ctx, 100*time.Millisecond) {
		pr := fl.Progress(id)
		if len(pr.Confirmed)+len(pr.Reverts) >= n {
			break
		}
	}
	pr := fl.Progress(id)
	d.Pulled, d.Confirmed = since(t0, pr.Pulled), since(t0, pr.Confirmed)
	for _, r := range pr.Reverts {
		if r.Injected {
			d.Injected++
			continue
		}
		d.FalseRev++
		if len(d.RevReasons) < 3 && !slices.Contains(d.RevReasons, r.Reason) {
			d.RevReasons = append(d.RevReasons, r.Reason)
		}
	}
}

func since(t0 time.Time, m map[string]time.Time) []time.Duration {
	out := make([]time.Duration, 0, len(m))
	for _, t := range m {
		out = append(out, t.Sub(t0))
	}
	slices.Sort(out)
	return out
}

func cpuOf(srv *Server) float64 {
	c, _ := CPUSeconds(srv.Pid)
	return c
}

func selfCPU() float64 {
	c, _ := CPUSeconds(os.Getpid())
	return c
}

// startProfile takes a CPU profile of the first deploy of each strategy
// (p.ProfileTime from now) in the background; the returned func waits for
// it and returns it (nil when none was taken).
func startProfile(ctx context.Context, p Params, srv *Server, ds deploySpec) func() *Profile {
	if ds.ofStrategy != 1 {
		return func() *Profile { return nil }
	}
	path := filepath.Join(ds.dir, fmt.Sprintf("cpu-deploy-%d-%s.pprof", ds.index, ds.strategy))
	return backgroundProfile(ctx, p, srv, p.ProfileTime, path, fmt.Sprintf("%d agents, deploy %d (%s), %s from CreateRelease", ds.n, ds.index, ds.strategy, p.ProfileTime))
}

// backgroundProfile takes a CPU profile of d from now into path in the
// background when the server serves pprof; the returned func waits for it
// and returns it (nil when none was taken).
func backgroundProfile(ctx context.Context, p Params, srv *Server, d time.Duration, path, label string) func() *Profile {
	if !p.Pprof || p.ProfileTime <= 0 || d <= 0 {
		return func() *Profile { return nil }
	}
	pr := &Profile{Label: label, Path: path}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.CPUProfile(ctx, d, path); err != nil {
			pr.Err = err.Error()
			return
		}
		pr.top()
	}()
	return func() *Profile { <-done; return pr }
}

// percentile returns the q-quantile (0..1) of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (c Counts) errors5xx() int {
	n := 0
	for _, r := range c {
		n += r.Errors5xx()
	}
	return n
}

func (c Counts) tooMany() int {
	n := 0
	for _, r := range c {
		n += r.TooMany
	}
	return n
}
