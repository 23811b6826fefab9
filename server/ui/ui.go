// Package ui is slipway-server's web dashboard at /ui/: server-rendered
// pages (html/template) for the fleet, a node, rollouts, a release and the
// audit log, one small script that refreshes a page's live parts on the
// server's event stream, and a stylesheet (light and dark), all embedded.
// It reads and acts through the registry, with the admin API's callers
// and roles (server/httpapi); it must never hold fleet state or rules of
// its own, nor load anything from another origin.
package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

//go:embed assets templates
var files embed.FS

// fleet is what the dashboard reads and does of the fleet;
// *registry.Registry has it.
type fleet interface {
	Nodes(ctx context.Context) ([]api.Node, error)
	Node(ctx context.Context, name string) (api.Node, error)
	Releases(ctx context.Context) ([]api.Release, error)
	Release(ctx context.Context, id string) (api.Release, error)
	Manifest(ctx context.Context, id string) ([]byte, error)
	Events(ctx context.Context, since int64, limit int) ([]api.Event, error)
	Audit(ctx context.Context, actor, action, target, detail string) error
}

// rollouts is what the dashboard reads and does of rollouts;
// *rollout.Machine has it.
type rollouts interface {
	Rollouts(ctx context.Context) ([]api.Rollout, error)
	Rollout(ctx context.Context, id string) (api.Rollout, error)
	RolloutAction(ctx context.Context, actor, id, action string) (api.Rollout, error)
	RolloutRollback(ctx context.Context, actor, id string) (api.Rollout, error)
	RolloutRetry(ctx context.Context, actor, id, node string) (api.Rollout, error)
	RolloutResumeNow(ctx context.Context, actor, id string) (api.Rollout, error)
}

// authority authenticates callers as the admin API does, audits refusals
// and serves the event stream; *httpapi.Server has it.
type authority interface {
	TokenCaller(sum string) (httpapi.Caller, bool)
	MeshCaller(r *http.Request) (httpapi.Caller, mesh.Decision, bool)
	Refused(r *http.Request, actor, why string)
	OverRefusals(r *http.Request) (time.Duration, bool)
	StreamEvents(w http.ResponseWriter, r *http.Request, actor string)
}

// Shared is what outlives one Handler: the sessions and the audit log's
// tail. The server keeps one for its life and builds a Handler for every
// set of admin tokens (reloads).
type Shared struct {
	sessions *Sessions
	tail     *tail
	key      []byte // signs the CSRF tokens of callers without a session
	pages    map[string]*template.Template
}

// NewShared makes the sessions (logins last ttl) and the audit tail, and
// parses the page templates.
func NewShared(ttl time.Duration) (*Shared, error) {
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("ui: csrf key: %w", err)
	}
	return &Shared{sessions: NewSessions(ttl, time.Now), tail: newTail(tailSize), key: key, pages: pages}, nil
}

// Handler serves the dashboard.
type Handler struct {
	reg  fleet
	ros  rollouts
	auth authority
	sh   *Shared
	mux  *http.ServeMux
	log  zerolog.Logger
}

// New builds the dashboard for reg and its rollouts ros, authenticating
// with auth.
func New(reg fleet, ros rollouts, auth authority, sh *Shared, log zerolog.Logger) *Handler {
	h := &Handler{reg: reg, ros: ros, auth: auth, sh: sh, mux: http.NewServeMux(), log: log.With().Str("component", "ui").Logger()}
	static, _ := fs.Sub(files, "assets") // a directory of the binary
	h.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticFiles(static)))
	h.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/fleet", http.StatusSeeOther)
	})
	h.mux.HandleFunc("GET /ui/login", h.loginForm)
	h.mux.HandleFunc("POST /ui/login", h.login)
	h.mux.HandleFunc("POST /ui/logout", h.post(api.RoleViewer, h.logout))
	h.mux.HandleFunc("GET /ui/fleet", h.get(h.fleetPage))
	h.mux.HandleFunc("GET /ui/nodes/{name}", h.get(h.nodePage))
	h.mux.HandleFunc("GET /ui/rollouts", h.get(h.rolloutsPage))
	h.mux.HandleFunc("GET /ui/rollouts/{id}", h.get(h.rolloutPage))
	h.mux.HandleFunc("GET /ui/rollouts/{id}/confirm/{action}", h.get(h.confirmPage))
	h.mux.HandleFunc("POST /ui/rollouts/{id}/{action}", h.post(api.RoleDeployer, h.rolloutAction))
	h.mux.HandleFunc("GET /ui/releases/{id}", h.get(h.releasePage))
	h.mux.HandleFunc("GET /ui/audit", h.get(h.auditPage))
	h.mux.HandleFunc("GET /ui/events", h.get(h.events))
	h.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.errorPage(w, r, nil, http.StatusNotFound, "no page "+r.Method+" "+r.URL.Path)
	})
	return h
}

// csp allows this origin's script and stylesheet only: no inline script
// or style, no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves every page with the security headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// staticFiles serves the embedded assets; they change only with the binary.
func staticFiles(fsys fs.FS) http.Handler {
	fh := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fh.ServeHTTP(w, r)
	})
}

// status is the HTTP status of a registry error.
func status(err error) int {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, registry.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, registry.ErrBusy):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
