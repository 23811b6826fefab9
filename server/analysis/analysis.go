// Package analysis evaluates Prometheus analysis gates (issue 17): a
// PromQL instant query, expanded for one wave of a rollout (Expand),
// sent to Prometheus's HTTP API v1 (Prometheus.Query), its result judged
// by a condition (Condition.Judge), and the measurements of a gate
// counted into a verdict (Gate.Verdict), in the shape of Argo Rollouts'
// AnalysisTemplate: interval, count, failure_limit and
// consecutive_error_limit.
//
// A measurement is successful, failed, or inconclusive: Prometheus
// unreachable, an error answer, no data, or a value that is not a number.
// Inconclusive measurements never fail a gate; more than
// consecutive_error_limit of them in a row make it inconclusive, which the
// caller turns into a pause with the reason.
//
// It holds no state of its own and never reads a clock: callers pass the
// time. The rollout state machine (server/rollout) runs the gates of a
// release's [[analysis]] (FromStrategy) while a wave is analysing.
package analysis
