package analysis

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Reductions of a result's series before the condition.
const (
	ReduceEvery = "every" // the condition must hold for every series (the default)
	ReduceSum   = "sum"   // for the sum of the series
	ReduceMax   = "max"
	ReduceMin   = "min"
	ReduceAvg   = "avg"
)

// Condition is a parsed "result OP NUMBER" (OP: < <= > >= == !=) with how
// a result of several series is reduced.
type Condition struct {
	op     string
	bound  float64
	reduce string
	text   string
}

var ops = []string{"<=", ">=", "==", "!=", "<", ">"} // two-character ones first

// ParseCondition parses a condition such as "result < 0.01"; reduce is
// ReduceEvery ("" too), ReduceSum, ReduceMax, ReduceMin or ReduceAvg.
func ParseCondition(s, reduce string) (Condition, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "result")
	if !ok {
		return Condition{}, fmt.Errorf("condition %q: want \"result OP NUMBER\", e.g. \"result < 0.01\" (OP: < <= > >= == !=)", s)
	}
	rest = strings.TrimSpace(rest)
	c := Condition{text: strings.TrimSpace(s), reduce: reduce}
	for _, op := range ops {
		if num, ok := strings.CutPrefix(rest, op); ok {
			c.op = op
			rest = strings.TrimSpace(num)
			break
		}
	}
	if c.op == "" {
		return Condition{}, fmt.Errorf("condition %q: no comparison after result (want < <= > >= == !=)", s)
	}
	b, err := strconv.ParseFloat(rest, 64)
	if err != nil || math.IsNaN(b) || math.IsInf(b, 0) {
		return Condition{}, fmt.Errorf("condition %q: %q is not a finite number", s, rest)
	}
	c.bound = b
	switch reduce {
	case "":
		c.reduce = ReduceEvery
	case ReduceEvery, ReduceSum, ReduceMax, ReduceMin, ReduceAvg:
	default:
		return Condition{}, fmt.Errorf("reduce %q: want every, sum, max, min or avg", reduce)
	}
	return c, nil
}

// String is the condition as written, with its reduction when not every.
func (c Condition) String() string {
	if c.reduce == ReduceEvery {
		return c.text
	}
	return c.text + " (" + c.reduce + " of the series)"
}

func (c Condition) holds(v float64) bool {
	switch c.op {
	case "<":
		return v < c.bound
	case "<=":
		return v <= c.bound
	case ">":
		return v > c.bound
	case ">=":
		return v >= c.bound
	case "==":
		return v == c.bound
	}
	return v != c.bound
}

// Judge decides one measurement from a query's series: Successful when
// the condition holds (for every series, or for their reduction), Failed
// when it does not (naming the series), Inconclusive for no series or a
// value that is not a number.
func (c Condition) Judge(series []Series) (Outcome, string) {
	if len(series) == 0 {
		return Inconclusive, "no data: the query returned no series"
	}
	for _, s := range series {
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			return Inconclusive, fmt.Sprintf("series %s is %v, not a number", s.Labels, s.Value)
		}
	}
	if c.reduce != ReduceEvery {
		v := reduce(c.reduce, series)
		if !c.holds(v) {
			return Failed, fmt.Sprintf("%s of %d series is %g: not %s", c.reduce, len(series), v, c.text)
		}
		return Successful, fmt.Sprintf("%s of %d series is %g", c.reduce, len(series), v)
	}
	var bad []string
	for _, s := range series {
		if !c.holds(s.Value) {
			bad = append(bad, fmt.Sprintf("%s = %g", s.Labels, s.Value))
		}
	}
	if len(bad) > 0 {
		return Failed, fmt.Sprintf("not %s for %d of %d series: %s", c.text, len(bad), len(series), strings.Join(bad, ", "))
	}
	return Successful, fmt.Sprintf("%s for all %d series", c.text, len(series))
}

// Value is the value Judge decided on: the reduction of the series, or
// for every series the one furthest on the wrong side (the largest for <
// and <=, the smallest for > and >=, the first that does not hold for ==
// and !=). series must not be empty.
func (c Condition) Value(series []Series) float64 {
	switch {
	case c.reduce != ReduceEvery:
		return reduce(c.reduce, series)
	case c.op == "<" || c.op == "<=":
		return reduce(ReduceMax, series)
	case c.op == ">" || c.op == ">=":
		return reduce(ReduceMin, series)
	}
	for _, s := range series {
		if !c.holds(s.Value) {
			return s.Value
		}
	}
	return series[0].Value
}

func reduce(how string, series []Series) float64 {
	v := series[0].Value
	sum := 0.0
	for _, s := range series {
		sum += s.Value
		switch how {
		case ReduceMax:
			v = max(v, s.Value)
		case ReduceMin:
			v = min(v, s.Value)
		}
	}
	switch how {
	case ReduceSum:
		return sum
	case ReduceAvg:
		return sum / float64(len(series))
	}
	return v
}
