package analysis

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Outcome of one measurement.
type Outcome string

// Outcomes.
const (
	Successful   Outcome = "successful"
	Failed       Outcome = "failed"
	Inconclusive Outcome = "inconclusive" // no data, Prometheus unreachable or in error
)

// Verdict of a gate over its measurements so far.
type Verdict string

// Verdicts.
const (
	Running Verdict = "running"      // measure again at the next interval
	Passed  Verdict = "passed"       // count conclusive measurements, failures within failure_limit
	Halt    Verdict = "failed"       // failures above failure_limit: halt the rollout as a failed node would
	Paused  Verdict = "inconclusive" // errors in a row above consecutive_error_limit: pause with the reason
)

// Gate defaults (Argo Rollouts' consecutive error limit).
const (
	DefaultInterval   = time.Minute
	DefaultCount      = 3
	DefaultErrorLimit = 4
)

// Measurement is one evaluation of a gate.
type Measurement struct {
	At      time.Time `json:"at"`
	Outcome Outcome   `json:"outcome"`
	Message string    `json:"message"`         // what was seen, or why it is inconclusive
	Value   *float64  `json:"value,omitempty"` // the value judged (Condition.Value); none when inconclusive
}

// Gate is one analysis gate.
type Gate struct {
	Name                  string
	Query                 string // PromQL with placeholders (Expand)
	Condition             Condition
	Interval              time.Duration // between measurements
	Count                 int           // conclusive measurements to pass
	FailureLimit          int           // failed measurements tolerated
	ConsecutiveErrorLimit int           // inconclusive measurements in a row tolerated
}

// WithDefaults fills unset values: interval 1m, count 3, consecutive
// error limit 4 (failure_limit 0 fails at the first failed measurement).
func (g Gate) WithDefaults() Gate {
	if g.Interval == 0 {
		g.Interval = DefaultInterval
	}
	if g.Count == 0 {
		g.Count = DefaultCount
	}
	if g.ConsecutiveErrorLimit == 0 {
		g.ConsecutiveErrorLimit = DefaultErrorLimit
	}
	return g
}

// Validate reports every problem of g (after WithDefaults).
func (g Gate) Validate() error {
	var errs []error
	if g.Name == "" {
		errs = append(errs, errors.New("analysis: name is required"))
	}
	if g.Query == "" {
		errs = append(errs, fmt.Errorf("analysis %q: query is required", g.Name))
	}
	if g.Condition.op == "" {
		errs = append(errs, fmt.Errorf("analysis %q: condition is required (e.g. \"result < 0.01\")", g.Name))
	}
	if g.Interval < time.Second {
		errs = append(errs, fmt.Errorf("analysis %q: interval %s, at least 1s", g.Name, g.Interval))
	}
	if g.Count < 1 || g.FailureLimit < 0 || g.ConsecutiveErrorLimit < 0 {
		errs = append(errs, fmt.Errorf("analysis %q: count must be ≥ 1, failure_limit and consecutive_error_limit ≥ 0", g.Name))
	}
	return errors.Join(errs...)
}

// querier is the Prometheus part a gate needs; *Prometheus has it.
type querier interface {
	Query(ctx context.Context, query string, at time.Time) ([]Series, error)
}

// Due reports whether g measures again at now, after ms.
func (g Gate) Due(ms []Measurement, now time.Time) bool {
	return len(ms) == 0 || now.Sub(ms[len(ms)-1].At) >= g.Interval
}

// Measure evaluates g once for wave w at time at.
func (g Gate) Measure(ctx context.Context, p querier, w Wave, at time.Time) Measurement {
	q, err := Expand(g.Query, w)
	if err != nil {
		return Measurement{At: at, Outcome: Inconclusive, Message: err.Error()}
	}
	series, err := p.Query(ctx, q, at)
	if err != nil {
		return Measurement{At: at, Outcome: Inconclusive, Message: err.Error()}
	}
	o, msg := g.Condition.Judge(series)
	m := Measurement{At: at, Outcome: o, Message: msg}
	if o != Inconclusive {
		v := g.Condition.Value(series)
		m.Value = &v
	}
	return m
}

// Tally counts a gate's measurements; it is what a verdict needs, so a
// caller may keep the tally and only the newest measurements.
type Tally struct {
	Successful, Failed, Inconclusive int
	ErrorRun                         int    // inconclusive measurements in a row, newest last
	Last                             string // the newest measurement's message
}

// Add counts m.
func (t *Tally) Add(m Measurement) {
	switch m.Outcome {
	case Successful:
		t.Successful, t.ErrorRun = t.Successful+1, 0
	case Failed:
		t.Failed, t.ErrorRun = t.Failed+1, 0
	case Inconclusive:
		t.Inconclusive++
		t.ErrorRun++
	}
	t.Last = m.Message
}

// Verdict counts ms: Halt once failures exceed failure_limit, Paused once
// the newest measurements are more inconclusive ones in a row than
// consecutive_error_limit, Passed after count conclusive measurements,
// else Running. The reason names the counts and the last message.
func (g Gate) Verdict(ms []Measurement) (Verdict, string) {
	var t Tally
	for _, m := range ms {
		t.Add(m)
	}
	return g.Judge(t)
}

// Judge is Verdict over a tally.
func (g Gate) Judge(t Tally) (Verdict, string) {
	ok, failed, errRun, last := t.Successful, t.Failed, t.ErrorRun, t.Last
	n := t.Successful + t.Failed + t.Inconclusive
	switch {
	case failed > g.FailureLimit:
		return Halt, fmt.Sprintf("analysis %q failed: %d of %d measurements failed (failure_limit %d); last: %s", g.Name, failed, n, g.FailureLimit, last)
	case errRun > g.ConsecutiveErrorLimit:
		return Paused, fmt.Sprintf("analysis %q inconclusive: %d measurements in a row without a result (consecutive_error_limit %d); last: %s", g.Name, errRun, g.ConsecutiveErrorLimit, last)
	case ok+failed >= g.Count:
		return Passed, fmt.Sprintf("analysis %q passed: %d of %d measurements successful", g.Name, ok, ok+failed)
	}
	return Running, ""
}
