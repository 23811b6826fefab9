package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// reportGenerations is how many of the newest generations a report lists.
const reportGenerations = 32

// Units reads the live state of m's units through sd (the systemd
// connection the agent uses; *systemd.Conn has Status), in name order. A
// unit whose state cannot be read is listed as "unknown" and its error is
// joined into the returned error.
func Units(ctx context.Context, sd interface {
	Status(ctx context.Context, unit string) (systemd.Status, error)
}, m *generation.Manifest) ([]api.UnitReport, error) {
	names := make([]string, 0, len(m.Units))
	for u := range m.Units {
		names = append(names, u)
	}
	sort.Strings(names)
	var errs []error
	out := make([]api.UnitReport, 0, len(names))
	for _, u := range names {
		st, err := sd.Status(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
			out = append(out, api.UnitReport{Name: u, Active: "unknown"})
			continue
		}
		out = append(out, api.UnitReport{Name: u, Active: st.ActiveState, Sub: st.SubState})
	}
	return out, errors.Join(errs...)
}

func (d *Daemon) status() status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

// setStatus records st and, if it changed, wakes the reporter.
func (d *Daemon) setStatus(st status) {
	d.mu.Lock()
	changed := st != d.st
	if changed {
		d.st = st
		d.seq++
	}
	d.mu.Unlock()
	if changed {
		d.kickReport()
	}
}

// setIdle reports idle with the last result on record, keeping a failed
// recover in view until a switch replaces it.
func (d *Daemon) setIdle() {
	if d.status().Outcome == OutcomeRecoverFailed {
		return
	}
	d.setStatus(status{State: api.AgentIdle})
}

// flush asks the reporter for a report now and waits until it has been
// sent (or has failed), or ctx ends.
func (d *Daemon) flush(ctx context.Context) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.flushed = append(d.flushed, ch)
	d.mu.Unlock()
	d.kickReport()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// kickReport asks the reporter for a report now.
func (d *Daemon) kickReport() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// reportLoop sends a report at once, then on every kick and at least
// every ReportInterval, until ctx ends. It is the only sender while the
// loop runs, so reports reach the server in order. Reports carry the agent
// version, state, the journal's phase while a switch runs, current / last
// good generations, the last outcome and reason, the newest generations of
// the history and the live state of the current generation's units; one
// goes out on every change. The report of the confirm phase rides on the
// confirm (server.go: carry).
func (d *Daemon) reportLoop(ctx context.Context) {
	bo := d.backoff(d.cfg.BackoffMax)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		timed := false
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
			timed = true
		}
		d.mu.Lock()
		flushed := d.flushed
		d.flushed = nil
		d.mu.Unlock()
		err := d.sendReport(ctx, timed && len(flushed) == 0)
		for _, ch := range flushed {
			close(ch)
		}
		if ctx.Err() != nil {
			return
		}
		next := d.cfg.ReportInterval
		if err != nil {
			next = min(bo.next(), next)
			ev := d.log.Debug()
			if bo.failures == 1 {
				ev = d.log.Warn()
			}
			ev.Err(err).Dur("retry_in", next).Msg("status report failed")
		} else {
			bo.reset()
		}
		t.Reset(next)
	}
}

// finalReport sends the last state if the server has not seen it, bounded
// by FinalReportTimeout (ctx has ended).
func (d *Daemon) finalReport(ctx context.Context) {
	d.mu.Lock()
	pending := d.sent != d.seq
	d.mu.Unlock()
	if !pending {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.FinalReportTimeout)
	defer cancel()
	if err := d.sendReport(ctx, false); err != nil {
		d.log.Warn().Err(err).Msg("final status report failed")
	}
}

// sendReport posts a report; a timed one (mayRide) that says what the
// last one said and that the server counts on the long-poll is not posted
// (shared/routinereport).
func (d *Daemon) sendReport(ctx context.Context, mayRide bool) error {
	r, seq := d.report(ctx)
	if mayRide && d.skip.Skip(r, d.now(), d.cfg.ReportInterval) {
		d.log.Debug().Msg("status unchanged: the report rides on the long-poll")
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	d.sending <- struct{}{} // the reporter is the only sender: never waits long
	ans, err := d.client.ReportAnswer(rctx, d.cfg.Name, r)
	<-d.sending
	if err != nil {
		return err
	}
	d.skip.Posted(r, d.now(), ans.Get(routinereport.ResponseHeader))
	d.log.Debug().Str("state", r.State).Str("phase", r.Phase).Int("current", r.Current).Str("outcome", r.Outcome).Msg("reported")
	d.mu.Lock()
	d.sent = max(d.sent, seq)
	d.mu.Unlock()
	return nil
}

// report builds a report from the daemon's status and the state database.
// It returns the status sequence number it reflects.
func (d *Daemon) report(ctx context.Context) (api.Report, uint64) {
	d.mu.Lock()
	st, seq := d.st, d.seq
	d.mu.Unlock()
	r := api.Report{
		AgentVersion: d.cfg.AgentVersion,
		State:        st.State,
		Target:       st.Target,
		Outcome:      st.Outcome,
		Reason:       st.Reason,
		Time:         d.now().UTC(),
	}
	snap, err := d.db.Snapshot()
	if err != nil {
		d.log.Error().Err(err).Msg("cannot read the agent state for the report")
		return r, seq
	}
	r.Current, r.LastGood = snap.Meta.Current, snap.Meta.LastGood
	if g, err := snap.Generation(snap.Meta.Current); err == nil {
		r.CurrentID, r.Warnings = g.ID, g.Warnings
	}
	if j := snap.Journal; j != nil {
		// A switch is in progress (ours, or a local command's), or one
		// that recover could not undo (then the status says failed).
		r.Phase = j.Phase
		if r.State != api.AgentFailed {
			r.State = api.AgentSwitching
		}
		if g, err := snap.Generation(j.To); err == nil && r.Target == "" {
			r.Target = g.ID
		}
	}
	if r.State == api.AgentIdle && r.Outcome == "" && snap.Result != nil {
		// Nothing happened since the start: the last result on record.
		r.Outcome, r.Reason = snap.Result.Outcome, snap.Result.Reason
	}
	gens := snap.Generations
	if len(gens) > reportGenerations {
		gens = gens[len(gens)-reportGenerations:]
	}
	for _, g := range gens {
		r.Generations = append(r.Generations, api.GenerationReport{Number: g.Number, ID: g.ID, Status: g.Status, Reason: g.Reason})
	}
	if d.sd != nil && r.Current != 0 {
		m, err := d.stager.Manifest(r.Current)
		if err == nil {
			uctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
			r.Units, err = Units(uctx, d.sd, m)
			cancel()
		}
		if err != nil {
			d.log.Debug().Err(err).Msg("units of the current generation not fully read")
		}
	}
	return r, seq
}
