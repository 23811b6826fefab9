// Package httpapi serves the agent API and the admin API of slipway-server
// over HTTP/JSON (routes in shared/api, described by shared/api/openapi.yaml).
//
// Authentication: agents present their node token and may act only for the
// node that token belongs to ({name} in the path; anything else is 403 and
// audited); over the tailnet (MeshAuth) the node is identified by WhoIs
// instead, and an agent enrols there without a join token (its identity
// must carry the agent tag and be the name it enrols). Admin callers
// present a bearer token from the server config; each token has a role
// (viewer < deployer < admin). Over the tailnet, an admin request without a
// bearer token gets the role the tailnet identity of its caller maps to
// (mesh.Authorizer.Admin). Every refusal is audited with the caller as
// actor (aggregated per source and reason: registry.Refused). Tokens are
// compared as sha256 hashes and never logged. Bad input gets a 4xx with an
// api.Error naming what is wrong, and nothing is stored.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/longpoll"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/digest"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// AdminToken is one configured admin bearer token, by its sha256.
type AdminToken struct {
	Name   string
	Role   string
	SHA256 string // hex of sha256(token)
}

// HashToken returns the hex sha256 of a token, as AdminToken.SHA256 wants.
func HashToken(token string) string {
	return digest.Hex([]byte(token))
}

// rollouts is what the API does with rollouts; *rollout.Machine has it.
type rollouts interface {
	CreateRelease(ctx context.Context, actor string, req api.CreateReleaseRequest) (api.Release, error)
	Rollouts(ctx context.Context) ([]api.Rollout, error)
	Rollout(ctx context.Context, id string) (api.Rollout, error)
	RolloutAction(ctx context.Context, actor, id, action string) (api.Rollout, error)
	RolloutResumeNow(ctx context.Context, actor, id string) (api.Rollout, error)
	RolloutRollback(ctx context.Context, actor, id string) (api.Rollout, error)
	RolloutRetry(ctx context.Context, actor, id, node string) (api.Rollout, error)
}

// Server is the HTTP handler of slipway-server.
type Server struct {
	reg    *registry.Registry
	ros    rollouts
	blobs  *blobstore.Store
	tokens []AdminToken
	spec   []byte
	log    zerolog.Logger
	mux    *http.ServeMux
	// hot holds the handlers of the routes api.MatchAgentRoute recognises,
	// which ServeHTTP calls without the mux.
	hot map[string]http.Handler
	// MaxPollWait caps the desired long-poll (api.MaxPollWait).
	MaxPollWait time.Duration
	// writes holds a token per agent write in flight (nil: no limit).
	writes      chan struct{}
	writeWait   time.Duration
	overloadLog sync.Once
	// streams caps the event streams per caller (nil: no limit).
	streams *StreamLimit
	// refusals, when set, says whether a refused request's caller is over
	// its budget (LimitRefusals).
	refusals func(*http.Request) (retryAfter time.Duration, over bool)
	// leadership fills /readyz with which server leads (nil: the body
	// names none and says this one leads).
	leadership func(context.Context) (api.Ready, error)
}

// ShowLeadership makes /readyz name this server and the leader as f says
// (several servers on etcd). Call it before serving.
func (s *Server) ShowLeadership(f func(context.Context) (api.Ready, error)) { s.leadership = f }

// LimitRefusals makes a request that would be refused as unauthenticated
// (401) get 429 with Retry-After instead, and no audit event, while over
// says its caller is over its budget of refusals (server/daemon counts
// them per client address). Call it before serving.
func (s *Server) LimitRefusals(over func(*http.Request) (retryAfter time.Duration, over bool)) {
	s.refusals = over
}

// LimitAgentWrites bounds the agent writes (enrol, report, confirm) in
// flight to n (n < 1: no limit). One more waits up to wait for a slot (a
// burst of a whole fleet's reports queues briefly instead of coming back a
// second later); when none frees it is answered 429 with Retry-After,
// before it reads its body or touches the store. Call it before serving.
func (s *Server) LimitAgentWrites(n int, wait time.Duration) {
	s.writes, s.writeWait = nil, max(wait, 0)
	if n > 0 {
		s.writes = make(chan struct{}, n)
	}
}

// limitWrites sheds an agent write when LimitAgentWrites stays full.
func (s *Server) limitWrites(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.writes == nil {
			h.ServeHTTP(w, r)
			return
		}
		if !s.writeSlot(r.Context()) {
			s.overloadLog.Do(func() {
				s.log.Warn().Int("limit", cap(s.writes)).Dur("wait", s.writeWait).Msg("agent writes at their limit; answering 429 (logged once)")
			})
			w.Header().Set("Retry-After", retryAfterSeconds)
			writeErr(w, http.StatusTooManyRequests, api.CodeOverloaded, "the server is busy: too many agent writes in flight; try again", "retry after the Retry-After header's seconds")
			return
		}
		defer func() { <-s.writes }()
		h.ServeHTTP(w, r)
	})
}

// writeSlot takes a slot of LimitAgentWrites, waiting up to its wait;
// false when none freed in time (or the caller left).
func (s *Server) writeSlot(ctx context.Context) bool {
	select {
	case s.writes <- struct{}{}:
		return true
	default:
	}
	if s.writeWait <= 0 {
		return false
	}
	t := time.NewTimer(s.writeWait)
	defer t.Stop()
	select {
	case s.writes <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// New builds the handler over the registry reg and its rollouts ros. spec
// is served at /openapi.yaml.
func New(reg *registry.Registry, ros rollouts, blobs *blobstore.Store, tokens []AdminToken, spec []byte, log zerolog.Logger) *Server {
	s := &Server{reg: reg, ros: ros, blobs: blobs, tokens: tokens, spec: spec, log: log.With().Str("component", "httpapi").Logger(), mux: http.NewServeMux(),
		hot: map[string]http.Handler{}, MaxPollWait: api.MaxPollWait}
	s.routeAgents()
	s.routeAdmin()
	s.routePublic()
	return s
}

// routeAgents routes the agents' calls; the hot ones are kept in s.hot.
func (s *Server) routeAgents() {
	hot := func(route string, h http.Handler) {
		s.mux.Handle(route, h)
		s.hot[route] = h
	}
	s.mux.Handle(api.RouteEnroll, s.limitWrites(http.HandlerFunc(s.enroll)))
	hot(api.RouteDesired, s.agentAuth(s.desired))
	hot(api.RouteReport, s.limitWrites(s.agentAuth(s.report)))
	hot(api.RouteConfirm, s.limitWrites(s.agentAuth(s.confirm)))
	s.mux.Handle(api.RouteAgentBlob, s.agentAuth(s.agentBlob))
}

// routeAdmin routes the admin API, each route behind the role it needs.
func (s *Server) routeAdmin() {
	admin := func(route, role string, h func(http.ResponseWriter, *http.Request, string)) {
		s.mux.Handle(route, s.adminAuth(role, h))
	}
	admin(api.RouteNodes, api.RoleViewer, s.nodes)
	admin(api.RouteNode, api.RoleViewer, s.node)
	admin(api.RouteNodeRollback, api.RoleDeployer, s.rollback)
	admin(api.RouteNodeRetry, api.RoleDeployer, s.retry)
	admin(api.RouteNodeReset, api.RoleAdmin, s.reset)
	admin(api.RouteReleases, api.RoleViewer, s.releases)
	admin(api.RouteRelease, api.RoleViewer, s.release)
	admin(api.RouteCreateRelease, api.RoleDeployer, s.createRelease)
	admin(api.RouteBlobHead, api.RoleViewer, s.blobHead)
	admin(api.RouteBlobPut, api.RoleDeployer, s.blobPut)
	admin(api.RouteCreateJoinToken, api.RoleAdmin, s.createJoinToken)
	admin(api.RouteEvents, api.RoleViewer, s.events)
	admin(api.RouteRollouts, api.RoleViewer, s.rollouts)
	admin(api.RouteRollout, api.RoleViewer, s.rollout)
	admin(api.RouteRolloutResume, api.RoleDeployer, s.rolloutResume)
	for route, action := range map[string]string{api.RouteRolloutPause: "pause", api.RouteRolloutPromote: "promote", api.RouteRolloutAbort: "abort"} {
		admin(route, api.RoleDeployer, func(w http.ResponseWriter, r *http.Request, actor string) { s.rolloutAction(w, r, actor, action) })
	}
	admin(api.RouteRolloutRollback, api.RoleDeployer, s.rolloutRollback)
	admin(api.RouteRolloutRetry, api.RoleDeployer, s.rolloutRetry)
	admin(api.RouteManifest, api.RoleViewer, s.manifest)
	admin(api.RouteEventStream, api.RoleViewer, s.eventStream)
	admin(api.RouteNotifications, api.RoleViewer, s.notifications)
}

// routePublic routes what needs no token: the spec, the health checks and
// the 404 of every other path.
func (s *Server) routePublic() {
	s.mux.HandleFunc(api.RouteOpenAPI, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(s.spec)
	})
	s.mux.HandleFunc(api.RouteHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc(api.RouteReadyz, func(w http.ResponseWriter, r *http.Request) {
		ready, err := s.ready(r.Context())
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, api.CodeInternal, "not ready: "+err.Error(), "")
			return
		}
		writeJSON(w, http.StatusOK, ready)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, api.CodeNotFound, "no route "+r.Method+" "+r.URL.Path, "see /openapi.yaml")
	})
}

// ready is /readyz's answer: the store answers, and who leads.
func (s *Server) ready(ctx context.Context) (api.Ready, error) {
	if err := s.reg.Ready(ctx); err != nil {
		return api.Ready{}, err
	}
	if s.leadership == nil {
		return api.Ready{Status: "ready", Leading: true}, nil
	}
	ready, err := s.leadership(ctx)
	ready.Status = "ready"
	return ready, err
}

// ServeHTTP logs every request with its outcome.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusWriter{ResponseWriter: w, status: http.StatusOK, who: &actorRef{}}
	tr := longpoll.TrackerOf(r.Context())
	if tr != nil { // a held long-poll is logged when it is answered
		// Not rec nor r: they would keep net/http's connection buffers and
		// the request alive while the poll is held.
		who, method, path := rec.who, r.Method, r.URL.Path
		tr.OnAnswer(func(status int) { s.logRequest(method, path, status, who.actor, start) })
	}
	s.route(rec, r)
	if !tr.Held() {
		s.logRequest(r.Method, r.URL.Path, rec.status, rec.who.actor, start)
	}
}

// route serves the agents' hot routes without the mux (see
// api.MatchAgentRoute), everything else through it.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if route, name, ok := api.MatchAgentRoute(r.Method, r.URL.EscapedPath()); ok {
		if h := s.hot[route]; h != nil {
			r.SetPathValue("name", name)
			h.ServeHTTP(w, r)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) logRequest(method, path string, status int, actor string, start time.Time) {
	ev := s.log.Debug()
	if status >= 500 {
		ev = s.log.Error()
	} else if status >= 400 {
		ev = s.log.Info()
	}
	ev.Str("method", method).Str("path", path).Int("status", status).Dur("took", time.Since(start)).Str("actor", actor).Msg("request")
}

type statusWriter struct {
	http.ResponseWriter
	status int
	who    *actorRef
}

// actorRef is who made a request, once authenticated.
type actorRef struct{ actor string }

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (a held
// long-poll takes it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func setActor(w http.ResponseWriter, actor string) {
	if sw, ok := w.(*statusWriter); ok {
		sw.who.actor = actor
	}
}

var roleRank = map[string]int{api.RoleViewer: 1, api.RoleDeployer: 2, api.RoleAdmin: 3}

// ValidRole reports whether role is a known admin role.
func ValidRole(role string) bool { return roleRank[role] > 0 }

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request, status int, actor, why string) {
	if s.refusals != nil && status == http.StatusUnauthorized {
		if wait, over := s.refusals(r); over {
			w.Header().Set("Retry-After", strconv.FormatInt(max(int64((wait+time.Second-1)/time.Second), 1), 10))
			writeErr(w, http.StatusTooManyRequests, api.CodeOverloaded, "too many refused requests from your address; try again later", "retry after the Retry-After header's seconds")
			return
		}
	}
	code := api.CodeUnauthorized
	if status == http.StatusForbidden {
		code = api.CodeForbidden
	}
	s.refused(r, actor, why)
	writeErr(w, status, code, why, "")
}

func (s *Server) adminAuth(role string, h func(http.ResponseWriter, *http.Request, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if m, _ := r.Context().Value(meshKey{}).(*MeshAuth); m != nil && tok == "" {
			s.meshAdminAuth(m, role, w, r, h)
			return
		}
		if tok == "" {
			s.deny(w, r, http.StatusUnauthorized, "anonymous", "missing bearer token")
			return
		}
		c, ok := s.TokenCaller(HashToken(tok))
		if !ok {
			s.deny(w, r, http.StatusUnauthorized, "anonymous", "unknown bearer token")
			return
		}
		setActor(w, c.Actor)
		if !c.Allows(role) {
			s.deny(w, r, http.StatusForbidden, c.Actor, fmt.Sprintf("role %s may not do this (needs %s)", c.Role, role))
			return
		}
		h(w, r, c.Actor)
	})
}

// MeshAuth authorises requests that arrived over the tailnet by WhoIs
// (shared/mesh): agent requests instead of node tokens (the peer must carry
// the agent tag and may act only for the node name its identity carries),
// enrolment without a join token (the same rule for the name it enrols),
// and admin requests without a bearer token (the role Authz gives the
// peer's user or tags). Admin requests with a bearer token are authorised
// by the token, as on other listeners. Enrolment with a join token needs
// the token and, first, the same agent rule for the caller: the tailnet
// would refuse any other caller's next request, so its token is not used
// up.
type MeshAuth struct {
	Whois func(ctx context.Context, remoteAddr string) (mesh.Identity, error)
	// Authz decides; SetAuthz replaces it while requests are served.
	Authz *mesh.Authorizer

	mu sync.RWMutex
}

// SetAuthz replaces the Authorizer (a reload of [tailscale.roles]); the
// requests that follow use it.
func (m *MeshAuth) SetAuthz(a *mesh.Authorizer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Authz = a
}

func (m *MeshAuth) authz() *mesh.Authorizer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.Authz
}

// whois asks the tailnet who the peer of r is; failures other than "not a
// peer" are logged, and every failure is the empty identity (anonymous).
func (s *Server) whois(m *MeshAuth, r *http.Request) mesh.Identity {
	id, err := m.Whois(r.Context(), r.RemoteAddr)
	if err != nil {
		if !errors.Is(err, mesh.ErrNoIdentity) {
			s.log.Warn().Err(err).Str("remote", r.RemoteAddr).Msg("whois")
		}
		return mesh.Identity{}
	}
	return id
}

type meshKey struct{}

// WithMesh returns ctx marked so that agent requests served under it (set
// it as the tailnet http.Server's BaseContext) are authorised by m.
func WithMesh(ctx context.Context, m *MeshAuth) context.Context {
	return context.WithValue(ctx, meshKey{}, m)
}

func (s *Server) meshAgentAuth(m *MeshAuth, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, string)) {
	id := s.whois(m, r)
	d := m.authz().Agent(id, r.PathValue("name"))
	setActor(w, d.Actor)
	if !d.Allow {
		s.deny(w, r, d.Status, d.Actor, d.Reason)
		return
	}
	h(w, r, id.NodeName)
}

// meshAdminAuth authorises an admin request without a bearer token that
// arrived over the tailnet: by the role the caller's tailnet identity maps
// to. The actor is the principal that gave the role ("tailnet:<user>" or
// "tailnet:<tag>").
func (s *Server) meshAdminAuth(m *MeshAuth, role string, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, string)) {
	d := m.authz().Admin(s.whois(m, r), role)
	setActor(w, d.Actor)
	if !d.Allow {
		s.deny(w, r, d.Status, d.Actor, d.Reason)
		return
	}
	h(w, r, d.Actor)
}

func (s *Server) agentAuth(h func(http.ResponseWriter, *http.Request, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m, _ := r.Context().Value(meshKey{}).(*MeshAuth); m != nil {
			s.meshAgentAuth(m, w, r, h)
			return
		}
		name, err := s.reg.NodeByToken(r.Context(), bearer(r))
		if errors.Is(err, registry.ErrUnauthorized) {
			s.deny(w, r, http.StatusUnauthorized, "anonymous", "missing or unknown node token")
			return
		}
		if err != nil {
			s.fail(w, err)
			return
		}
		setActor(w, "node:"+name)
		if want := r.PathValue("name"); want != name {
			s.deny(w, r, http.StatusForbidden, "node:"+name, fmt.Sprintf("node %s may not act for node %s", name, want))
			return
		}
		h(w, r, name)
	})
}

// retryAfterSeconds is the Retry-After of the server's 429 and 503
// answers: agents add their own jittered backoff.
const retryAfterSeconds = "1"

// fail maps an error to a status and writes it.
func (s *Server) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, blobstore.ErrNotFound):
		writeErr(w, http.StatusNotFound, api.CodeNotFound, err.Error(), "")
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, blobstore.ErrMismatch), errors.Is(err, blobstore.ErrBadName):
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error(), "")
	case errors.Is(err, registry.ErrConflict):
		writeErr(w, http.StatusConflict, api.CodeConflict, err.Error(), "")
	case errors.Is(err, registry.ErrUnauthorized):
		writeErr(w, http.StatusUnauthorized, api.CodeUnauthorized, err.Error(), "")
	case errors.Is(err, registry.ErrBusy):
		s.log.Warn().Err(err).Msg("store contention outlasted the retries; answering 503")
		w.Header().Set("Retry-After", retryAfterSeconds)
		writeErr(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the server is busy: store contention; try again", "retry after the Retry-After header's seconds")
	case diskFull(err):
		s.diskFull(w, err)
	case errors.Is(err, store.ErrUnavailable):
		s.log.Error().Err(err).Msg("the store is unavailable; answering 503")
		w.Header().Set("Retry-After", retryAfterSeconds)
		writeErr(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the server's store is unavailable: "+err.Error(),
			"retry after the Retry-After header's seconds; a write may or may not have been recorded")
	case errors.Is(err, context.Canceled):
		writeErr(w, http.StatusServiceUnavailable, api.CodeInternal, "request canceled", "")
	default:
		s.log.Error().Err(err).Msg("internal error")
		writeErr(w, http.StatusInternalServerError, api.CodeInternal, "internal error", "see the server log")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg, hint string) {
	writeJSON(w, status, api.Error{Error: msg, Code: code, Hint: hint})
}

// decode reads a JSON body strictly (unknown fields are errors).
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, "request body: "+err.Error(), "")
		return false
	}
	if dec.More() {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, "request body: trailing data after the JSON object", "")
		return false
	}
	return true
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if !decode(w, r, 64<<10, &req) {
		return
	}
	var resp api.EnrollResponse
	var err error
	m, _ := r.Context().Value(meshKey{}).(*MeshAuth)
	if tok := bearer(r); tok != "" && req.JoinToken == "" {
		// The node itself, enrolling again with its current node token.
		resp, err = s.reg.EnrollWithNodeToken(r.Context(), req, tok)
	} else if m != nil && req.JoinToken == "" {
		// Over the tailnet without a join token: the caller's identity
		// must be an agent's, and the name it enrols its own.
		d := m.authz().Agent(s.whois(m, r), req.Name)
		setActor(w, d.Actor)
		if !d.Allow {
			s.deny(w, r, d.Status, d.Actor, "enrol "+req.Name+" without a join token: "+d.Reason)
			return
		}
		resp, err = s.reg.EnrollVerified(r.Context(), req, "tailnet identity")
	} else if m != nil {
		// A join token over the tailnet: the tailnet will identify the
		// node on every later request, so a caller it would refuse then
		// (no agent tag, or another name) is refused now, before the
		// token is used up.
		d := m.authz().Agent(s.whois(m, r), req.Name)
		setActor(w, d.Actor)
		if !d.Allow {
			s.deny(w, r, d.Status, d.Actor, "enrol "+req.Name+" with a join token over the tailnet (the token was not used): "+d.Reason)
			return
		}
		resp, err = s.reg.Enroll(r.Context(), req)
	} else {
		resp, err = s.reg.Enroll(r.Context(), req)
	}
	if errors.Is(err, registry.ErrUnauthorized) {
		s.deny(w, r, http.StatusUnauthorized, "node:"+req.Name, err.Error())
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) desired(w http.ResponseWriter, r *http.Request, name string) {
	wait := api.DefaultPollWait
	if q := r.URL.Query().Get(api.QueryWait); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("query %s=%q: want a duration like 30s", api.QueryWait, q), "")
			return
		}
		wait = min(d, s.MaxPollWait)
	}
	have := ""
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if uq, err := strconv.Unquote(inm); err == nil {
			have = uq
		} else {
			have = inm
		}
	}
	if !s.routineReport(w, r, name) {
		return
	}
	if wait > 0 && s.holdDesired(w, r, name, have, wait) {
		return
	}
	d, changed, err := s.reg.WaitDesired(r.Context(), name, have, wait)
	writeDesired(w, d, changed, err, s.fail)
}

// holdDesired holds the long-poll without a goroutine (server/longpoll)
// when it has nothing to answer yet; false when it cannot be held, having
// written nothing.
func (s *Server) holdDesired(w http.ResponseWriter, r *http.Request, name, have string, wait time.Duration) bool {
	p := longpoll.Begin(w, r)
	if p == nil {
		return false
	}
	stop := s.reg.WatchDesired(name, p.Wake) // before the read: no write is missed
	etag, err := s.reg.DesiredETag(r.Context(), name)
	if err != nil || etag != have {
		stop()
		s.answerDesired(r.Context(), w, name, have, err)
		return true
	}
	held := p.Hold(wait, func(ctx context.Context, w http.ResponseWriter, woke bool) {
		stop()
		if !woke {
			writeUnchanged(w, etag)
			return
		}
		s.answerDesired(ctx, w, name, have, nil)
	})
	if !held {
		stop()
	}
	return held
}

// answerDesired answers with the node's desired generation as it is now
// (or err).
func (s *Server) answerDesired(ctx context.Context, w http.ResponseWriter, name, have string, err error) {
	var d *api.Desired
	if err == nil {
		d, err = s.reg.Desired(ctx, name)
	}
	writeDesired(w, d, err == nil && d.ETag() != have, err, s.fail)
}

// writeUnchanged answers a long-poll whose wait passed: 304 with the
// ETag, or 204 without a desired generation ("").
func writeUnchanged(w http.ResponseWriter, etag string) {
	if etag == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("ETag", strconv.Quote(etag))
	w.WriteHeader(http.StatusNotModified)
}

// writeDesired answers a long-poll: 204 without a desired generation, 304
// when it did not change, else 200 with it.
func writeDesired(w http.ResponseWriter, d *api.Desired, changed bool, err error, fail func(http.ResponseWriter, error)) {
	if err != nil {
		fail(w, err)
		return
	}
	if d != nil {
		w.Header().Set("ETag", strconv.Quote(registry.ETag(d)))
	}
	switch {
	case d == nil:
		w.WriteHeader(http.StatusNoContent)
	case !changed:
		w.WriteHeader(http.StatusNotModified)
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

// routineReport takes the routine report a long-poll carries (shared/
// routinereport) and says in the answer whether it counted; false when it
// answered an error.
func (s *Server) routineReport(w http.ResponseWriter, r *http.Request, name string) bool {
	v := r.Header.Get(routinereport.RequestHeader)
	if v == "" {
		return true
	}
	fp, at, err := routinereport.Parse(v)
	if err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error(), "")
		return false
	}
	seen, err := s.reg.SeenPrint(r.Context(), name, fp, at)
	if err != nil {
		s.fail(w, err)
		return false
	}
	answer := routinereport.Unknown
	if seen {
		answer = routinereport.Seen
	}
	w.Header().Set(routinereport.ResponseHeader, answer)
	return true
}

func (s *Server) report(w http.ResponseWriter, r *http.Request, name string) {
	var rep api.Report
	if !decode(w, r, 4<<20, &rep) {
		return
	}
	if err := s.reg.Report(r.Context(), name, rep); err != nil {
		s.fail(w, err)
		return
	}
	// The server holds this report now: its fingerprint counts on the
	// long-poll (shared/routinereport).
	w.Header().Set(routinereport.ResponseHeader, routinereport.Seen)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) confirm(w http.ResponseWriter, r *http.Request, name string) {
	var req api.ConfirmRequest
	if !decode(w, r, 4<<20+64<<10, &req) { // a report (4 MiB, as on /status) may ride along
		return
	}
	ok, err := s.reg.Confirm(r.Context(), name, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	resp := api.ConfirmResponse{Confirmed: ok, ReportRecorded: req.Report != nil}
	if resp.ReportRecorded {
		// As after a posted report: its fingerprint counts on the long-poll.
		w.Header().Set(routinereport.ResponseHeader, routinereport.Seen)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) agentBlob(w http.ResponseWriter, r *http.Request, name string) {
	sha := r.PathValue("sha256")
	if !blobstore.ValidSHA256(sha) {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, "blob name is not a sha256 (64 lowercase hex digits)", "")
		return
	}
	ok, err := s.reg.MayReadBlob(r.Context(), name, sha)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !ok {
		s.deny(w, r, http.StatusForbidden, "node:"+name, "blob "+sha+" is not part of a generation published to node "+name)
		return
	}
	f, err := s.blobs.Open(sha)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

func (s *Server) nodes(w http.ResponseWriter, r *http.Request, _ string) {
	ns, err := s.reg.Nodes(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ns)
}

func (s *Server) node(w http.ResponseWriter, r *http.Request, _ string) {
	n, err := s.reg.Node(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, actor string) {
	var req api.RollbackRequest
	if !decode(w, r, 64<<10, &req) {
		return
	}
	if req.To < 0 {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, "to: must be a generation number ≥ 1, or 0 for the previous good one", "")
		return
	}
	n, err := s.reg.Rollback(r.Context(), actor, r.PathValue("name"), req.To)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, actor string) {
	var req struct{}
	if !decode(w, r, 1<<10, &req) {
		return
	}
	n, err := s.reg.Retry(r.Context(), actor, r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request, actor string) {
	var req struct{}
	if !decode(w, r, 1<<10, &req) {
		return
	}
	n, err := s.reg.ResetNode(r.Context(), actor, r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) releases(w http.ResponseWriter, r *http.Request, _ string) {
	rels, err := s.reg.Releases(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rels)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request, _ string) {
	rel, err := s.reg.Release(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rel)
}

func (s *Server) createRelease(w http.ResponseWriter, r *http.Request, actor string) {
	var req api.CreateReleaseRequest
	if !decode(w, r, 40<<20, &req) {
		return
	}
	rel, err := s.ros.CreateRelease(r.Context(), actor, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, rel)
}

func (s *Server) blobHead(w http.ResponseWriter, r *http.Request, _ string) {
	ok, size, err := s.blobs.Has(r.PathValue("sha256"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) blobPut(w http.ResponseWriter, r *http.Request, actor string) {
	sha := r.PathValue("sha256")
	if r.ContentLength < 0 {
		writeErr(w, http.StatusLengthRequired, api.CodeInvalid, "Content-Length is required", "")
		return
	}
	if err := s.blobs.Put(sha, r.Body, r.ContentLength, api.MaxBlobUploadSize); err != nil {
		s.fail(w, err)
		return
	}
	if err := s.reg.Audit(r.Context(), actor, "blob.upload", sha, strconv.FormatInt(r.ContentLength, 10)+" bytes"); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request, actor string) {
	var req api.JoinTokenRequest
	if !decode(w, r, 1<<10, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("ttl %q: want a duration like 24h", req.TTL), "")
			return
		}
		ttl = d
	}
	jt, err := s.reg.CreateJoinToken(r.Context(), actor, ttl, req.Node)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, jt)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	since, limit := int64(0), 100
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("since=%q: want a sequence number ≥ 0", v), "")
			return
		}
		since = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("limit=%q: want 1..1000", v), "")
			return
		}
		limit = n
	}
	evs, err := s.reg.Events(r.Context(), since, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

func (s *Server) notifications(w http.ResponseWriter, r *http.Request, _ string) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("limit=%q: want 1..1000", v), "")
			return
		}
		limit = n
	}
	ns, err := s.reg.Notifications(r.Context(), limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ns)
}

func (s *Server) rollouts(w http.ResponseWriter, r *http.Request, _ string) {
	ros, err := s.ros.Rollouts(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ros)
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request, _ string) {
	ro, err := s.ros.Rollout(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request, actor, action string) {
	var req struct{}
	if !decode(w, r, 1<<10, &req) {
		return
	}
	ro, err := s.ros.RolloutAction(r.Context(), actor, r.PathValue("id"), action)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

// rolloutResume resumes a paused rollout, or with now starts its next
// wave outside the maintenance windows.
func (s *Server) rolloutResume(w http.ResponseWriter, r *http.Request, actor string) {
	var req api.RolloutResumeRequest
	if !decode(w, r, 1<<10, &req) {
		return
	}
	var ro api.Rollout
	var err error
	if req.Now {
		ro, err = s.ros.RolloutResumeNow(r.Context(), actor, r.PathValue("id"))
	} else {
		ro, err = s.ros.RolloutAction(r.Context(), actor, r.PathValue("id"), "resume")
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (s *Server) rolloutRollback(w http.ResponseWriter, r *http.Request, actor string) {
	var req struct{}
	if !decode(w, r, 1<<10, &req) {
		return
	}
	ro, err := s.ros.RolloutRollback(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

func (s *Server) rolloutRetry(w http.ResponseWriter, r *http.Request, actor string) {
	var req api.RolloutRetryRequest
	if !decode(w, r, 1<<10, &req) {
		return
	}
	if req.Node != "" && !registry.ValidNodeName(req.Node) {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("node %q: not a node name", req.Node), "")
		return
	}
	ro, err := s.ros.RolloutRetry(r.Context(), actor, r.PathValue("id"), req.Node)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (s *Server) manifest(w http.ResponseWriter, r *http.Request, _ string) {
	b, err := s.reg.Manifest(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// KeepAlive is how often an idle event stream gets a comment line.
var KeepAlive = 15 * time.Second

// eventStream serves the audit log as server-sent events from ?since= on,
// then every new event as it is appended, until the client goes away. It
// reads pages from the last Seq it sent, never the whole log; a caller
// holds at most LimitStreams streams at once.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, actor string) {
	since := int64(0)
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("since=%q: want a sequence number ≥ 0", v), "")
			return
		}
		since = n
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, http.StatusInternalServerError, api.CodeInternal, "streaming unsupported", "")
		return
	}
	release, ok := s.streamSlot(w, actor)
	if !ok {
		return
	}
	defer release()
	ctx := r.Context()
	changes := s.reg.EventChanges(ctx)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	keep := time.NewTicker(KeepAlive)
	defer keep.Stop()
	for {
		evs, err := s.reg.Events(ctx, since, 1000)
		if err != nil {
			return
		}
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Action, b); err != nil {
				return
			}
			since = ev.Seq
		}
		flusher.Flush()
		if len(evs) == 1000 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				return
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}
