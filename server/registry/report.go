package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/slipway-dev/slipway/shared/api"
)

// agentReport is an agent's report, checked, with what the routine-report
// cache (seen.go) keeps of it.
type agentReport struct {
	rep  api.Report
	fp   [32]byte
	seen seenRec
}

// stampReport gives rep the time now when it has none, and takes what
// the routine-report cache keeps of it.
func (r *Registry) stampReport(rep api.Report) agentReport {
	now := r.cfg.Now().UTC()
	if rep.Time.IsZero() {
		rep.Time = now
	}
	return agentReport{rep: rep, fp: reportPrint(rep), seen: seenRec{At: now, ReportTime: rep.Time}}
}

// Report records an agent's report. A report that is not one an agent can
// make is ErrBadReport (validate.go) and changes nothing. A routine
// report, one that says what the node's last report said, only updates
// when the node was last seen, in memory (seen.go).
func (r *Registry) Report(ctx context.Context, name string, rep api.Report) error {
	ar := r.stampReport(rep)
	if err := reportShape(ar.rep); err != nil {
		return err
	}
	if ok, err := r.seenRoutine(ctx, name, ar.fp, ar.seen); err != nil || ok {
		return err
	}
	if err := r.checkReportIDs(ctx, name, ar.rep); err != nil {
		return err
	}
	return r.storeReport(ctx, name, ar)
}

// storeReport writes a checked report into the node's record.
func (r *Registry) storeReport(ctx context.Context, name string, ar agentReport) error {
	rev, err := r.updateRev(ctx, func(t *txn) error {
		n, err := t.node(name)
		if err != nil {
			return err
		}
		return r.putReport(t, name, n, ar)
	})
	if err != nil {
		return err
	}
	r.seen.stored(name, ar.fp, rev, ar.seen)
	return nil
}

// node reads node name's record in t (ErrNotFound when there is none).
func (t *txn) node(name string) (nodeRec, error) {
	var n nodeRec
	ok, err := t.get(kNodes+name, &n)
	if err != nil {
		return nodeRec{}, err
	}
	if !ok {
		return nodeRec{}, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	return n, nil
}

// putReport writes n with ar as its last report, and the audit event the
// report makes: the node failing, or switching to another generation.
func (r *Registry) putReport(t *txn, name string, n nodeRec, ar agentReport) error {
	rep := ar.rep
	prev := n.Report
	n.LastSeen = ar.seen.At
	if rep.AgentVersion != "" {
		n.AgentVersion = rep.AgentVersion
	}
	n.Report, n.ReportAt = &rep, ar.seen.At
	if err := t.put(kNodes+name, n); err != nil {
		return err
	}
	if rep.State == api.AgentFailed && (prev == nil || prev.State != api.AgentFailed || prev.Target != rep.Target) {
		return r.event(t, "node:"+name, "node.failed", name, rep.Reason)
	}
	if rep.Outcome == "switched" && prev != nil && prev.CurrentID != rep.CurrentID {
		return r.event(t, "node:"+name, "node.switched", name, fmt.Sprintf("generation %d %s", rep.Current, rep.CurrentID))
	}
	return nil
}

// Confirm confirms a node's switch to a generation published to it. A
// confirm of the generation the node confirmed last, with the same number,
// writes nothing (an agent retrying its confirm): it only counts as the
// node being seen.
//
// A confirm may carry the agent's report (api.ConfirmRequest.Report, the
// report of its confirm phase): it is checked as Report checks it, before
// anything is written, and recorded in the confirm's own transaction, so
// an agent makes one write where it made two. A report about another
// generation than the one confirmed is ErrBadReport. The report is
// recorded even when the confirm is refused (a generation never published
// to the node): the server then knows what the agent is waiting for.
func (r *Registry) Confirm(ctx context.Context, name string, req api.ConfirmRequest) (bool, error) {
	if err := confirmShape(req); err != nil {
		return false, err
	}
	ar, err := r.confirmReport(ctx, name, req)
	if err != nil {
		return false, err
	}
	if again, err := r.confirmedAgain(ctx, name, req); err != nil || again {
		if again && ar != nil {
			err = r.Report(ctx, name, ar.rep)
		}
		return again && err == nil, err
	}
	rev, err := r.updateRev(ctx, func(t *txn) error { return r.putConfirm(t, name, req, ar) })
	switch {
	case err == nil && ar != nil:
		r.seen.stored(name, ar.fp, rev, ar.seen)
	case errors.Is(err, ErrConflict) && ar != nil:
		if rerr := r.storeReport(ctx, name, *ar); rerr != nil {
			err = errors.Join(err, fmt.Errorf("the confirm's report: %w", rerr))
		}
	}
	return err == nil, err
}

// confirmReport checks the report a confirm carries (nil when none).
func (r *Registry) confirmReport(ctx context.Context, name string, req api.ConfirmRequest) (*agentReport, error) {
	if req.Report == nil {
		return nil, nil
	}
	if req.Report.Target != req.ID {
		return nil, badReport("report.target", "%q is not the generation confirmed (%s)", req.Report.Target, req.ID)
	}
	ar := r.stampReport(*req.Report)
	if err := reportShape(ar.rep); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := r.checkReportIDs(ctx, name, ar.rep); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return &ar, nil
}

// putConfirm writes the confirm of req in t: the node's record (with the
// report ar, when the confirm carries one), the confirm record and its
// audit event. A generation never published to the node is ErrConflict.
func (r *Registry) putConfirm(t *txn, name string, req api.ConfirmRequest, ar *agentReport) error {
	ok, err := t.get(kNodeGens+name+"/"+req.ID, nil)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: generation %s was never published to node %s", ErrConflict, req.ID, name)
	}
	n, err := t.node(name)
	if err != nil {
		return err
	}
	now := r.cfg.Now().UTC()
	n.Confirmed, n.LastSeen = req.ID, now
	if ar != nil {
		err = r.putReport(t, name, n, *ar)
	} else {
		err = t.put(kNodes+name, n)
	}
	if err != nil {
		return err
	}
	if err := t.put(kConfirmed+name+"/"+req.ID, confirmRec{Number: req.Number, At: now}); err != nil {
		return err
	}
	return r.event(t, "node:"+name, "node.confirm", name, fmt.Sprintf("generation %d %s", req.Number, req.ID))
}

// confirmedAgain reports whether req repeats the node's last confirm; if
// so the node counts as seen now.
func (r *Registry) confirmedAgain(ctx context.Context, name string, req api.ConfirmRequest) (bool, error) {
	var c confirmRec
	if ok, err := r.getJSON(ctx, kConfirmed+name+"/"+req.ID, &c); err != nil || !ok || c.Number != req.Number {
		return false, err
	}
	var n nodeRec
	if ok, err := r.getJSON(ctx, kNodes+name, &n); err != nil || !ok || n.Confirmed != req.ID {
		return false, err
	}
	if err := r.seen.load(ctx, r.st); err != nil {
		return false, err
	}
	r.seen.touch(name, r.cfg.Now().UTC())
	return true, nil
}
