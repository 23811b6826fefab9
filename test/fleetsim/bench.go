package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Params of a benchmark run (Run).
type Params struct {
	ServerBin string // slipway-server, or test/cmd/slipway-server-pprof with Pprof
	Pprof     bool   // the binary serves pprof: take CPU profiles
	// SelfProfile, when set, is where the simulator writes its own CPU
	// profile (what the agents' side costs on the same CPUs).
	SelfProfile string
	Dir         string // work directory: per fleet a server directory, profiles
	Sizes       []int  // fleet sizes, each on a fresh server
	Agent       AgentConfig

	Strategies     []string      // api.StrategyAllAtOnce, api.StrategyRolling, in order
	Deploys        int           // deploys per strategy (2)
	RollingPercent int           // rolling batch size, percent of the fleet (10)
	IdleWindow     time.Duration // CPU measured over about this while idle (60s; see idleWindow)
	Settle         time.Duration // pause after enrolment and after deploys (10s)
	// IdleDelay is the quiet time before an idle window, counted from the
	// end of the enrolment or the last deploy (100s: the server's and the
	// agents' keep-alive timeout of 90 s has closed the connections the
	// burst opened, as an idle fleet's agents close theirs; at least
	// Settle).
	IdleDelay     time.Duration
	DeployTimeout time.Duration // give up on a deploy after this (5m)
	EnrolTimeout  time.Duration // give up on enrolment after this (10m)
	ProfileTime   time.Duration // CPU profile from the first deploy of each strategy on (20s; 0: none)
	StatusSamples int           // GET /v1/nodes samples per measurement (3)
	MaxConns      int           // connections to the server (0: from the file limit)
	WriteLimit    int           // the server's agent_write_limit (0: its default)

	Log io.Writer // progress lines
}

func (p *Params) defaults() {
	if p.Deploys == 0 {
		p.Deploys = 2
	}
	if p.RollingPercent == 0 {
		p.RollingPercent = 10
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&p.IdleWindow, time.Minute)
	def(&p.Settle, 10*time.Second)
	def(&p.IdleDelay, 100*time.Second)
	def(&p.DeployTimeout, 5*time.Minute)
	def(&p.EnrolTimeout, 10*time.Minute)
	if p.StatusSamples == 0 {
		p.StatusSamples = 3
	}
	if p.Log == nil {
		p.Log = io.Discard
	}
	p.Agent.Defaults()
}

func (p *Params) validate() error {
	var errs []error
	if p.ServerBin == "" {
		errs = append(errs, errors.New("no server binary"))
	}
	if len(p.Sizes) == 0 {
		errs = append(errs, errors.New("no fleet size"))
	}
	for _, n := range p.Sizes {
		if n < 1 {
			errs = append(errs, fmt.Errorf("fleet size %d: at least 1", n))
		}
	}
	if p.RollingPercent < 1 || p.RollingPercent > 100 {
		errs = append(errs, fmt.Errorf("rolling percent %d: 1 to 100", p.RollingPercent))
	}
	if p.IdleDelay < 0 {
		errs = append(errs, fmt.Errorf("idle delay %s: not negative", p.IdleDelay))
	}
	if p.Agent.FailureRate < 0 || p.Agent.FailureRate > 1 {
		errs = append(errs, fmt.Errorf("failure rate %g: 0 to 1", p.Agent.FailureRate))
	}
	return errors.Join(errs...)
}

// Result is a whole run.
type Result struct {
	Params  Params
	Start   time.Time
	Took    time.Duration
	Files   uint64 // this process's open-file limit
	Fleets  []FleetResult
	LoadEnd string
}

// Run measures every fleet size in turn and returns the figures. A fleet
// that breaks off (enrolment timed out, the server died) keeps what was
// measured and its error; Run goes on with the next size.
func Run(ctx context.Context, p Params) (Result, error) {
	p.defaults()
	if err := p.validate(); err != nil {
		return Result{}, fmt.Errorf("fleet benchmark: %w", err)
	}
	files, err := RaiseFileLimit()
	if err != nil {
		return Result{}, err
	}
	res := Result{Params: p, Start: time.Now().UTC(), Files: files}
	for _, n := range p.Sizes {
		dir := filepath.Join(p.Dir, fmt.Sprintf("fleet-%d", n))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return res, fmt.Errorf("fleet benchmark: %w", err)
		}
		fr := runFleet(ctx, p, n, dir, files)
		res.Fleets = append(res.Fleets, fr)
		if ctx.Err() != nil {
			break
		}
	}
	res.Took, res.LoadEnd = time.Since(res.Start).Round(time.Second), LoadAvg()
	return res, ctx.Err()
}

// maxConns is the connection budget: two per agent (a long-poll and a
// write), within the file limit of this process and of the server's
// (both share the limit here; leave room for everything else).
func maxConns(p Params, n int, files uint64) int {
	if p.MaxConns > 0 {
		return p.MaxConns
	}
	return max(64, min(2*n+64, int(files)-2000))
}

func logf(p Params, format string, args ...any) {
	fmt.Fprintf(p.Log, "%s fleetsim: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// idleWindow is the idle measurement's length: IdleWindow rounded to the
// nearest whole number of the agents' long-poll waits (at least one). An
// idle fleet's load comes in poll cycles, bunched after a deploy (every
// agent polls again within seconds of the others), so a window of whole
// cycles holds each agent's cycle once per wait whatever their phase; a
// 60 s window over 55 s cycles held one burst of polls, or part of a
// second. A window shorter than one wait (tests) is taken as it is.
func (p Params) idleWindow() time.Duration {
	w, cycle := p.IdleWindow, p.Agent.PollWait
	if cycle <= 0 || w < cycle {
		return w
	}
	return max(1, (w+cycle/2)/cycle) * cycle
}
