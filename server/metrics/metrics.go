// Package metrics is slipway-server's Prometheus instrumentation: the
// fleet as the registry sees it, rollouts, and the HTTP API. The server
// serves it on an address of its own (metrics_listen, default
// 127.0.0.1:9431), never behind or beside the admin API's authentication.
//
// Metrics (label values come from fixed sets, the API's route patterns and
// node names; never from free text such as reasons):
//
//	slipway_nodes{state}                           nodes by state (new, pending, switching, converged, failed, offline, drift)
//	slipway_nodes_by_liveness{liveness}            nodes by gossip liveness (alive, suspect, failed, left; unknown: never seen in gossip)
//	slipway_node_desired_matches_actual{node}      1 when the node runs its desired generation (or has none), else 0
//	slipway_releases_total                         releases created
//	slipway_rollouts{state}                        rollouts by state (see RolloutCounter)
//	slipway_analysis_measurements_total{gate,result} analysis gate measurements taken (successful, failed, inconclusive; see AnalysisCounter)
//	slipway_analysis_value{gate}                   the value a gate's newest conclusive measurement judged
//	slipway_http_requests_total{route,code}        API requests by route pattern ("GET /v1/nodes/{name}") and status
//	slipway_http_request_duration_seconds{route,code}
//	slipway_http_requests_in_flight                API requests being served (long-polls included)
//	slipway_http_longpolls_held                    desired long-polls held without a goroutine (server/longpoll), part of in_flight
//
// plus the Go runtime and process collectors. The fleet metrics are read
// from the registry at scrape time (node states are derived on read, e.g.
// offline after offline_after), so they are never stale and survive a
// server restart. This package reads; it never changes the fleet.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/metricshttp"
)

// Fleet is what the fleet metrics read at every scrape; the server's
// *registry.Registry has it.
type Fleet interface {
	Nodes(ctx context.Context) ([]api.Node, error)
	Releases(ctx context.Context) ([]api.Release, error)
}

// RolloutCounter counts rollouts by state. The rollout engine implements
// it and hands it to Server.SetRollouts; its states become the values of
// slipway_rollouts' state label (a small fixed set, e.g. running, paused,
// succeeded, failed). It is called at every scrape.
type RolloutCounter interface {
	RolloutCounts(ctx context.Context) (map[string]int, error)
}

// AnalysisCounter counts the analysis gates' measurements the server took
// (by {gate, outcome}) and gives each gate's newest value. The
// RolloutCounter handed to SetRollouts may have it (*rollout.Machine
// does).
type AnalysisCounter interface {
	AnalysisStats() (measurements map[[2]string]uint64, values map[string]float64)
}

// NodeStates are the values of slipway_nodes' state label, always exported
// (0 when no node is in them).
var NodeStates = []string{api.NodeNew, api.NodePending, api.NodeSwitching, api.NodeConverged, api.NodeFailed, api.NodeOffline, api.NodeDrift}

// Livenesses are the values of slipway_nodes_by_liveness' liveness label,
// always exported (0 when no node has them). LivenessUnknown counts the
// nodes whose gossip member the server never saw (gossip off).
var Livenesses = []string{api.LivenessAlive, api.LivenessSuspect, api.LivenessFailed, api.LivenessLeft, LivenessUnknown}

// LivenessUnknown is the liveness label of nodes without one.
const LivenessUnknown = "unknown"

// RouteUnmatched is the route label of requests no API route matched.
const RouteUnmatched = "unmatched"

// ScrapeTimeout bounds the registry reads of one scrape.
const ScrapeTimeout = 10 * time.Second

// Server holds slipway-server's metrics. Its methods are safe for
// concurrent use.
type Server struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	limited  *prometheus.CounterVec
	leader   prometheus.Gauge
	changes  prometheus.Counter
	fleet    *fleetCollector
	held     atomic.Pointer[func() int]
	// observers caches the series of each route and status code seen
	// (routeCode -> requestSeries): a request costs no label hashing.
	observers sync.Map
}

type routeCode struct {
	route string
	code  int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New registers the server's metrics over fleet in a registry of their own.
func New(fleet Fleet) *Server {
	s := &Server{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_http_requests_total",
			Help: "API requests served, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "slipway_http_request_duration_seconds",
			Help: "Time to serve an API request, by route pattern and status code (long-polls last up to their wait).",
			// Up to the longest long-poll (api.MaxPollWait).
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slipway_http_requests_in_flight",
			Help: "API requests being served, long-polls included.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_http_limited_total",
			Help: "Requests and connections refused by a [limits] cap (limit: max_connections, max_connections_per_address, unauthenticated_rate), answered 429/503 or closed unanswered.",
		}, []string{"limit", "outcome"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slipway_leader",
			Help: "1 while this server leads (runs the rollout engine and the other work that runs once; always 1 on bbolt), else 0.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slipway_leader_changes_total",
			Help: "Times this server became leader or stopped leading.",
		}),
		fleet: &fleetCollector{
			fleet:    fleet,
			nodes:    prometheus.NewDesc("slipway_nodes", "Enrolled nodes by state.", []string{"state"}, nil),
			liveness: prometheus.NewDesc("slipway_nodes_by_liveness", "Enrolled nodes by gossip liveness (unknown: the server never saw the node's gossip member).", []string{"liveness"}, nil),
			matches:  prometheus.NewDesc("slipway_node_desired_matches_actual", "1 when the node runs its desired generation (or has none), else 0.", []string{"node"}, nil),
			releases: prometheus.NewDesc("slipway_releases_total", "Releases created.", nil, nil),
			rollouts: prometheus.NewDesc("slipway_rollouts", "Rollouts by state.", []string{"state"}, nil),
			measurements: prometheus.NewDesc("slipway_analysis_measurements_total", "Analysis gate measurements taken by this server, by gate and result (successful, failed, inconclusive).",
				[]string{"gate", "result"}, nil),
			value: prometheus.NewDesc("slipway_analysis_value", "The value the newest conclusive measurement of an analysis gate judged.", []string{"gate"}, nil),
		},
	}
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "slipway_http_longpolls_held",
		Help: "Desired long-polls held without a goroutine of their own, waiting for a change or their wait's end (counted in slipway_http_requests_in_flight too).",
	}, func() float64 {
		if f := s.held.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	s.reg.MustRegister(s.requests, s.duration, s.inflight, s.limited, s.leader, s.changes, s.fleet, held,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// SetRollouts makes slipway_rollouts report rc's counts. Until it is
// called (no rollout engine), slipway_rollouts{state="running"} is 0.
func (s *Server) SetRollouts(rc RolloutCounter) { s.fleet.rollout.Store(&rc) }

// SetHeld makes slipway_http_longpolls_held report held (until then: 0).
func (s *Server) SetHeld(held func() int) { s.held.Store(&held) }

// Leading records that this server became leader (true) or stopped
// leading (false).
func (s *Server) Leading(on bool) {
	v := 0.0
	if on {
		v = 1
	}
	s.leader.Set(v)
	s.changes.Inc()
}

// ObserveRequest records one API request.
func (s *Server) ObserveRequest(route string, code int, took time.Duration) {
	k := routeCode{route, code}
	v, ok := s.observers.Load(k)
	if !ok {
		c := strconv.Itoa(code)
		v, _ = s.observers.LoadOrStore(k, requestSeries{s.requests.WithLabelValues(route, c), s.duration.WithLabelValues(route, c)})
	}
	rs := v.(requestSeries)
	rs.count.Inc()
	rs.duration.Observe(took.Seconds())
}

// Limited counts one request or connection refused by limit ("answered"
// with 429/503, or "closed" unanswered).
func (s *Server) Limited(limit, outcome string) { s.limited.WithLabelValues(limit, outcome).Inc() }

// InFlight adds delta to the requests in flight.
func (s *Server) InFlight(delta int) { s.inflight.Add(float64(delta)) }

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics/protobuf when the scraper asks for it). A registry read that
// fails fails its metrics only; the error is logged.
func (s *Server) Handler(log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:      metricshttp.ErrorLog{Log: log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      s.reg,
	})
}

// fleetCollector reads the registry at scrape time.
type fleetCollector struct {
	fleet                                        Fleet
	rollout                                      atomic.Pointer[RolloutCounter]
	nodes, liveness, matches, releases, rollouts *prometheus.Desc
	measurements, value                          *prometheus.Desc
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.nodes
	ch <- c.liveness
	ch <- c.matches
	ch <- c.releases
	ch <- c.rollouts
	ch <- c.measurements
	ch <- c.value
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	if nodes, err := c.fleet.Nodes(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(c.nodes, fmt.Errorf("nodes: %w", err))
		ch <- prometheus.NewInvalidMetric(c.liveness, fmt.Errorf("nodes: %w", err))
	} else {
		c.collectNodes(ch, nodes)
	}
	if rels, err := c.fleet.Releases(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(c.releases, fmt.Errorf("releases: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(c.releases, prometheus.CounterValue, float64(len(rels)))
	}
	c.collectRollouts(ctx, ch)
}

// collectNodes sends the nodes per state and per liveness (every known
// state and liveness, 0 when none) and whether each node runs its desired
// generation.
func (c *fleetCollector) collectNodes(ch chan<- prometheus.Metric, nodes []api.Node) {
	byState := make(map[string]int, len(NodeStates))
	for _, st := range NodeStates {
		byState[st] = 0
	}
	for _, n := range nodes {
		byState[n.State]++
	}
	for st, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(n), st)
	}
	byLiveness := make(map[string]int, len(Livenesses))
	for _, l := range Livenesses {
		byLiveness[l] = 0
	}
	for _, n := range nodes {
		l := n.Liveness
		if _, known := byLiveness[l]; !known {
			l = LivenessUnknown
		}
		byLiveness[l]++
	}
	for l, n := range byLiveness {
		ch <- prometheus.MustNewConstMetric(c.liveness, prometheus.GaugeValue, float64(n), l)
	}
	for _, n := range nodes {
		v := 0.0
		if n.Desired == "" || n.Actual == n.Desired {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.matches, prometheus.GaugeValue, v, n.Name)
	}
}

// collectRollouts sends the rollouts per state and the analysis metrics
// from the rollout counter; with none set yet, 0 rollouts running.
func (c *fleetCollector) collectRollouts(ctx context.Context, ch chan<- prometheus.Metric) {
	rc := c.rollout.Load()
	if rc == nil || *rc == nil {
		ch <- prometheus.MustNewConstMetric(c.rollouts, prometheus.GaugeValue, 0, "running")
		return
	}
	if ac, ok := (*rc).(AnalysisCounter); ok {
		c.collectAnalysis(ch, ac)
	}
	byState, err := (*rc).RolloutCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.rollouts, fmt.Errorf("rollouts: %w", err))
		return
	}
	states := make([]string, 0, len(byState))
	for st := range byState {
		states = append(states, st)
	}
	sort.Strings(states)
	for _, st := range states {
		ch <- prometheus.MustNewConstMetric(c.rollouts, prometheus.GaugeValue, float64(byState[st]), st)
	}
}

func (c *fleetCollector) collectAnalysis(ch chan<- prometheus.Metric, ac AnalysisCounter) {
	counts, values := ac.AnalysisStats()
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.measurements, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	for gate, v := range values {
		ch <- prometheus.MustNewConstMetric(c.value, prometheus.GaugeValue, v, gate)
	}
}

// Endpoint is the metrics listener (shared/metricshttp).
type Endpoint = metricshttp.Endpoint

// Listen opens the metrics listener on addr for h (shared/metricshttp).
func Listen(addr string, h http.Handler, log zerolog.Logger) (*Endpoint, error) {
	return metricshttp.Listen(addr, h, log)
}
