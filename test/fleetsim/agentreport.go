package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/confirmwait"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// setStatus records st and, if it changed, wakes the reporter.
func (a *agent) setStatus(st status) {
	a.mu.Lock()
	changed := st != a.st
	if changed {
		a.st = st
		a.seq++
	}
	a.mu.Unlock()
	if changed {
		a.kickReport()
	}
}

func (a *agent) kickReport() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// flush asks for a report now and waits until it was sent (or failed) or
// ctx ends.
func (a *agent) flush(ctx context.Context) {
	ch := make(chan struct{})
	a.mu.Lock()
	a.flushed = append(a.flushed, ch)
	a.mu.Unlock()
	a.kickReport()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// reportLoop is agent/daemon's: a report at once, on every kick and at
// least every ReportInterval; after a failure sooner, with backoff.
func (a *agent) reportLoop(ctx context.Context) {
	bo := a.backoff()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		timed := false
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
			timed = true
		}
		a.mu.Lock()
		flushed := a.flushed
		a.flushed = nil
		a.mu.Unlock()
		err := a.sendReport(ctx, timed && len(flushed) == 0)
		for _, ch := range flushed {
			close(ch)
		}
		if ctx.Err() != nil {
			return
		}
		next := a.cfg.ReportInterval
		if err != nil {
			next = min(bo.next(), next)
		} else {
			bo.reset()
		}
		t.Reset(next)
	}
}

// sendReport is agent/daemon's: a timed report (mayRide) that says what
// the last one said, and that the server counts on the long-poll, is not
// posted.
func (a *agent) sendReport(ctx context.Context, mayRide bool) error {
	r := a.report()
	if mayRide && a.skip.Skip(r, time.Now(), a.cfg.ReportInterval) {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	a.sending <- struct{}{} // the reporter is the only sender: never waits long
	ans, err := a.w.report(rctx, a.name, a.token, r)
	<-a.sending
	if err != nil {
		return err
	}
	a.skip.Posted(r, time.Now(), ans.Get(routinereport.ResponseHeader))
	return nil
}

// report builds the body the real agent sends: state, phase, current and
// last good generation, the newest generations and one unit's state.
func (a *agent) report() api.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := api.Report{
		AgentVersion: "fleetsim", State: a.st.State, Phase: a.st.Phase, Target: a.st.Target,
		Outcome: a.st.Outcome, Reason: a.st.Reason, Current: a.current, CurrentID: a.curID, LastGood: a.current,
		Generations: append([]api.GenerationReport(nil), a.gens...), Time: time.Now().UTC(),
	}
	if a.current != 0 {
		r.Units = []api.UnitReport{{Name: unitName, Active: "active", Sub: "running"}}
	}
	return r
}

// errNotConfirmed is the last answer of a confirm the server declined.
var errNotConfirmed = errors.New("the server has not confirmed")

// confirm is agent/daemon's confirm: the confirm carries the report of the
// confirm phase (entering it posts nothing), sent once a report being
// posted has gone out (waiting at most half the window); ask every
// ConfirmInterval until the server confirms; no answer for the window
// gives up, overload answers extend it (see shared/confirmwait). A 400 to
// a confirm carrying a report (a server older than the field) posts the
// report apart and asks again without it at once.
func (a *agent) confirm(ctx context.Context, number int, id string, window time.Duration) error {
	now := time.Now()
	windowEnd := now.Add(window)
	a.setQuiet(status{State: api.AgentSwitching, Phase: "confirm", Target: id})
	rep := a.carry(ctx, now.Add(window/2))
	cw := confirmwait.New(now, windowEnd, a.cfg.OverloadConfirmTimeout)
	var last error
	for attempt := 1; ; attempt++ {
		end := cw.End()
		rctx, cancel := context.WithDeadline(ctx, confirmwait.AttemptEnd(time.Now(), end, a.cfg.RequestTimeout))
		resp, err := a.w.confirm(rctx, a.name, a.token, api.ConfirmRequest{ID: id, Number: number, Report: rep})
		cancel()
		wait := a.cfg.ConfirmInterval
		var se *api.StatusError
		switch ov := api.Overloaded(err); {
		case err == nil && resp.Confirmed:
			if rep != nil && resp.ReportRecorded {
				a.skip.Posted(*rep, time.Now(), routinereport.Seen)
			}
			return nil
		case err == nil:
			last = errNotConfirmed
			cw.Answered()
		case ov != nil:
			last = err
			wait = cw.Overload(time.Now(), a.cfg.ConfirmInterval, a.cfg.BackoffMax, ov.RetryAfter)
		case rep != nil && errors.As(err, &se) && se.Status == http.StatusBadRequest:
			last, wait, rep = err, 0, nil
			cw.Answered()
			fctx, cancel := context.WithDeadline(ctx, now.Add(window/2))
			a.flush(fctx)
			cancel()
		case ctx.Err() == nil && time.Now().Before(end):
			last = err
			cw.Answered()
		}
		if err := confirmPause(ctx, cw, wait); err != nil {
			return giveUp(cw, attempt, last, err)
		}
	}
}

// setQuiet records st without waking the reporter (the real agent's
// journal entering a phase posts no report by itself).
func (a *agent) setQuiet(st status) {
	a.mu.Lock()
	if st != a.st {
		a.st = st
		a.seq++
	}
	a.mu.Unlock()
}

// carry is agent/daemon's: the report the confirm carries, built once a
// report being posted has gone out (so the server sees them in order),
// waiting until by at the latest.
func (a *agent) carry(ctx context.Context, by time.Time) *api.Report {
	ctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	select {
	case a.sending <- struct{}{}:
		<-a.sending
	case <-ctx.Done():
	}
	r := a.report()
	return &r
}

func confirmPause(ctx context.Context, cw *confirmwait.Wait, wait time.Duration) error {
	end := cw.End()
	if !time.Now().Add(wait).Before(end) {
		wait = time.Until(end)
	}
	if !sleep(ctx, max(wait, 0)) {
		return ctx.Err()
	}
	if !time.Now().Before(end) {
		return context.DeadlineExceeded
	}
	return nil
}

func giveUp(cw *confirmwait.Wait, attempt int, last, why error) error {
	reason := "no confirm"
	switch {
	case errors.Is(why, context.Canceled):
		reason = "agent stopping"
	case cw.Overloaded():
		reason = "no confirm within overload_confirm_timeout while the server answered overloaded"
	}
	if last == nil {
		last = why
	}
	return fmt.Errorf("%s after %d attempt(s); last answer: %w", reason, attempt, last)
}

// backoff is agent/daemon's: jittered delays doubling from BackoffMin to
// BackoffMax.
type backoff struct {
	min, max, cur time.Duration
}

func (a *agent) backoff() backoff { return backoff{min: a.cfg.BackoffMin, max: a.cfg.BackoffMax} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	cur := b.cur
	b.cur = min(2*b.cur, b.max)
	return cur/2 + rand.N(cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }
