// Package waves plans rollouts: ParseStrategy validates a strategy and
// fills its defaults; Plan cuts a target group into waves (all-at-once with
// max_parallel, rolling with batch_size / max_unavailable, canary with a
// count or percentage followed by batches). Nodes keep the order given (the
// registry sorts them by name), so a plan is reproducible.
//
// It is pure: no storage, no clock, no I/O.
package waves

import (
	"errors"
	"fmt"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/window"
)

// ParseStrategy validates s, fills its defaults and returns it with its
// durations parsed.
func ParseStrategy(s api.Strategy) (api.Strategy, Durations, error) {
	errs := defaultKinds(&s)
	errs = append(errs, checkCanary(&s)...)
	d, derrs := parseDurations(s)
	errs = append(errs, derrs...)
	if len(s.Windows) > MaxWindows {
		errs = append(errs, fmt.Errorf("strategy.windows: %d windows, at most %d", len(s.Windows), MaxWindows))
	} else if _, err := window.ParseSet(s.Windows); err != nil {
		errs = append(errs, fmt.Errorf("strategy.windows%w", err))
	}
	if _, err := analysis.FromStrategy(s.AnalysisGates); err != nil {
		errs = append(errs, err)
	}
	return s, d, errors.Join(errs...)
}

// defaultKinds defaults and checks the strategy's kind and on_node_down.
func defaultKinds(s *api.Strategy) []error {
	var errs []error
	if s.Kind == "" {
		s.Kind = api.StrategyAllAtOnce
	}
	switch s.Kind {
	case api.StrategyAllAtOnce, api.StrategyRolling, api.StrategyCanary:
	default:
		errs = append(errs, fmt.Errorf("strategy.kind %q: want all-at-once, rolling or canary", s.Kind))
	}
	if s.OnNodeDown == "" {
		s.OnNodeDown = api.NodeDownWait
	}
	switch s.OnNodeDown {
	case api.NodeDownWait, api.NodeDownSkip, api.NodeDownFail:
	default:
		errs = append(errs, fmt.Errorf("strategy.on_node_down %q: want wait, skip or fail", s.OnNodeDown))
	}
	return errs
}

// checkCanary checks that no count is negative, canary_percent is at most
// 100, canary and canary_percent are not both set and the canary keys come
// only with kind canary; kind canary without either gets a canary of one
// node.
func checkCanary(s *api.Strategy) []error {
	var errs []error
	for name, v := range map[string]int{"max_parallel": s.MaxParallel, "batch_size": s.BatchSize, "max_unavailable": s.MaxUnavailable,
		"canary": s.Canary, "canary_percent": s.CanaryPercent, "max_failures": s.MaxFailures} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("strategy.%s: %d, must not be negative", name, v))
		}
	}
	if s.CanaryPercent > 100 {
		errs = append(errs, fmt.Errorf("strategy.canary_percent: %d, at most 100", s.CanaryPercent))
	}
	if s.Canary > 0 && s.CanaryPercent > 0 {
		errs = append(errs, errors.New("strategy: canary and canary_percent are exclusive"))
	}
	if s.Kind != api.StrategyCanary && (s.Canary > 0 || s.CanaryPercent > 0 || s.Analysis != "") {
		errs = append(errs, fmt.Errorf("strategy: canary, canary_percent and analysis need kind canary, not %s", s.Kind))
	}
	if s.Kind == api.StrategyCanary && s.Canary == 0 && s.CanaryPercent == 0 {
		s.Canary = 1
	}
	return errs
}

// parseDurations parses stagger, analysis and node_deadline; each, when
// given, must be between 0 and 24h.
func parseDurations(s api.Strategy) (Durations, []error) {
	var d Durations
	var errs []error
	parse := func(name, v string, dst *time.Duration) {
		if v == "" {
			return
		}
		x, err := time.ParseDuration(v)
		if err != nil || x < 0 || x > 24*time.Hour {
			errs = append(errs, fmt.Errorf("strategy.%s %q: want a duration between 0 and 24h", name, v))
			return
		}
		*dst = x
	}
	parse("stagger", s.Stagger, &d.Stagger)
	parse("analysis", s.Analysis, &d.Analysis)
	parse("node_deadline", s.NodeDeadline, &d.NodeDeadline)
	return d, errs
}

// MaxWindows bounds strategy.windows.
const MaxWindows = 32

// Durations are a strategy's parsed durations.
type Durations struct {
	Stagger      time.Duration
	Analysis     time.Duration // 0: manual promote
	NodeDeadline time.Duration // 0: derived from the manifest
}

// Plan cuts nodes (in the given order) into waves. s must come from
// ParseStrategy.
func Plan(s api.Strategy, nodes []string) []api.Wave {
	var waves []api.Wave
	add := func(name string, names []string) {
		w := api.Wave{Name: name, State: api.WavePending}
		for _, n := range names {
			w.Nodes = append(w.Nodes, api.RolloutNode{Name: n, State: api.RolloutNodePending})
		}
		waves = append(waves, w)
	}
	batches := func(rest []string, size int) {
		if size <= 0 || size > len(rest) {
			size = len(rest)
		}
		for i := 0; i < len(rest); i += size {
			add(fmt.Sprintf("wave %d", len(waves)+1), rest[i:min(i+size, len(rest))])
		}
	}
	switch s.Kind {
	case api.StrategyRolling:
		size := s.BatchSize
		if size == 0 {
			size = 1
		}
		if s.MaxUnavailable > 0 && s.MaxUnavailable < size {
			size = s.MaxUnavailable
		}
		batches(nodes, size)
	case api.StrategyCanary:
		c := s.Canary
		if s.CanaryPercent > 0 {
			c = (len(nodes)*s.CanaryPercent + 99) / 100
		}
		c = max(1, min(c, len(nodes)))
		add("canary", nodes[:c])
		batches(nodes[c:], s.BatchSize)
	default:
		batches(nodes, s.MaxParallel)
	}
	return waves
}
