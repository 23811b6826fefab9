// Package metrics is the agent daemon's Prometheus instrumentation: what
// its switches did and how long they took, and which generation the node
// runs. `slipway-agent run` serves it on an address of its own
// (metrics_listen, default 127.0.0.1:9432), never on anything that carries
// a credential.
//
// Metrics (every label value comes from a small fixed set; free text such
// as revert reasons, unit names or generation IDs never becomes a label):
//
//	slipway_agent_switches_total{outcome}          switches the daemon ran: switched, unchanged, reverted, revert_failed, rejected
//	slipway_agent_reverts_total{reason}            reverts, by why: unit_failed, health_check, no_confirm, interrupted, other
//	slipway_agent_switch_duration_seconds          flip + daemon-reload + unit jobs of a switch (Outcome.Timings["switch"])
//	slipway_agent_verify_duration_seconds          health verification of a switch (Outcome.Timings["verify"])
//	slipway_agent_current_generation               the generation `current` points at (0: none), read at every scrape
//	slipway_agent_last_switch_timestamp_seconds    end of the last switch or revert that changed the node (Unix time; 0: none known)
//
// plus the Go runtime and process collectors. Everything is derived from
// the activate.Outcome values the daemon gets back from Apply and Recover
// (Observe) and from the state database (Options.Current): this package
// never changes the node and never reads a secret.
package metrics

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/shared/metricshttp"
)

// Values of the outcome label of slipway_agent_switches_total.
const (
	OutcomeSwitched     = "switched"      // committed
	OutcomeUnchanged    = "unchanged"     // already current; nothing restarted
	OutcomeReverted     = "reverted"      // failed and reverted to the last good generation
	OutcomeRevertFailed = "revert_failed" // failed, and so did the revert
	OutcomeRejected     = "rejected"      // failed while staging; the node was not changed
)

// Values of the reason label of slipway_agent_reverts_total.
const (
	ReasonUnitFailed  = "unit_failed"  // a unit job failed, or a started unit failed while verifying
	ReasonHealthCheck = "health_check" // an explicit health check stayed red (or green too briefly)
	ReasonNoConfirm   = "no_confirm"   // no confirm from the server within confirm_timeout
	ReasonInterrupted = "interrupted"  // the agent stopped or crashed mid-switch (SIGTERM, or found at start)
	ReasonOther       = "other"        // anything else (daemon-reload, a link, the disk…)
)

var (
	outcomes = []string{OutcomeSwitched, OutcomeUnchanged, OutcomeReverted, OutcomeRevertFailed, OutcomeRejected}
	reasons  = []string{ReasonUnitFailed, ReasonHealthCheck, ReasonNoConfirm, ReasonInterrupted, ReasonOther}
)

// Options of New.
type Options struct {
	// Current returns the node's current generation number (0: none). It
	// is called at every scrape; an error fails that one metric, not the
	// scrape.
	Current func() (int, error)
	// LastSwitch seeds slipway_agent_last_switch_timestamp_seconds, e.g.
	// from the state database's last result, so that a restarted agent
	// does not report "never". Zero: none known.
	LastSwitch time.Time
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Recorder holds the agent's metrics. Its methods are safe for concurrent use.
type Recorder struct {
	reg        *prometheus.Registry
	now        func() time.Time
	switches   *prometheus.CounterVec
	reverts    *prometheus.CounterVec
	switchDur  prometheus.Histogram
	verifyDur  prometheus.Histogram
	lastSwitch prometheus.Gauge
}

// New registers the agent's metrics (and the Go and process collectors) in
// a registry of their own.
func New(opts Options) *Recorder {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Recorder{
		reg: prometheus.NewRegistry(),
		now: opts.Now,
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_agent_switches_total",
			Help: "Switches the agent daemon ran, by outcome (switched, unchanged, reverted, revert_failed, rejected).",
		}, []string{"outcome"}),
		reverts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_agent_reverts_total",
			Help: "Reverts to the last good generation, by reason (unit_failed, health_check, no_confirm, interrupted, other).",
		}, []string{"reason"}),
		switchDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "slipway_agent_switch_duration_seconds",
			Help:    "Time a switch spent flipping the generation, reloading systemd and waiting for unit jobs.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		verifyDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "slipway_agent_verify_duration_seconds",
			Help:    "Time a switch spent verifying health (min_healthy_time, or until it failed).",
			Buckets: []float64{0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300},
		}),
		lastSwitch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slipway_agent_last_switch_timestamp_seconds",
			Help: "Unix time at which the last switch or revert that changed the node ended (0: none known).",
		}),
	}
	for _, o := range outcomes {
		a.switches.WithLabelValues(o)
	}
	for _, r := range reasons {
		a.reverts.WithLabelValues(r)
	}
	if !opts.LastSwitch.IsZero() {
		a.lastSwitch.Set(float64(opts.LastSwitch.UnixNano()) / 1e9)
	}
	a.reg.MustRegister(a.switches, a.reverts, a.switchDur, a.verifyDur, a.lastSwitch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.Current != nil {
		a.reg.MustRegister(&currentCollector{get: opts.Current, desc: prometheus.NewDesc(
			"slipway_agent_current_generation", "The generation number `current` points at (0: none).", nil, nil)})
	}
	return a
}

// Observe records what Apply or Recover returned. interrupted says that
// the daemon was stopping when Apply returned (SIGTERM mid-switch); a
// revert found by Recover at start is always counted as interrupted.
// Outcomes that are not a switch (an error before anything was decided,
// nothing-to-recover, discarded-staging) are ignored.
func (a *Recorder) Observe(o activate.Outcome, interrupted bool) {
	outcome := ""
	switch o.Outcome {
	case "switched":
		outcome = OutcomeSwitched
	case "unchanged":
		outcome = OutcomeUnchanged
	case "reverted", "rollback-undone": // an interrupted rollback undone is a revert (its target is not quarantined)
		outcome = OutcomeReverted
	case "revert-failed":
		outcome = OutcomeRevertFailed
	case "rejected":
		outcome = OutcomeRejected
	default:
		return
	}
	if o.Op != "recover" { // a revert found at start ends a switch counted by the process that died
		a.switches.WithLabelValues(outcome).Inc()
	}
	if d, ok := o.Timings["switch"]; ok {
		a.switchDur.Observe(d.Seconds())
	}
	if d, ok := o.Timings["verify"]; ok {
		a.verifyDur.Observe(d.Seconds())
	}
	switch outcome {
	case OutcomeReverted, OutcomeRevertFailed:
		a.reverts.WithLabelValues(RevertReason(o, interrupted)).Inc()
		fallthrough
	case OutcomeSwitched:
		a.lastSwitch.Set(float64(a.now().UnixNano()) / 1e9)
	}
}

// RevertReason classifies why a switch was reverted into one of the
// reason label values. It reads the phases the switch reached
// (Outcome.Timings) and, from the reason, whether a unit failed: a
// failed verification of a unit reads `health check "unit:…"` (agent/health)
// and a failed unit job `<op> <unit>: job result "…"` (agent/systemd).
func RevertReason(o activate.Outcome, interrupted bool) string {
	_, confirm := o.Timings["confirm"]
	_, verify := o.Timings["verify"]
	_, sw := o.Timings["switch"]
	switch {
	case interrupted || o.Op == "recover":
		return ReasonInterrupted
	case confirm:
		return ReasonNoConfirm
	case verify && strings.HasPrefix(o.Reason, `health check "unit:`):
		return ReasonUnitFailed
	case verify:
		return ReasonHealthCheck
	case sw && strings.Contains(o.Reason, ": job result "): // systemd.JobError
		return ReasonUnitFailed
	}
	return ReasonOther
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics/protobuf when the scraper asks for it).
func (a *Recorder) Handler(log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog:      metricshttp.ErrorLog{Log: log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      a.reg,
	})
}

// currentCollector reads the current generation at scrape time.
type currentCollector struct {
	get  func() (int, error)
	desc *prometheus.Desc
}

func (c *currentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *currentCollector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.get()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("current generation: %w", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}

// Endpoint is the metrics listener (shared/metricshttp).
type Endpoint = metricshttp.Endpoint

// Listen opens the metrics listener on addr for h (shared/metricshttp).
func Listen(addr string, h http.Handler, log zerolog.Logger) (*Endpoint, error) {
	return metricshttp.Listen(addr, h, log)
}
