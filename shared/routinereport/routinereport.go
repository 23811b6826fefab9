// Package routinereport lets an agent's routine status report ride on its
// desired long-poll. Most reports say what the last one said; each still
// cost the server a request. Instead the agent names its last report's
// fingerprint and time in a header of the long-poll it holds anyway, and
// the server counts that as the report (the node is seen, its report
// time moves on) when it holds a report with that fingerprint, and says
// so in the answer. The agent posts a report as before whenever anything
// in it changed, when the server did not say it counted the fingerprint,
// and at least every FullEvery.
package routinereport

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// RequestHeader, on GET desired: "<hex sha256 fingerprint> <RFC 3339 time>".
const RequestHeader = "Slipway-Report"

// ResponseHeader answers RequestHeader: Seen (counted as a report) or
// Unknown (the server holds another report: post it). The answer to a
// posted report carries Seen too: the server holds it and will count its
// fingerprint.
const ResponseHeader = "Slipway-Report-Status"

// Answers in ResponseHeader.
const (
	Seen    = "seen"
	Unknown = "unknown"
)

// FullEvery is how many report intervals may pass without a posted report.
const FullEvery = 10

// Print fingerprints what a report says, but for its time.
func Print(r api.Report) [32]byte {
	r.Time = time.Time{}
	b, _ := json.Marshal(r)
	return sha256.Sum256(b)
}

// Format is RequestHeader's value.
func Format(fp [32]byte, at time.Time) string {
	return hex.EncodeToString(fp[:]) + " " + at.UTC().Format(time.RFC3339Nano)
}

// Parse reads RequestHeader's value.
func Parse(v string) (fp [32]byte, at time.Time, err error) {
	h, t, ok := strings.Cut(v, " ")
	b, herr := hex.DecodeString(h)
	if !ok || herr != nil || len(b) != len(fp) {
		return fp, at, fmt.Errorf("header %s: %q: want a hex sha256 and an RFC 3339 time", RequestHeader, v)
	}
	if at, err = time.Parse(time.RFC3339Nano, t); err != nil {
		return fp, at, fmt.Errorf("header %s: time %q: %w", RequestHeader, t, err)
	}
	copy(fp[:], b)
	return fp, at, nil
}

// Skipper is the agent's side: which timed reports it may leave out, and
// what its long-polls say. Safe for concurrent use.
type Skipper struct {
	mu       sync.Mutex
	posted   [32]byte // the last report posted, if any
	hasPost  bool
	lastPost time.Time
	last     time.Time // the newest report built with that content
	// accepted: the server counts the posted report's fingerprint on a
	// long-poll (it said so, or it holds the report, posted since, and
	// answered the header before: supported).
	accepted  bool
	supported bool
	// carried, carriedAt: the fingerprint the newest long-poll carried
	// and when it was sent (the server counts it on arrival).
	carried   [32]byte
	carriedAt time.Time
}

// Posted notes that r was posted and the server took it, answering
// ResponseHeader's value answer.
func (s *Skipper) Posted(r api.Report, now time.Time, answer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.supported = s.supported || answer == Seen
	fp := Print(r)
	if !s.hasPost || fp != s.posted {
		// The server now holds this report: a server that answers the
		// header counts its fingerprint.
		s.accepted = s.supported
	}
	s.posted, s.hasPost, s.lastPost, s.last = fp, true, now, r.Time
}

// Skip reports whether a timed report r need not be posted: it says what
// the last posted one said, the server counts that fingerprint, a
// long-poll carrying it was sent less than interval ago (so the server saw
// the node as often as the report would have shown it: polls spaced wider
// than the report interval, e.g. with gossip, do not stand in for reports),
// and the last post is less than FullEvery × interval old. When it may be
// skipped, the next long-poll carries r's time.
func (s *Skipper) Skip(r api.Report, now time.Time, interval time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fp := Print(r)
	if !s.hasPost || !s.accepted || fp != s.posted || now.Sub(s.lastPost) >= FullEvery*interval ||
		s.carried != fp || now.Sub(s.carriedAt) >= interval {
		return false
	}
	s.last = r.Time
	return true
}

// Carry is RequestHeader's value for a long-poll sent at now ("" before
// any report was posted).
func (s *Skipper) Carry(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasPost {
		return ""
	}
	s.carried, s.carriedAt = s.posted, now
	return Format(s.posted, s.last)
}

// Answer takes ResponseHeader's value v from the answer to a long-poll
// that carried sent (Header's value) and reports whether the server wants
// a posted report (it holds another). A server that does not know the
// header answers nothing: no report is ever skipped then. An answer about
// a report older than the last posted one changes nothing.
func (s *Skipper) Answer(sent, v string) (post bool) {
	if sent == "" {
		return false
	}
	fp, _, err := Parse(sent)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		return false
	}
	s.supported = v == Seen || v == Unknown
	if fp != s.posted {
		return false
	}
	s.accepted = v == Seen
	return v == Unknown
}
