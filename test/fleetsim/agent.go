package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/ctxsleep"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// AgentConfig are the simulated agents' timings, agent/daemon's Config
// fields of the same names, with the same defaults (Defaults).
type AgentConfig struct {
	PollWait               time.Duration // long-poll wait (30s)
	ReportInterval         time.Duration // longest time between reports (60s)
	ConfirmInterval        time.Duration // between two confirm requests (1s)
	OverloadConfirmTimeout time.Duration // bound of a confirm while the server answers overloaded (5m)
	BackoffMin             time.Duration // first delay after a failed request (1s)
	BackoffMax             time.Duration // longest delay (30s)
	RequestTimeout         time.Duration // one request other than the long-poll (30s)
	ResyncInterval         time.Duration // poll without If-None-Match at least this often (5m)
	MinPollInterval        time.Duration // floor between polls that bring no news (1s)

	// SwitchTime is how long a simulated switch takes from the pull to
	// the confirm phase (stage, flip, units, health checks).
	SwitchTime time.Duration
	// FailureRate is the probability that a switch fails its health
	// checks and the agent reverts it (a real failure, not counted as a
	// false revert).
	FailureRate float64
	// Labels are sent at enrolment.
	Labels map[string]string
}

// Defaults fills zero fields with agent/daemon's defaults (SwitchTime: 2s).
func (c *AgentConfig) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PollWait, api.DefaultPollWait)
	def(&c.ReportInterval, time.Minute)
	def(&c.ConfirmInterval, time.Second)
	def(&c.OverloadConfirmTimeout, 5*time.Minute)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.RequestTimeout, 30*time.Second)
	def(&c.ResyncInterval, 5*time.Minute)
	def(&c.MinPollInterval, time.Second)
	def(&c.SwitchTime, 2*time.Second)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
}

// observer receives what the agents do, for the figures.
type observer interface {
	enrolled(name string, err error)
	pulled(name, id string, at time.Time)
	confirmed(name, id string, at time.Time)
	reverted(name, id, reason string, injected bool, at time.Time)
}

// status is what the agent reports about itself (agent/daemon's status
// plus the journal's phase).
type status struct {
	State, Phase, Target, Outcome, Reason string
}

// agent is one simulated slipway-agent.
type agent struct {
	name  string
	cfg   *AgentConfig
	w     *wire
	obs   observer
	token string
	kick  chan struct{}
	// sending holds a token while a report is posted (see carry).
	sending chan struct{}
	// skip decides which timed reports ride on the long-poll, as
	// agent/daemon's does (shared/routinereport).
	skip routinereport.Skipper

	mu      sync.Mutex
	st      status
	seq     uint64
	flushed []chan struct{}
	gens    []api.GenerationReport // oldest first
	current int                    // generation number
	curID   string
	quar    map[string]bool // quarantined IDs
}

func newAgent(name string, cfg *AgentConfig, w *wire, obs observer) *agent {
	return &agent{name: name, cfg: cfg, w: w, obs: obs, kick: make(chan struct{}, 1), sending: make(chan struct{}, 1), st: status{State: api.AgentIdle}, quar: map[string]bool{}}
}

// run enrols with join, then reports and polls until ctx ends.
func (a *agent) run(ctx context.Context, join string) {
	err := a.enroll(ctx, join)
	a.obs.enrolled(a.name, err)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.reportLoop(ctx) })
	a.loop(ctx)
	wg.Wait()
}

// enroll is agent/daemon's enroll with a join token: retried with backoff
// until the server answers, ended by a refusal.
func (a *agent) enroll(ctx context.Context, join string) error {
	req := api.EnrollRequest{Name: a.name, JoinToken: join, Labels: a.cfg.Labels, AgentVersion: "fleetsim"}
	bo := a.backoff()
	for {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
		resp, err := a.w.enroll(rctx, req)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil && resp.NodeToken == "":
			return errors.New("enrol: the server answered without a node token")
		case err == nil:
			a.token = resp.NodeToken
			return nil
		case permanentRefusal(err):
			return fmt.Errorf("enrol %s: %w", a.name, err)
		}
		sleep(ctx, bo.next())
	}
}

// loop is agent/daemon's loop without gossip: long-poll, act, long-poll.
func (a *agent) loop(ctx context.Context) {
	bo := a.backoff()
	have := ""
	lastFull := time.Now()
	for ctx.Err() == nil {
		ask := have
		if ask != "" && time.Since(lastFull) >= a.cfg.ResyncInterval {
			ask = ""
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+a.cfg.RequestTimeout)
		sent := a.skip.Carry(time.Now())
		var hdr http.Header
		if sent != "" {
			hdr = http.Header{routinereport.RequestHeader: {sent}}
		}
		des, has, ans, err := a.w.desired(pctx, a.name, a.token, ask, a.cfg.PollWait, hdr)
		cancel()
		if err == nil && a.skip.Answer(sent, ans.Get(routinereport.ResponseHeader)) {
			a.kickReport()
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		switch {
		case des == nil && !has:
			a.idle(ctx, start)
		case des == nil:
			lastFull, have = time.Now(), ""
			a.setStatus(status{State: api.AgentIdle})
			a.idle(ctx, start)
		default:
			news := des.ETag() != have
			have = des.ETag()
			a.handle(ctx, des)
			lastFull = time.Now()
			if !news {
				a.idle(ctx, start)
			}
		}
	}
}

func (a *agent) idle(ctx context.Context, start time.Time) {
	if rest := a.cfg.MinPollInterval - time.Since(start); rest > 0 {
		sleep(ctx, rest)
	}
}

// handle acts on a desired generation as agent/daemon's handle does:
// nothing when it is current or quarantined here, else switch, confirm,
// and on a failed switch or a confirm that did not come, revert and
// quarantine.
func (a *agent) handle(ctx context.Context, des *api.Desired) {
	a.mu.Lock()
	current, quarantined := a.curID == des.ID, a.quar[des.ID]
	a.mu.Unlock()
	switch {
	case current:
		a.setStatus(status{State: api.AgentIdle})
		return
	case quarantined:
		a.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: "quarantined", Reason: "quarantined here"})
		return
	}
	m, err := generation.Parse(des.Manifest)
	if err != nil {
		a.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: "rejected", Reason: err.Error()})
		return
	}
	a.obs.pulled(a.name, des.ID, time.Now())
	number := a.stage(des.ID)
	a.setStatus(status{State: api.AgentSwitching, Phase: "stage", Target: des.ID})
	if !sleep(ctx, a.cfg.SwitchTime) {
		a.revert(des.ID, number, "agent stopping", true)
		return
	}
	if rand.Float64() < a.cfg.FailureRate {
		a.revert(des.ID, number, "health check failed (simulated)", true)
		return
	}
	window := time.Duration(m.ConfirmTimeout)
	if window <= 0 {
		window = generation.DefaultConfirmTimeout
	}
	if err := a.confirm(ctx, number, des.ID, window); err != nil {
		a.revert(des.ID, number, err.Error(), ctx.Err() != nil)
		return
	}
	a.commit(des.ID, number)
	a.obs.confirmed(a.name, des.ID, time.Now())
	a.setStatus(status{State: api.AgentIdle, Outcome: "switched"})
}

// stage adds generation id as the next number (status staged).
func (a *agent) stage(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 1
	if len(a.gens) > 0 {
		n = a.gens[len(a.gens)-1].Number + 1
	}
	a.gens = append(a.gens, api.GenerationReport{Number: n, ID: id, Status: "staged"})
	if len(a.gens) > reportGenerations {
		a.gens = a.gens[len(a.gens)-reportGenerations:]
	}
	return n
}

// reportGenerations is agent/daemon's: the newest generations a report lists.
const reportGenerations = 32

func (a *agent) setGen(number int, st, reason string) {
	for i := range a.gens {
		if a.gens[i].Number == number {
			a.gens[i].Status, a.gens[i].Reason = st, reason
		}
	}
}

func (a *agent) commit(id string, number int) {
	a.mu.Lock()
	a.setGen(number, "good", "")
	a.current, a.curID = number, id
	a.mu.Unlock()
}

// revert quarantines id and reports the revert; injected says the switch
// failed on the node (not for lack of a confirm) or the agent stopped.
func (a *agent) revert(id string, number int, reason string, injected bool) {
	a.mu.Lock()
	a.setGen(number, "quarantined", reason)
	a.quar[id] = true
	a.mu.Unlock()
	a.obs.reverted(a.name, id, reason, injected, time.Now())
	a.setStatus(status{State: api.AgentFailed, Target: id, Outcome: "reverted", Reason: reason})
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool { return ctxsleep.Sleep(ctx, d) }
