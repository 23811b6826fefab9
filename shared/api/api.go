// Package api is the wire contract between slipway-agent, slipway-server
// and the slipway CLI: routes, request and response bodies, error bodies,
// and a typed client. The OpenAPI 3 spec in openapi.yaml describes the same
// routes; a server test checks every route against it. Everything here is
// data and HTTP plumbing: no storage, no decisions.
package api

import (
	"encoding/json"
	"strconv"
	"time"
)

// ProtocolVersion is sent by agents (header Slipway-Protocol) and servers.
//
// Changelog:
//
//	1 (2026-11-22): enrolment with one-time join tokens, desired generation
//	  by long-poll, status reports, confirm, blobs by sha256; admin API for
//	  nodes, releases, blobs, join tokens, per-node rollback and retry, events.
//	  Same day, additive: rollouts (strategy and queue on releases; list,
//	  show, pause, resume, promote, abort, rollback, retry), published
//	  manifests by ID, the audit log as server-sent events, /readyz.
//	  Later, additive: Node.liveness and Node.liveness_since (serf gossip);
//	  on the server's tailnet listener an agent enrols with an empty
//	  join_token (its WhoIs identity is the credential), and admin requests
//	  without a bearer token are authorised by the caller's tailnet identity
//	  ([tailscale.roles]).
//	  Later, additive: Report.warnings (systemd-analyze verify's warnings
//	  about the current generation's unit files).
//	  2026-12-07, additive: the agent write routes (enroll, status, confirm)
//	  may answer 429 (code "overloaded") and 503 (code "unavailable"), both
//	  with Retry-After; agents retry them as a reachable server.
//	  2026-12-07, additive: maintenance windows: Strategy.windows, the
//	  rollout state waiting-window with Rollout.window_opens_at and
//	  Rollout.window_override, and a resume body {"now": true}
//	  (RolloutResumeRequest). Webhook notifications: GET /v1/notifications
//	  (Notification).
//	  Same day, additive: every route may answer 503 (code "unavailable",
//	  Retry-After) when the server's store (etcd) cannot be reached.
//	  Same day, additive: /readyz names the server that answered and the
//	  leader of several servers on etcd (Ready: server, leader, leading).
//	  Same day, additive: ConfirmRequest.report (the agent's confirm-phase
//	  report, recorded with the confirm in one write) and
//	  ConfirmResponse.report_recorded. A server that predates it answers
//	  400 (unknown field); the agent then reports apart and confirms
//	  without it.
const ProtocolVersion = 1

// Headers.
const (
	HeaderProtocol = "Slipway-Protocol"
)

// Agent routes (node token auth; {name} must be the token's node, else 403).
const (
	RouteEnroll    = "POST /v1/agent/enroll"
	RouteDesired   = "GET /v1/agent/nodes/{name}/desired"
	RouteReport    = "POST /v1/agent/nodes/{name}/status"
	RouteConfirm   = "POST /v1/agent/nodes/{name}/confirm"
	RouteAgentBlob = "GET /v1/agent/nodes/{name}/blobs/{sha256}"
	QueryWait      = "wait" // long-poll duration on RouteDesired, e.g. 30s (max 5m)
	// DefaultPollWait is the long-poll an agent holds by default: long,
	// since at 10,000 agents every renewal is server work, and under the
	// 60 s read timeout of common reverse proxies (nginx, AWS ALB).
	DefaultPollWait   = 55 * time.Second
	MaxPollWait       = 5 * time.Minute
	MaxBlobUploadSize = 16 << 30
)

// Admin routes (bearer token auth with a role).
const (
	RouteNodes           = "GET /v1/nodes"
	RouteNode            = "GET /v1/nodes/{name}"
	RouteNodeRollback    = "POST /v1/nodes/{name}/rollback"
	RouteNodeRetry       = "POST /v1/nodes/{name}/retry"
	RouteNodeReset       = "POST /v1/nodes/{name}/reset"
	RouteReleases        = "GET /v1/releases"
	RouteRelease         = "GET /v1/releases/{id}"
	RouteCreateRelease   = "POST /v1/releases"
	RouteBlobHead        = "HEAD /v1/blobs/{sha256}"
	RouteBlobPut         = "PUT /v1/blobs/{sha256}"
	RouteCreateJoinToken = "POST /v1/join-tokens"
	RouteEvents          = "GET /v1/events"
	RouteOpenAPI         = "GET /openapi.yaml"
	RouteRollouts        = "GET /v1/rollouts"
	RouteRollout         = "GET /v1/rollouts/{id}"
	RouteRolloutPause    = "POST /v1/rollouts/{id}/pause"
	RouteRolloutResume   = "POST /v1/rollouts/{id}/resume"
	RouteRolloutPromote  = "POST /v1/rollouts/{id}/promote"
	RouteRolloutAbort    = "POST /v1/rollouts/{id}/abort"
	RouteRolloutRollback = "POST /v1/rollouts/{id}/rollback"
	RouteRolloutRetry    = "POST /v1/rollouts/{id}/retry"
	RouteManifest        = "GET /v1/manifests/{id}"
	RouteNotifications   = "GET /v1/notifications"
	RouteEventStream     = "GET /v1/events/stream"
	RouteHealthz         = "GET /healthz"
	RouteReadyz          = "GET /readyz"
)

// Roles of admin tokens, each including the ones before it.
const (
	RoleViewer   = "viewer"   // read nodes, releases, events
	RoleDeployer = "deployer" // + upload blobs, create releases, rollback, retry
	RoleAdmin    = "admin"    // + create join tokens
)

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`          // what went wrong, for humans
	Code  string `json:"code,omitempty"` // machine-readable: not_found, forbidden, conflict, invalid, unauthorized
	Hint  string `json:"hint,omitempty"`
}

// Error codes.
const (
	CodeInvalid      = "invalid"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeInternal     = "internal"
	CodeOverloaded   = "overloaded"  // 429: too many agent writes in flight; Retry-After
	CodeUnavailable  = "unavailable" // 503: store contention outlasted the retries; Retry-After
)

// EnrollRequest is sent by a new agent with a one-time join token. A join
// token enrols a new name only, or only JoinToken.Node's; for a name that is
// enrolled it is 409 (nothing changes, the token is not used) unless an
// admin reset the node (POST /v1/nodes/{name}/reset) and the token is bound
// to it. The node itself may enrol again (new labels, age recipient) with
// an empty JoinToken and its current node token as the bearer token.
//
// Over the server's tailnet listener JoinToken may be empty: the server
// then enrols the caller by its WhoIs identity, which must carry the agent
// tag and have Name as its host name (else 403; no identity: 401), and
// issues no node token (EnrollResponse.NodeToken ""). On every other
// listener an empty JoinToken is refused (401).
type EnrollRequest struct {
	Name         string            `json:"name"`
	JoinToken    string            `json:"join_token"` // "" only over the tailnet (see above)
	Labels       map[string]string `json:"labels,omitempty"`
	AgeRecipient string            `json:"age_recipient,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// EnrollResponse carries the node's own token; the agent stores it (0600).
// After an enrolment by tailnet identity (no join token) NodeToken is "":
// the node is identified by WhoIs on every request and enrols again at its
// next start.
type EnrollResponse struct {
	Name      string `json:"name"`
	NodeToken string `json:"node_token"` // "" after an enrolment by tailnet identity
}

// Desired is the generation a node should run.
type Desired struct {
	// ID is the manifest ID ("sha256-…"); the ETag of RouteDesired.
	ID string `json:"id"`
	// Release that produced it.
	Release string `json:"release"`
	// Manifest is the canonical manifest JSON.
	Manifest json.RawMessage `json:"manifest"`
	// Retry is bumped by an operator retry: an agent that quarantined ID
	// tries it again when Retry is greater than the value it last saw.
	Retry int `json:"retry,omitempty"`
}

// ETag identifies a desired state for long-polls: the ID, plus the retry
// counter once an operator retried (a retry must wake the agent too). A nil
// Desired has the empty ETag.
func (d *Desired) ETag() string {
	if d == nil {
		return ""
	}
	if d.Retry == 0 {
		return d.ID
	}
	return d.ID + "+retry" + strconv.Itoa(d.Retry)
}

// GenerationReport is one generation in an agent's report.
type GenerationReport struct {
	Number int    `json:"number"`
	ID     string `json:"id"`
	Status string `json:"status"` // staged, good, quarantined, failed, collected
	Reason string `json:"reason,omitempty"`
}

// UnitReport is one unit's live state in an agent's report.
type UnitReport struct {
	Name   string `json:"name"`
	Active string `json:"active"`
	Sub    string `json:"sub,omitempty"`
}

// Agent states in a report.
const (
	AgentIdle      = "idle"      // running its current generation
	AgentSwitching = "switching" // a switch is in progress (Phase says where)
	AgentFailed    = "failed"    // the last switch to the desired generation failed and was reverted
)

// Report is what an agent posts after every change and periodically.
type Report struct {
	AgentVersion string `json:"agent_version,omitempty"`
	State        string `json:"state"`
	Phase        string `json:"phase,omitempty"`
	Current      int    `json:"current"`
	CurrentID    string `json:"current_id,omitempty"`
	LastGood     int    `json:"last_good"`
	Target       string `json:"target,omitempty"` // ID being switched to
	// Outcome and Reason are the last switch's result; while a retry
	// after a passing failure runs (State switching, the same Target),
	// the last attempt's ("retrying" and its cause).
	Outcome     string             `json:"outcome,omitempty"`
	Reason      string             `json:"reason,omitempty"`
	Generations []GenerationReport `json:"generations,omitempty"`
	Units       []UnitReport       `json:"units,omitempty"`
	// Warnings are what systemd-analyze verify said about the current
	// generation's unit files when the agent switched to it (errors refuse
	// a generation; warnings, such as an unknown key, do not).
	Warnings []string  `json:"warnings,omitempty"`
	Time     time.Time `json:"time"`
}

// ConfirmRequest asks the server to confirm that the node reached ID healthy.
type ConfirmRequest struct {
	ID     string `json:"id"`
	Number int    `json:"number"`
	// Report is the agent's report in its confirm phase (target ID): the
	// server records it with the confirm, as POST .../status would, so the
	// agent need not post it first. Optional.
	Report *Report `json:"report,omitempty"`
}

// ConfirmResponse is the server's confirm.
type ConfirmResponse struct {
	Confirmed bool `json:"confirmed"`
	// ReportRecorded says the server recorded the request's report: it
	// counts as posted (for shared/routinereport too).
	ReportRecorded bool `json:"report_recorded,omitempty"`
}

// Node states, derived by the server.
const (
	NodeNew       = "new"       // enrolled, no desired generation yet
	NodePending   = "pending"   // desired differs from actual; the agent has not finished
	NodeSwitching = "switching" // the agent reports a switch in progress
	NodeConverged = "converged" // actual == desired, confirmed
	NodeFailed    = "failed"    // the agent reverted the desired generation
	NodeOffline   = "offline"   // not seen for OfflineAfter
	NodeDrift     = "drift"     // actual != desired though the agent is idle and not failed
)

// Liveness of a node as the server's serf member sees the node's member
// (Node.Liveness). Gossip is a hint: it does not change Node.State.
const (
	LivenessAlive   = "alive"   // answers gossip probes
	LivenessSuspect = "suspect" // missed probes; not yet declared failed
	LivenessFailed  = "failed"  // declared failed (gone without leaving)
	LivenessLeft    = "left"    // left the cluster gracefully (agent stopped)
)

// Node is the server's view of one node.
type Node struct {
	Name         string            `json:"name"`
	Labels       map[string]string `json:"labels,omitempty"`
	AgeRecipient string            `json:"age_recipient,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
	EnrolledAt   time.Time         `json:"enrolled_at"`
	LastSeen     time.Time         `json:"last_seen,omitzero"`
	State        string            `json:"state"`
	Desired      string            `json:"desired,omitempty"`         // manifest ID
	DesiredFrom  string            `json:"desired_release,omitempty"` // release ID
	Actual       string            `json:"actual,omitempty"`          // manifest ID the agent runs
	ActualNumber int               `json:"actual_number,omitempty"`   // the node's generation number
	Confirmed    string            `json:"confirmed,omitempty"`       // last ID the server confirmed
	Retry        int               `json:"retry,omitempty"`
	// Liveness is the node's serf member status as the server last saw
	// it change (alive, suspect, failed, left); "" when the server has
	// never seen the node's member (gossip off, or the agent without it).
	Liveness string `json:"liveness,omitempty"`
	// LivenessSince is when Liveness last changed.
	LivenessSince time.Time `json:"liveness_since,omitzero"`
	Report        *Report   `json:"report,omitempty"` // last report, in full (GET /v1/nodes/{name})
}

// CreateReleaseRequest publishes a release to the nodes its target selects,
// through a rollout with the given strategy.
type CreateReleaseRequest struct {
	Name     string          `json:"name"`
	Target   string          `json:"target,omitempty"` // label selector "k=v,k2=v2"; empty = every node
	Manifest json.RawMessage `json:"manifest"`         // canonical or not; the server validates and canonicalises
	// Strategy of the rollout; nil = all-at-once.
	Strategy *Strategy `json:"strategy,omitempty"`
	// Queue: if another rollout runs for the same target group, wait for
	// it instead of failing with 409.
	Queue bool `json:"queue,omitempty"`
}

// Strategy kinds and node-down policies.
const (
	StrategyAllAtOnce = "all-at-once"
	StrategyRolling   = "rolling"
	StrategyCanary    = "canary"
	NodeDownWait      = "wait" // keep the wave open until the node is back
	NodeDownSkip      = "skip" // leave the node out of the rollout (reported as skipped)
	NodeDownFail      = "fail" // count the node as a failure
)

// Strategy says how a rollout moves through its target nodes.
type Strategy struct {
	Kind           string `json:"kind"`                      // all-at-once, rolling, canary
	MaxParallel    int    `json:"max_parallel,omitempty"`    // all-at-once: nodes per wave (0 = all)
	BatchSize      int    `json:"batch_size,omitempty"`      // rolling (and canary after the canaries): nodes per wave
	MaxUnavailable int    `json:"max_unavailable,omitempty"` // rolling: nodes switching at once (caps batch_size)
	Stagger        string `json:"stagger,omitempty"`         // pause between waves, e.g. "30s"
	Canary         int    `json:"canary,omitempty"`          // canary: number of canary nodes
	CanaryPercent  int    `json:"canary_percent,omitempty"`  // canary: or a percentage of the target (at least 1 node)
	Analysis       string `json:"analysis,omitempty"`        // canary: auto-promote after this window of healthy canaries; "" = manual promote
	MaxFailures    int    `json:"max_failures,omitempty"`    // failed nodes tolerated before the rollout halts
	AutoRevert     bool   `json:"auto_revert,omitempty"`     // on halt, send every switched node back to its previous generation
	OnNodeDown     string `json:"on_node_down,omitempty"`    // wait (default), skip, fail
	NodeDeadline   string `json:"node_deadline,omitempty"`   // publish → confirmed limit per node; default healthy_deadline + confirm_timeout + 30s
	// Windows are maintenance windows ("Mon-Fri 02:00-05:00 Europe/Berlin",
	// see shared/window): a new wave starts only inside one of them (and
	// inside one of the target group's, from the server's config). None:
	// at any time.
	Windows []string `json:"windows,omitempty"`
	// AnalysisGates are Prometheus queries every wave must pass after its
	// nodes confirmed ([[analysis]] in slipway.toml): the wave is analysing
	// until each gate passed; a failed gate halts the rollout (auto_revert
	// applies), an inconclusive one pauses it.
	AnalysisGates []AnalysisGate `json:"analysis_gates,omitempty"`
}

// AnalysisGate is one Prometheus analysis gate (server/analysis).
type AnalysisGate struct {
	Name      string `json:"name"`
	Query     string `json:"query"`           // PromQL; placeholders {{node}} {{nodes}} {{release}} {{generation}} {{labels.KEY}}
	Condition string `json:"condition"`       // "result < 0.01"
	Scope     string `json:"scope,omitempty"` // every-series (default) or aggregate
	// Aggregate reduces the series for scope aggregate: sum (default),
	// max, min or avg.
	Aggregate    string `json:"aggregate,omitempty"`
	Interval     string `json:"interval,omitempty"` // between measurements; default 1m
	Count        int    `json:"count,omitempty"`    // conclusive measurements to pass; default 3
	FailureLimit int    `json:"failure_limit,omitempty"`
	// ConsecutiveErrorLimit is how many inconclusive measurements in a row
	// are tolerated before the rollout pauses (nil: 4).
	ConsecutiveErrorLimit *int `json:"consecutive_error_limit,omitempty"`
}

// Analysis scopes.
const (
	ScopeEverySeries = "every-series"
	ScopeAggregate   = "aggregate"
)

// AnalysisRun is one gate's measurements of the wave being analysed.
type AnalysisRun struct {
	Gate         string `json:"gate"`
	Wave         int    `json:"wave"`    // index of the wave
	Query        string `json:"query"`   // as sent, placeholders filled
	Verdict      string `json:"verdict"` // running, passed, failed, inconclusive
	Reason       string `json:"reason,omitempty"`
	Successful   int    `json:"successful"`
	Failed       int    `json:"failed"`
	Inconclusive int    `json:"inconclusive"`
	// ErrorRun counts the newest inconclusive measurements in a row.
	ErrorRun int `json:"consecutive_errors"`
	// Measurements are the newest MaxMeasurements, oldest first.
	Measurements []AnalysisMeasurement `json:"measurements"`
}

// MaxMeasurements bounds AnalysisRun.Measurements.
const MaxMeasurements = 10

// AnalysisMeasurement is one evaluation of a gate.
type AnalysisMeasurement struct {
	At      time.Time `json:"at"`
	Outcome string    `json:"outcome"`         // successful, failed, inconclusive
	Value   *float64  `json:"value,omitempty"` // the value judged (the worst series, or the aggregate); none when inconclusive
	Message string    `json:"message"`
}

// Rollout states.
const (
	RolloutQueued    = "queued"             // waits for another rollout of its group
	RolloutHeld      = "held"               // its group is pinned by a rollback: promote to run it
	RolloutRunning   = "running"            // advancing wave by wave
	RolloutPaused    = "paused"             // an operator paused it; nodes already switching finish
	RolloutAwaiting  = "awaiting-promotion" // canaries healthy; promote to continue
	RolloutWaiting   = "waiting-window"     // its next wave waits for a maintenance window (resume --now overrides)
	RolloutSucceeded = "succeeded"          // every wave passed
	RolloutFailed    = "failed"             // halted: more failures than max_failures (no auto_revert)
	RolloutReverted  = "reverted"           // halted and every switched node sent back
	RolloutAborted   = "aborted"            // an operator stopped it; nodes keep what they run
)

// Wave states.
const (
	WavePending   = "pending"
	WaveRunning   = "running"
	WaveAnalysing = "analysing" // its nodes confirmed; the analysis window and gates run
	WavePassed    = "passed"
	WaveFailed    = "failed"
	WaveAborted   = "aborted" // the rollout was aborted before the wave passed
)

// Node states within a rollout.
const (
	RolloutNodePending   = "pending"   // its wave has not started
	RolloutNodeSwitching = "switching" // published; waiting for the node to confirm
	RolloutNodeHealthy   = "healthy"   // confirmed on the release
	RolloutNodeFailed    = "failed"    // reverted it, or missed its deadline
	RolloutNodeDown      = "down"      // offline when its wave came (policy wait: not published yet)
	RolloutNodeSkipped   = "skipped"   // offline when its wave came (policy skip)
	RolloutNodeReverted  = "reverted"  // sent back to its previous generation by auto_revert or rollback
	RolloutNodeAborted   = "aborted"   // the rollout was aborted before the node confirmed the release; its desired generation went back
)

// Rollout is the server's orchestration of one release over its nodes.
type Rollout struct {
	ID        string    `json:"id"` // "ro<seq>"
	Release   string    `json:"release"`
	Group     string    `json:"group"` // the canonical target selector; one active rollout per group
	Manifest  string    `json:"manifest_id"`
	Strategy  Strategy  `json:"strategy"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Wave      int       `json:"wave"` // index of the current wave
	Waves     []Wave    `json:"waves"`
	Failures  int       `json:"failures"`
	Rollback  bool      `json:"rollback,omitempty"` // made by a group rollback
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	CreatedBy string    `json:"created_by"`
	// WindowOpensAt is, while the rollout is waiting-window, when its next
	// wave may start: the next time every maintenance window that applies
	// to it is open (zero: they never overlap).
	WindowOpensAt time.Time `json:"window_opens_at,omitzero"`
	// WindowOverride is the index + 1 of a wave an operator started outside
	// the maintenance windows (resume with now); 0 = none.
	WindowOverride int `json:"window_override,omitempty"`
	// Analysis are the analysis gates' runs over the newest wave that was
	// analysed (Strategy.AnalysisGates), one per gate.
	AnalysisRuns []AnalysisRun `json:"analysis,omitempty"`
}

// Wave is one step of a rollout.
type Wave struct {
	Name       string        `json:"name"` // "canary", "wave 1", ...
	State      string        `json:"state"`
	Nodes      []RolloutNode `json:"nodes"`
	StartedAt  time.Time     `json:"started_at,omitzero"`
	FinishedAt time.Time     `json:"finished_at,omitzero"`
}

// RolloutNode is one node's progress in a rollout.
type RolloutNode struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	Previous    string    `json:"previous,omitempty"` // newest generation the node ran and confirmed when the rollout published to it: where a revert or rollback sends it ("" = none)
	Reason      string    `json:"reason,omitempty"`
	PublishedAt time.Time `json:"published_at,omitzero"`
}

// Notification kinds: what a [[notify]] webhook is told about.
const (
	NotifyRolloutStarted = "rollout.started"     // the first wave started
	NotifyWavePassed     = "rollout.wave.passed" // a wave passed (canary waves: after their analysis or promotion)
	NotifyHalted         = "rollout.halted"      // failures above max_failures, no auto_revert: state failed
	NotifyReverted       = "rollout.reverted"    // halted, and auto_revert sent the switched nodes back
	NotifySucceeded      = "rollout.succeeded"   // every wave passed
	NotifyNodeFailed     = "rollout.node.failed" // a node of a rollout failed
)

// NotifyKinds lists every notification kind.
var NotifyKinds = []string{NotifyRolloutStarted, NotifyWavePassed, NotifyHalted, NotifyReverted, NotifySucceeded, NotifyNodeFailed}

// Delivery states of a notification.
const (
	DeliveryPending   = "pending"   // not delivered yet; retried with backoff
	DeliveryDelivered = "delivered" // the webhook answered 2xx
	DeliveryFailed    = "failed"    // given up after max_attempts
)

// Notification is one message to one [[notify]] webhook, from the
// server's durable outbox: written in the same transaction as the
// rollout transition it reports, delivered afterwards.
type Notification struct {
	ID       string    `json:"id"`       // "n<seq>": the Slipway-Delivery header, for receivers to drop repeats
	Notifier string    `json:"notifier"` // the [[notify]] name
	Kind     string    `json:"kind"`     // one of NotifyKinds
	Time     time.Time `json:"time"`     // when the transition happened
	Rollout  string    `json:"rollout"`
	Release  string    `json:"release"`
	Group    string    `json:"group"` // the rollout's target group ("" = every node)
	State    string    `json:"state"` // the rollout's state after the transition
	Node     string    `json:"node,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	// Delivery is pending, delivered or failed.
	Delivery    string    `json:"delivery"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // while pending
	LastError   string    `json:"last_error,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
}

// RolloutResumeRequest is the body of a resume. Now starts the rollout's
// next wave at once although no maintenance window is open (audited as
// rollout.resume with "now"); it applies to that wave only.
type RolloutResumeRequest struct {
	Now bool `json:"now,omitempty"`
}

// RolloutRetryRequest retries failed nodes of a rollout: one node, or every
// failed node of the current wave (Node ""), and resumes a halted rollout.
type RolloutRetryRequest struct {
	Node string `json:"node,omitempty"`
}

// Release is a published release.
type Release struct {
	ID        string    `json:"id"` // "r<seq>-<name>"
	Rollout   string    `json:"rollout,omitempty"`
	Name      string    `json:"name"`
	Target    string    `json:"target,omitempty"`
	Manifest  string    `json:"manifest_id"`
	Nodes     []string  `json:"nodes"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// RollbackRequest sends a node back to an earlier generation it ran.
type RollbackRequest struct {
	// To is the node's generation number; 0 = the previous good one.
	To int `json:"to,omitempty"`
}

// JoinTokenRequest creates a one-time join token.
type JoinTokenRequest struct {
	TTL string `json:"ttl,omitempty"` // default 24h
	// Node, when set, binds the token to one node name: it enrols only that
	// name, while it does not exist or after an admin reset it.
	Node string `json:"node,omitempty"`
}

// JoinToken is a one-time enrolment secret (shown once).
type JoinToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Node      string    `json:"node,omitempty"` // the only name it enrols; "": any new name
}

// Event is one audit log entry. Seq rises in the order entries were
// written, with gaps (pruned entries; numbers are never reused): page with
// the last Seq seen as since.
type Event struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`  // "token:<name>", "tailnet:<user or tag>", "node:<name>", "server", "anonymous"
	Action string    `json:"action"` // enroll, release.create, node.rollback, node.retry, node.confirm, node.failed, auth.denied, ...
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Routes lists every route the server serves; the OpenAPI spec must
// describe exactly these (checked in tests).
var Routes = []string{
	RouteEnroll, RouteDesired, RouteReport, RouteConfirm, RouteAgentBlob,
	RouteNodes, RouteNode, RouteNodeRollback, RouteNodeRetry, RouteNodeReset,
	RouteReleases, RouteRelease, RouteCreateRelease,
	RouteBlobHead, RouteBlobPut, RouteCreateJoinToken, RouteEvents,
	RouteRollouts, RouteRollout, RouteRolloutPause, RouteRolloutResume, RouteRolloutPromote,
	RouteRolloutAbort, RouteRolloutRollback, RouteRolloutRetry, RouteManifest, RouteEventStream,
	RouteNotifications, RouteOpenAPI, RouteHealthz, RouteReadyz,
}
