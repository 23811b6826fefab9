// Package health verifies a generation after a switch (agent/activate's
// verify phase): it watches the units the switch started and runs the
// manifest's health checks until everything has stayed green long enough,
// or says which item is not and why.
//
// The package only observes: it never starts, stops or reverts anything
// (that is the caller's job), never runs a check through a shell, and
// leaves no goroutine running once Verify has returned.
package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/generation"
)

// DefaultUnitInterval is how often unit states are polled when
// Verifier.UnitInterval is zero.
const DefaultUnitInterval = 200 * time.Millisecond

// ErrUnhealthy is what every *Failure returned by Verify unwraps to.
var ErrUnhealthy = errors.New("generation unhealthy")

// UnitHealth is what the caller's probe reports for one unit.
type UnitHealth struct {
	Healthy bool   // active (or a oneshot that exited successfully)
	Failed  bool   // ActiveState "failed": give up at once, no need to wait for the deadline
	State   string // human summary, e.g. "failed (Result=exit-code)", "activating (auto-restart)"
}

// UnitProbe reads one unit's state (the caller wraps D-Bus).
type UnitProbe func(ctx context.Context, unit string) (UnitHealth, error)

// Spec is what one verification checks and for how long.
type Spec struct {
	Units           []string           // checked implicitly: every unit the switch started
	Checks          []generation.Check // explicit checks from the manifest
	MinHealthyTime  time.Duration      // already defaulted by the caller; 0 is valid
	HealthyDeadline time.Duration      // already defaulted by the caller (0 → generation.DefaultHealthyDeadline)
}

// Progress is a snapshot for progress display.
type Progress struct {
	Elapsed  time.Duration // since Verify started
	Green    bool          // every unit and check green right now
	GreenFor time.Duration // how long green has held (0 when not green)
	Failing  string        // first item not green and its last state, e.g. `web-http: GET …: status 503`
}

// Verifier verifies generations. Its zero value is not usable: Probe is
// required when a Spec names units or unit checks.
type Verifier struct {
	Probe        UnitProbe
	Log          zerolog.Logger
	UnitInterval time.Duration  // how often unit states are polled (0 → DefaultUnitInterval)
	OnProgress   func(Progress) // optional, called at most once per unit poll interval
	ExecEnv      []string       // optional extra environment ("K=V") for exec checks
}

// Failure says why a generation is unhealthy. It unwraps to ErrUnhealthy.
type Failure struct {
	Check   string        // the check name, or "unit:<name>" for implicit unit checks
	Reason  string        // its last error or state
	Elapsed time.Duration // since Verify started
}

func (f *Failure) Error() string {
	if f.Check == "" {
		return fmt.Sprintf("generation unhealthy after %s: %s", f.Elapsed, f.Reason)
	}
	return fmt.Sprintf("health check %q failing after %s: %s", f.Check, f.Elapsed, f.Reason)
}

// Unwrap returns ErrUnhealthy.
func (f *Failure) Unwrap() error { return ErrUnhealthy }

// item is one thing watched: an implicit unit or an explicit check.
type item struct {
	name      string // "unit:<unit>" or the check's name
	kind      string
	interval  time.Duration
	timeout   time.Duration
	threshold int           // consecutive counted failures that fail fast; 0: never
	grace     time.Duration // failures before this (and before a first pass) are not counted
	run       func(ctx context.Context) (fatal bool, err error)
}

// status is the loop's view of one item.
type status struct {
	seen, green, passed bool
	fails               int    // consecutive
	last                string // last error, or "" after a pass
}

type result struct {
	i     int
	fatal bool
	err   error
}

// Verify blocks until the generation is healthy (nil) or not (a *Failure),
// or ctx ends (ctx.Err() wrapped). A Spec with an unusable check (unknown
// kind, no target or command) fails at once with a *Failure.
//
//   - Every unit in Spec.Units is probed every Verifier.UnitInterval (default
//     200ms) and must be Healthy. Each explicit check runs on its own
//     Interval (default generation.DefaultCheckInterval) with its own
//     Timeout (default generation.DefaultCheckTimeout), each in its own
//     goroutine; results are gathered in one loop.
//   - Green means every unit is Healthy and every check's last result is a
//     pass. The generation is healthy once green has held continuously for
//     MinHealthyTime (with MinHealthyTime 0, at the first moment everything
//     is green). Any failing result restarts that clock. Healthiness is
//     noticed at the next check result or unit poll.
//   - Fail fast: a unit (implicit or a check of kind unit) reported Failed
//     makes the generation unhealthy at once. A check that fails
//     FailureThreshold consecutive times (default
//     generation.DefaultFailureThreshold) does too, counting from its first
//     pass or from the end of its startup grace, InitialDelay (default
//     generation.DefaultInitialDelay, from the start of Verify), whichever
//     comes first: services take time to start, but one whose check never
//     passes fails about InitialDelay + FailureThreshold × Interval after the
//     switch instead of at the deadline. Failures inside the grace are
//     reported (progress, the deadline's Failure) but not counted. With a
//     HealthyDeadline no longer than the grace, only the deadline applies
//     before a first pass.
//   - When HealthyDeadline passes without the generation becoming healthy,
//     the Failure names the first item that is not green (units first, then
//     checks, each by name) with its last error or state; if everything is
//     green but not yet for MinHealthyTime, it names the item that failed
//     last and says so.
//   - Check kinds: unit asks the UnitProbe; http sends a GET, follows no
//     redirect, reads at most 64 KiB of the body and passes on 2xx only; tcp
//     connects and closes; exec runs Command without a shell and passes on
//     exit status 0, else reports the status and the last 512 bytes of its
//     combined output, trimmed. A check running past its Timeout fails with
//     "timed out after <timeout>: …".
func (v *Verifier) Verify(ctx context.Context, s Spec) error {
	start := time.Now()
	log := v.Log.With().Str("component", "health").Logger()

	// No proxy (checks target the node itself) and a fresh connection per
	// run, so no idle connection outlives Verify.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	items, err := v.items(s, client)
	if f, ok := errors.AsType[*Failure](err); ok {
		return fail(log, f)
	} else if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	results := make(chan result)
	for i, it := range items {
		wg.Go(func() { poll(ctx, i, it, results) })
	}
	return v.await(ctx, &watch{s: s, items: items, st: make([]status, len(items)), start: start, lastRed: -1, log: log}, results)
}

// watch is the state of one Verify: each item's status and the green
// clock.
type watch struct {
	s          Spec
	items      []item
	st         []status
	start      time.Time
	lastRed    int       // the item whose failure last reset the green clock; -1: none
	greenSince time.Time // zero while not green
	log        zerolog.Logger
}

// await gathers the items' results until the generation is healthy, fails,
// or ctx ends.
func (v *Verifier) await(ctx context.Context, w *watch, results <-chan result) error {
	tick := time.NewTicker(cmp.Or(v.UnitInterval, DefaultUnitInterval))
	defer tick.Stop()
	deadline := time.NewTimer(cmp.Or(w.s.HealthyDeadline, generation.DefaultHealthyDeadline))
	defer deadline.Stop()
	ticked := false
	// wake fires when green will have held for MinHealthyTime, so a short
	// MinHealthyTime is not rounded up to the next poll.
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	defer wake.Stop()
	for {
		now := time.Now()
		green := w.clock(now)
		if green && now.Sub(w.greenSince) >= w.s.MinHealthyTime {
			w.log.Info().Str("result", "healthy").Dur("elapsed", now.Sub(w.start)).Msg("generation healthy")
			return nil
		}
		if ticked && v.OnProgress != nil {
			v.OnProgress(w.progress(now, green))
		}
		ticked = false
		var wakeC <-chan time.Time
		if green {
			wake.Reset(w.s.MinHealthyTime - now.Sub(w.greenSince))
			wakeC = wake.C
		}

		select {
		case <-wakeC:
		case <-ctx.Done():
			return fmt.Errorf("verify health: %w", ctx.Err())
		case <-tick.C:
			ticked = true
		case <-deadline.C:
			return fail(w.log, w.deadlineFailure())
		case r := <-results:
			if ctx.Err() != nil {
				return fmt.Errorf("verify health: %w", ctx.Err())
			}
			if f := w.record(r); f != nil {
				return fail(w.log, f)
			}
		}
	}
}

// clock reports whether every item is green at now, starting the green
// clock when it just turned green and stopping it when not.
func (w *watch) clock(now time.Time) bool {
	green := firstNotGreen(w.st) < 0
	switch {
	case !green:
		w.greenSince = time.Time{}
	case w.greenSince.IsZero():
		w.greenSince = now
	}
	return green
}

// progress is what Verifier.OnProgress is told at now.
func (w *watch) progress(now time.Time, green bool) Progress {
	p := Progress{Elapsed: now.Sub(w.start), Green: green}
	if green {
		p.GreenFor = now.Sub(w.greenSince)
	} else {
		i := firstNotGreen(w.st)
		p.Failing = w.items[i].name + ": " + w.st[i].reason()
	}
	return p
}

// deadlineFailure says why the healthy deadline passed: the first item
// not green, or green that did not hold for MinHealthyTime.
func (w *watch) deadlineFailure() *Failure {
	f := &Failure{Elapsed: cmp.Or(w.s.HealthyDeadline, generation.DefaultHealthyDeadline)}
	if i := firstNotGreen(w.st); i >= 0 {
		f.Check, f.Reason = w.items[i].name, w.st[i].reason()
		return f
	}
	f.Reason = fmt.Sprintf("green for only %s of min_healthy_time %s",
		time.Since(w.greenSince).Round(time.Millisecond), w.s.MinHealthyTime)
	if w.lastRed >= 0 {
		f.Check = w.items[w.lastRed].name
	}
	return f
}

// record takes one result, logs a change of its item between pass and
// fail, and returns the *Failure that ends Verify: a fatal result, or a
// check failing its threshold.
func (w *watch) record(r result) *Failure {
	it, ss := w.items[r.i], &w.st[r.i]
	changed := !ss.seen || ss.green != (r.err == nil)
	ss.seen = true
	if r.err == nil {
		ss.green, ss.passed, ss.fails, ss.last = true, true, 0, ""
	} else {
		ss.green, ss.last = false, r.err.Error()
		if ss.passed || time.Since(w.start) >= it.grace {
			ss.fails++
		}
		w.lastRed = r.i
	}
	if changed {
		ev, res := w.log.Info(), "pass"
		if r.err != nil {
			ev, res = w.log.Warn().Str("err", ss.last), "fail"
		}
		ev.Str("check", it.name).Str("kind", it.kind).Str("result", res).Msg("health check " + res)
	}
	if r.err != nil && (r.fatal || it.threshold > 0 && ss.fails >= it.threshold) {
		return &Failure{Check: it.name, Reason: ss.last, Elapsed: time.Since(w.start).Round(time.Millisecond)}
	}
	return nil
}

func fail(log zerolog.Logger, f *Failure) error {
	log.Warn().Str("check", f.Check).Str("result", "unhealthy").Str("err", f.Reason).
		Dur("elapsed", f.Elapsed).Msg("generation unhealthy")
	return f
}

func (s status) reason() string {
	if !s.seen {
		return "no result yet"
	}
	return s.last
}

// firstNotGreen returns the index of the first item not green, or -1.
func firstNotGreen(st []status) int {
	for i, s := range st {
		if !s.green {
			return i
		}
	}
	return -1
}

// poll runs it every interval and sends its results until ctx ends.
func poll(ctx context.Context, i int, it item, out chan<- result) {
	t := time.NewTicker(it.interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, it.timeout)
		fatal, err := it.run(rctx)
		if err != nil && errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("timed out after %s: %w", it.timeout, err)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- result{i: i, fatal: fatal, err: err}:
		case <-ctx.Done():
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// items lists what s watches: units first, then checks, each sorted by name.
func (v *Verifier) items(s Spec, client *http.Client) ([]item, error) {
	units := slices.Sorted(slices.Values(s.Units))
	checks := slices.SortedFunc(slices.Values(s.Checks), func(a, b generation.Check) int {
		return cmp.Compare(a.Name, b.Name)
	})
	var items []item
	for _, u := range units {
		if v.Probe == nil {
			return nil, errors.New("verify health: no unit probe")
		}
		items = append(items, item{
			name:     "unit:" + u,
			kind:     generation.CheckUnit,
			interval: cmp.Or(v.UnitInterval, DefaultUnitInterval),
			timeout:  generation.DefaultCheckTimeout, // of one probe call
			run:      v.unitRun(u, false),
		})
	}
	for _, c := range checks {
		it := item{
			name:      c.Name,
			kind:      c.Kind,
			interval:  c.Interval.Or(generation.DefaultCheckInterval),
			timeout:   c.Timeout.Or(generation.DefaultCheckTimeout),
			threshold: cmp.Or(c.FailureThreshold, generation.DefaultFailureThreshold),
			grace:     c.InitialDelay.Or(generation.DefaultInitialDelay),
		}
		bad := func(reason string) error { return &Failure{Check: c.Name, Reason: reason} }
		switch {
		case c.Kind == generation.CheckExec && len(c.Command) == 0:
			return nil, bad("exec check without a command")
		case c.Kind == generation.CheckExec:
			it.run = v.execRun(c.Command)
		case c.Target == "":
			return nil, bad(c.Kind + " check without a target")
		case c.Kind == generation.CheckUnit && v.Probe == nil:
			return nil, errors.New("verify health: no unit probe")
		case c.Kind == generation.CheckUnit:
			it.run = v.unitRun(c.Target, true)
		case c.Kind == generation.CheckHTTP:
			it.run = httpRun(client, c.Target)
		case c.Kind == generation.CheckTCP:
			it.run = tcpRun(c.Target, it.timeout)
		default:
			return nil, bad(fmt.Sprintf("unknown check kind %q", c.Kind))
		}
		items = append(items, it)
	}
	return items, nil
}
