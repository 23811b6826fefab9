package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// refused audits a refused request through the registry's aggregation (one
// event per source, actor and reason per window; see registry.Refused).
func (s *Server) refused(r *http.Request, actor, why string) {
	rf := registry.Refusal{Source: sourceHost(r.RemoteAddr), Actor: actor, Reason: why, Path: r.Method + " " + r.URL.Path}
	if err := s.reg.Refused(r.Context(), rf); err != nil {
		s.log.Error().Err(err).Msg("audit")
	}
}

// sourceHost is the caller's address without its port: refusals from one
// client aggregate over its connections.
func sourceHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	if remote == "" {
		return "local"
	}
	return remote
}

// StreamLimit caps the event streams each caller (its actor: token:ci,
// tailnet:alice@example.com) holds open at once. One StreamLimit is shared
// by the handlers a server builds over time (reloads), so streams opened
// before a reload still count.
type StreamLimit struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

// NewStreamLimit allows max streams per caller (max < 1: no limit).
func NewStreamLimit(max int) *StreamLimit {
	return &StreamLimit{max: max, open: map[string]int{}}
}

// acquire takes a stream for actor, or reports false at the limit.
func (l *StreamLimit) acquire(actor string) bool {
	if l == nil || l.max < 1 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[actor] >= l.max {
		return false
	}
	l.open[actor]++
	return true
}

func (l *StreamLimit) release(actor string) {
	if l == nil || l.max < 1 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[actor]--; l.open[actor] <= 0 {
		delete(l.open, actor)
	}
}

// LimitStreams caps the event streams per caller with l (nil: no limit).
// Call it before serving.
func (s *Server) LimitStreams(l *StreamLimit) { s.streams = l }

// streamSlot takes an event stream slot for actor, or answers 429.
func (s *Server) streamSlot(w http.ResponseWriter, actor string) (release func(), ok bool) {
	if !s.streams.acquire(actor) {
		w.Header().Set("Retry-After", streamRetryAfter)
		writeErr(w, http.StatusTooManyRequests, api.CodeOverloaded,
			fmt.Sprintf("%s already has %d event streams open, the most allowed ([audit] max_streams)", actor, s.streams.max),
			"close one of them, or try again after the Retry-After header's seconds")
		return nil, false
	}
	return func() { s.streams.release(actor) }, true
}

// streamRetryAfter is the Retry-After of a refused event stream: streams
// are long-lived, so a slot frees up later than a write's.
const streamRetryAfter = "10"
