package httpapi

import (
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// Caller is an authenticated admin caller: its actor, as the audit log
// names it, and its role.
type Caller struct {
	Actor string // "token:<name>", "tailnet:<user or tag>"
	Role  string // viewer, deployer, admin
}

// Allows reports whether the caller's role includes need.
func (c Caller) Allows(need string) bool {
	return roleRank[c.Role] >= roleRank[need] && roleRank[need] > 0
}

// TokenCaller is the caller an admin token authenticates, by the token's
// sha256 (HashToken); false for a token the config does not hold (any
// more: a reload that removes a token revokes what it authenticated).
func (s *Server) TokenCaller(sum string) (Caller, bool) {
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(sum), []byte(t.SHA256)) == 1 {
			return Caller{Actor: "token:" + t.Name, Role: t.Role}, true
		}
	}
	return Caller{}, false
}

// MeshCaller authorises r by its tailnet identity when it arrived over the
// tailnet listener (WithMesh): onMesh false elsewhere. d says whether the
// identity has at least the viewer role, and if not why (d.Status, d.Reason).
func (s *Server) MeshCaller(r *http.Request) (c Caller, d mesh.Decision, onMesh bool) {
	m, _ := r.Context().Value(meshKey{}).(*MeshAuth)
	if m == nil {
		return Caller{}, mesh.Decision{}, false
	}
	d = m.authz().Admin(s.whois(m, r), api.RoleViewer)
	return Caller{Actor: d.Actor, Role: d.Role}, d, true
}

// Refused audits a refused request (aggregated like every refusal of the
// API, registry.Refused) with actor and why.
func (s *Server) Refused(r *http.Request, actor, why string) { s.refused(r, actor, why) }

// OverRefusals reports whether r's address is over its budget of refused
// requests (LimitRefusals), and how long until it is not.
func (s *Server) OverRefusals(r *http.Request) (time.Duration, bool) {
	if s.refusals == nil {
		return 0, false
	}
	return s.refusals(r)
}

// StreamEvents serves the audit log's event stream (GET /v1/events/stream)
// to a caller already authorised as actor (the dashboard's session).
func (s *Server) StreamEvents(w http.ResponseWriter, r *http.Request, actor string) {
	setActor(w, actor)
	s.eventStream(w, r, actor)
}

// Mount serves h for pattern (a ServeMux pattern such as "/ui/") next to
// the API, with the API's request log. Call it before serving.
func (s *Server) Mount(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }
