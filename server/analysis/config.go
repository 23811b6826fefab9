package analysis

import (
	"errors"
	"fmt"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// MaxGates bounds a strategy's analysis gates.
const MaxGates = 20

// FromAPI builds and validates the gate a release's strategy declares
// (slipway.toml [[analysis]]): defaults filled, every problem named.
func FromAPI(a api.AnalysisGate) (Gate, error) {
	g := Gate{Name: a.Name, Query: a.Query, Count: a.Count, FailureLimit: a.FailureLimit, ConsecutiveErrorLimit: DefaultErrorLimit}
	if a.ConsecutiveErrorLimit != nil {
		g.ConsecutiveErrorLimit = *a.ConsecutiveErrorLimit
	}
	if g.Count == 0 {
		g.Count = DefaultCount
	}
	g.Interval = DefaultInterval
	if a.Interval != "" {
		d, err := time.ParseDuration(a.Interval)
		if err != nil {
			return Gate{}, fmt.Errorf("analysis %q: interval %q: want a duration such as \"30s\"", a.Name, a.Interval)
		}
		g.Interval = d
	}
	reduce, err := scopeReduce(a)
	if err != nil {
		return Gate{}, err
	}
	if a.Condition != "" {
		c, err := ParseCondition(a.Condition, reduce)
		if err != nil {
			return Gate{}, fmt.Errorf("analysis %q: %w", a.Name, err)
		}
		g.Condition = c
	}
	if err := CheckPlaceholders(a.Query); err != nil {
		return Gate{}, fmt.Errorf("analysis %q: %w", a.Name, err)
	}
	if g.Interval > 24*time.Hour {
		return Gate{}, fmt.Errorf("analysis %q: interval %s, at most 24h", a.Name, g.Interval)
	}
	return g, g.Validate()
}

// scopeReduce maps scope (every-series, aggregate) and aggregate (sum,
// max, min, avg) to a Condition's reduction.
func scopeReduce(a api.AnalysisGate) (string, error) {
	switch a.Scope {
	case "", api.ScopeEverySeries:
		if a.Aggregate != "" {
			return "", fmt.Errorf("analysis %q: aggregate %q needs scope = \"aggregate\"", a.Name, a.Aggregate)
		}
		return ReduceEvery, nil
	case api.ScopeAggregate:
		switch a.Aggregate {
		case "":
			return ReduceSum, nil
		case ReduceSum, ReduceMax, ReduceMin, ReduceAvg:
			return a.Aggregate, nil
		}
		return "", fmt.Errorf("analysis %q: aggregate %q: want sum, max, min or avg", a.Name, a.Aggregate)
	}
	return "", fmt.Errorf("analysis %q: scope %q: want every-series or aggregate", a.Name, a.Scope)
}

// FromStrategy builds every gate of a strategy; names must be unique.
func FromStrategy(gates []api.AnalysisGate) ([]Gate, error) {
	if len(gates) > MaxGates {
		return nil, fmt.Errorf("analysis: %d gates, at most %d", len(gates), MaxGates)
	}
	out := make([]Gate, 0, len(gates))
	seen := map[string]bool{}
	var errs []error
	for _, a := range gates {
		g, err := FromAPI(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("analysis %q: name used twice", g.Name))
		}
		seen[g.Name] = true
		out = append(out, g)
	}
	return out, errors.Join(errs...)
}
