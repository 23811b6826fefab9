package rollout

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/shared/api"
)

// Analysis gates (slipway.toml [[analysis]], server/analysis). A wave
// whose nodes all confirmed is analysing while its rollout has gates: each
// gate measures every interval (the first one interval after the wave's
// nodes confirmed) until it has count conclusive measurements. The wave
// passes when every gate passed (and a canary's analysis window is over).
// A gate with more failed measurements than failure_limit halts the
// rollout as a failed node would (auto_revert applies); one with more
// inconclusive measurements in a row than consecutive_error_limit pauses
// it with the reason, and resume measures again.
//
// Queries never run inside a store transaction nor on the engine's
// goroutine: a step starts the measurements that are due after its
// transaction committed, each in a goroutine of its own; their results
// wait in memory until the next step records them on the rollout, in its
// transaction. The rollout's record keeps the counts and the newest
// measurements of each gate, so a restarted server (or a new leader)
// measures again where it stood; a measurement that was in flight is
// taken again.

// measured is a measurement waiting to be recorded.
type measured struct {
	wave  int
	gate  string
	query string
	m     analysis.Measurement
}

// dueQuery is a measurement a step decided to take.
type dueQuery struct {
	rollout string
	wave    int
	gate    analysis.Gate
	on      analysis.Wave
	at      time.Time
}

func (q dueQuery) key() string { return fmt.Sprintf("%s/%d/%s", q.rollout, q.wave, q.gate.Name) }

// analyser runs measurements and keeps their results until a step
// records them, and the counts for the metrics.
type analyser struct {
	mu       sync.Mutex
	inflight map[string]bool       // dueQuery.key: measuring, or measured and not yet recorded
	done     map[string][]measured // by rollout ID
	wg       sync.WaitGroup
	counts   map[[2]string]uint64 // gate, outcome -> measurements taken
	values   map[string]float64   // gate -> newest value
}

// init makes the maps; a.mu is held.
func (a *analyser) init() {
	if a.inflight == nil {
		a.inflight, a.done = map[string]bool{}, map[string][]measured{}
		a.counts, a.values = map[[2]string]uint64{}, map[string]float64{}
	}
}

// take removes the results waiting for rollout id.
func (a *analyser) take(id string) []measured {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	out := a.done[id]
	delete(a.done, id)
	return out
}

// settle ends the results of rollout id a step took: recorded (ok) or to
// be recorded by the next step.
func (a *analyser) settle(id string, ms []measured, ok bool) {
	if len(ms) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	if !ok {
		a.done[id] = append(ms, a.done[id]...)
		return
	}
	for _, m := range ms {
		delete(a.inflight, fmt.Sprintf("%s/%d/%s", id, m.wave, m.gate))
	}
}

// retain forgets the results and measurements in flight of rollouts
// that are no longer active (their results would never be recorded).
func (a *analyser) retain(active []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	keep := make(map[string]bool, len(active))
	for _, id := range active {
		keep[id] = true
	}
	for id, ms := range a.done {
		if keep[id] {
			continue
		}
		for _, m := range ms {
			delete(a.inflight, fmt.Sprintf("%s/%d/%s", id, m.wave, m.gate))
		}
		delete(a.done, id)
	}
}

// start measures each due query in a goroutine of its own, unless it is
// already in flight.
func (a *analyser) start(ctx context.Context, p *analysis.Prometheus, due []dueQuery) {
	for _, q := range due {
		a.mu.Lock()
		a.init()
		busy := a.inflight[q.key()]
		a.inflight[q.key()] = true
		a.mu.Unlock()
		if busy {
			continue
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.measure(ctx, p, q)
		}()
	}
}

func (a *analyser) measure(ctx context.Context, p *analysis.Prometheus, q dueQuery) {
	query, _ := analysis.Expand(q.gate.Query, q.on) // an error is measured as inconclusive too
	m := q.gate.Measure(ctx, p, q.on, q.at)
	a.mu.Lock()
	defer a.mu.Unlock()
	if ctx.Err() != nil {
		// The engine stopped (shutdown, or leadership lost): not a
		// measurement of the service; whoever drives the rollout next
		// measures again.
		delete(a.inflight, q.key())
		return
	}
	a.done[q.rollout] = append(a.done[q.rollout], measured{wave: q.wave, gate: q.gate.Name, query: query, m: m})
	a.counts[[2]string{q.gate.Name, string(m.Outcome)}]++
	if m.Value != nil {
		a.values[q.gate.Name] = *m.Value
	}
}

// AnalysisStats counts the analysis measurements this server took since
// it started, by {gate, outcome}, and gives each gate's newest value (for
// the metrics).
func (sm *Machine) AnalysisStats() (measurements map[[2]string]uint64, values map[string]float64) {
	a := &sm.analysis
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.counts), maps.Clone(a.values)
}

// WaitMeasurements waits for the measurements in flight (tests, shutdown).
func (sm *Machine) WaitMeasurements() { sm.analysis.wg.Wait() }

// analyse runs the gates of ro's analysing wave at now: it records the
// measurements obs brings, judges each gate, and schedules the ones due
// (in *obs.due). It returns Passed when every gate passed (or there is
// none), Running while one measures, and Halt or Paused after making ro
// halted or paused.
func (sm *Machine) analyse(t *tx, ro *rolloutRec, obs observed, now time.Time) (string, analysis.Verdict, error) {
	gates, err := analysis.FromStrategy(ro.Strategy.AnalysisGates)
	if err != nil {
		return "", "", fmt.Errorf("analysis gates: %w", err)
	}
	if len(gates) == 0 {
		return "", analysis.Passed, nil
	}
	runs := cloneRuns(ro.AnalysisRuns) // ro's runs may be shared with the cache
	if len(runs) != len(gates) || runs[0].Wave != ro.Wave {
		runs = make([]api.AnalysisRun, len(gates))
		for i, g := range gates {
			runs[i] = api.AnalysisRun{Gate: g.Name, Wave: ro.Wave, Verdict: string(analysis.Running), Measurements: []api.AnalysisMeasurement{}}
		}
	}
	ro.AnalysisRuns = runs
	for _, m := range obs.measured {
		if m.wave != ro.Wave {
			continue
		}
		for i := range runs {
			if runs[i].Gate != m.gate || runs[i].Verdict != string(analysis.Running) {
				continue
			}
			recordMeasurement(&runs[i], gates[i], m)
			if runs[i].Verdict == string(analysis.Passed) {
				if err := t.Event("server", "rollout.analysis.passed", ro.ID, ro.Waves[ro.Wave].Name+": "+runs[i].Reason); err != nil {
					return "", "", err
				}
			}
		}
	}
	all := true
	for i, g := range gates {
		run := &runs[i]
		switch analysis.Verdict(run.Verdict) {
		case analysis.Halt:
			p, err := sm.halt(t, ro, run.Reason)
			return p, analysis.Halt, err
		case analysis.Paused:
			ro.State, ro.Reason = api.RolloutPaused, fmt.Sprintf("%s; fix it, then `slipway rollout resume %s` measures again", run.Reason, ro.ID)
			return CrashPause, analysis.Paused, t.Event("server", "rollout.analysis.inconclusive", ro.ID, run.Reason)
		case analysis.Running:
			all = false
			if err := sm.scheduleGate(t, ro, g, run, obs, now); err != nil {
				return "", "", err
			}
		}
	}
	if !all {
		return "", analysis.Running, nil
	}
	return "", analysis.Passed, nil
}

// recordMeasurement adds m to run, keeping its newest MaxMeasurements, and
// judges the gate again.
func recordMeasurement(run *api.AnalysisRun, g analysis.Gate, m measured) {
	run.Query = m.query
	run.Measurements = append(run.Measurements, api.AnalysisMeasurement{At: m.m.At, Outcome: string(m.m.Outcome), Value: m.m.Value, Message: m.m.Message})
	if n := len(run.Measurements) - api.MaxMeasurements; n > 0 {
		run.Measurements = append([]api.AnalysisMeasurement(nil), run.Measurements[n:]...)
	}
	t := analysis.Tally{Successful: run.Successful, Failed: run.Failed, Inconclusive: run.Inconclusive, ErrorRun: run.ErrorRun}
	t.Add(m.m)
	run.Successful, run.Failed, run.Inconclusive, run.ErrorRun = t.Successful, t.Failed, t.Inconclusive, t.ErrorRun
	v, why := g.Judge(t)
	run.Verdict, run.Reason = string(v), why
}

// scheduleGate adds g's next measurement to obs.due when it is due: one
// interval after the previous one, or after the wave's nodes confirmed.
func (sm *Machine) scheduleGate(t *tx, ro *rolloutRec, g analysis.Gate, run *api.AnalysisRun, obs observed, now time.Time) error {
	w := &ro.Waves[ro.Wave]
	last := w.FinishedAt
	if n := len(run.Measurements); n > 0 {
		last = run.Measurements[n-1].At
	}
	if now.Sub(last) < g.Interval || obs.due == nil {
		return nil
	}
	on, err := sm.analysisWave(t, ro)
	if err != nil {
		return err
	}
	*obs.due = append(*obs.due, dueQuery{rollout: ro.ID, wave: ro.Wave, gate: g, on: on, at: now})
	return nil
}

// analysisWave is what the placeholders of ro's current wave are filled
// from: the nodes it published to, the release, the manifest and the
// labels those nodes share.
func (sm *Machine) analysisWave(t *tx, ro *rolloutRec) (analysis.Wave, error) {
	on := analysis.Wave{Release: ro.Release, Generation: ro.Manifest}
	for _, n := range ro.Waves[ro.Wave].Nodes {
		if n.PublishedAt.IsZero() {
			continue
		}
		on.Nodes = append(on.Nodes, n.Name)
		labels, err := t.Labels(n.Name)
		if err != nil {
			return analysis.Wave{}, err
		}
		if on.Labels == nil { // the first node
			on.Labels = make(map[string]string, len(labels))
			for k, v := range labels {
				on.Labels[k] = v
			}
			continue
		}
		for k, v := range on.Labels {
			if labels[k] != v {
				delete(on.Labels, k)
			}
		}
	}
	return on, nil
}

// retryAnalysis clears the runs of ro's current wave when one of its gates
// failed, so that the wave is analysed again from the start; it returns
// the gates retried.
func retryAnalysis(ro *rolloutRec) []string {
	var failed []string
	for _, run := range ro.AnalysisRuns {
		if run.Wave == ro.Wave && run.Verdict == string(analysis.Halt) {
			failed = append(failed, "analysis "+run.Gate)
		}
	}
	if len(failed) > 0 {
		ro.AnalysisRuns = nil
	}
	return failed
}

// resumeAnalysis lets the gates that paused ro measure again.
func resumeAnalysis(ro *rolloutRec) {
	runs := cloneRuns(ro.AnalysisRuns)
	for i := range runs {
		if runs[i].Verdict == string(analysis.Paused) {
			runs[i].Verdict, runs[i].Reason, runs[i].ErrorRun = string(analysis.Running), "", 0
		}
	}
	ro.AnalysisRuns = runs
}

func cloneRuns(runs []api.AnalysisRun) []api.AnalysisRun {
	if runs == nil {
		return nil
	}
	out := make([]api.AnalysisRun, len(runs))
	for i, r := range runs {
		r.Measurements = append([]api.AnalysisMeasurement{}, r.Measurements...)
		out[i] = r
	}
	return out
}
