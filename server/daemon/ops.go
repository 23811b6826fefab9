package daemon

// Operations: sd_notify, the watchdog, reloads, metrics and graceful
// shutdown of slipway-server.
//
//   - sd_notify (Options.Notify): READY=1 once the API, the agent socket and
//     the metrics endpoint listen; WATCHDOG=1 every Options.Watchdog/2, but
//     only while the store answers (a wedged store gets the server
//     restarted by systemd); RELOADING=1 … READY=1 around a reload;
//     STOPPING=1 when shutdown begins.
//   - Reload (SIGHUP, Options.Reload): the config is read again (file, then
//     the command line's flags). admin_token, log_level, (while the
//     tailnet node runs) tailscale.roles and (with HTTPS on listen) the
//     running tls_cert_file and tls_key_file apply at once: new requests see
//     the new tokens and roles, requests in flight (long-polls, uploads)
//     and open connections are untouched. Other keys need a
//     restart and are named in the log (never their values). A config that
//     does not load or validate, an admin token file that cannot be read,
//     or a certificate pair that does not load, is logged and the running
//     config kept. Connections opened after a reload get the new
//     certificate; open ones keep theirs.
//   - Metrics (server/metrics) on metrics_listen, with a counter and a
//     histogram of every API request by route pattern and status.
//   - Shutdown (ctx ends, SIGTERM): the listeners close at once (new
//     connections are refused, so /healthz and /readyz are not answered
//     any more: a prober sees the server gone); long-polls for the desired
//     generation and event streams (requests that accept
//     text/event-stream) end at once (agents get "unchanged" and poll
//     again elsewhere or later); every other request in flight
//     finishes with the store still open, for up to ShutdownTimeout, after
//     which connections are closed. Request contexts are not canceled by
//     SIGTERM itself, so an upload or a release being created is not cut
//     short.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/longpoll"
	"github.com/slipway-dev/slipway/server/metrics"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/ui"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/sdnotify"
	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// ShutdownTimeout bounds how long requests in flight may finish after
// SIGTERM.
const ShutdownTimeout = 10 * time.Second

// LogLevel is a logger's minimum level, changeable while the server runs
// (a reload). It is attached as a zerolog.Sampler, the hook zerolog asks
// before it builds an event, so events below the level cost nothing.
type LogLevel struct{ v atomic.Int32 }

// Sample reports whether an event at lvl is logged.
func (l *LogLevel) Sample(lvl zerolog.Level) bool { return lvl >= zerolog.Level(l.v.Load()) }

// Set changes the level.
func (l *LogLevel) Set(lvl zerolog.Level) { l.v.Store(int32(lvl)) }

// LevelLogger is Logger with its level in lv, to be changed by reloads.
func LevelLogger(w io.Writer, lv *LogLevel, format string) zerolog.Logger {
	console := format == "console"
	if f, ok := w.(*os.File); ok && format == "auto" && isatty.IsTerminal(f.Fd()) {
		console = true
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(zerolog.TraceLevel).Sample(lv).With().Timestamp().Str("daemon", "slipway-server").Logger()
}

// front is the HTTP handler in front of the API: it swaps the API handler
// on reloads, records request metrics, and ends long-lived requests when
// shutdown begins.
type front struct {
	api    atomic.Pointer[http.Handler]
	m      *metrics.Server
	routes *http.ServeMux // the API's route patterns, to label requests
	// base is every request's context: not canceled by SIGTERM. drain is
	// canceled when shutdown begins; long-polls and event streams end then.
	base   context.Context
	drain  context.Context
	cancel context.CancelFunc
	// guard applies [limits] (nil: none).
	guard *guard
}

func newFront(ctx context.Context, h http.Handler, m *metrics.Server, g *guard) *front {
	f := &front{m: m, routes: http.NewServeMux(), base: context.WithoutCancel(ctx), guard: g}
	f.drain, f.cancel = context.WithCancel(f.base)
	for _, r := range api.Routes {
		f.routes.Handle(r, http.NotFoundHandler()) // only the pattern is used
	}
	f.routes.Handle(ui.Prefix, http.NotFoundHandler()) // the dashboard's pages: one label
	f.swap(h)
	return f
}

func (f *front) swap(h http.Handler) { f.api.Store(&h) }

// longLived reports whether a request may wait for long: the desired
// long-poll, or an event stream (Server-Sent Events).
func longLived(route string, r *http.Request) bool {
	return route == api.RouteDesired || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// routeOf is the API route pattern a request is labelled with.
func (f *front) routeOf(r *http.Request) string {
	if route, _, ok := api.MatchAgentRoute(r.Method, r.URL.EscapedPath()); ok {
		return route
	}
	if _, route := f.routes.Handler(r); route != "" {
		return route
	}
	return metrics.RouteUnmatched
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := f.routeOf(r)
	f.m.InFlight(1)
	cw := &codeWriter{ResponseWriter: w}
	start := time.Now()
	done := func(status int) {
		f.m.ObserveRequest(route, status, time.Since(start))
		f.m.InFlight(-1)
	}
	long := longLived(route, r)
	var tr *longpoll.Tracker // a held long-poll is counted when it is answered
	if long {
		ctx, cancel := context.WithCancel(r.Context())
		stop := context.AfterFunc(f.drain, cancel)
		defer func() { stop(); cancel() }()
		ctx, tr = longpoll.Track(ctx)
		tr.OnAnswer(done)
		r = r.WithContext(ctx)
	}
	defer func() {
		if !tr.Held() {
			done(cw.code())
		}
	}()
	if f.guard != nil && f.guard.refuseConn(cw, r) {
		return
	}
	if f.guard == nil {
		(*f.api.Load()).ServeHTTP(cw, r)
		return
	}
	r = f.guard.deadlines(w, r, route, long)
	if route == api.RouteEnroll && f.guard.limitEnroll(cw, r) {
		return
	}
	(*f.api.Load()).ServeHTTP(cw, r)
	f.guard.spend(r, route, cw.code())
}

// codeWriter records the status code; it keeps Flush for event streams.
type codeWriter struct {
	http.ResponseWriter
	status int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *codeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *codeWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// notifier sends sd_notify states through Options.Notify.
type notifier func(state string)

func (n notifier) send(state string) {
	if n != nil {
		n(state)
	}
}

// watchdog pings every period/2 while ready answers within that time.
func watchdog(ctx context.Context, period time.Duration, ready func(context.Context) error, notify notifier, log zerolog.Logger) {
	t := time.NewTicker(period / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, period/2)
		err := ready(rctx)
		cancel()
		if errors.Is(err, store.ErrUnavailable) {
			// etcd is away, not this process: it answers 503 meanwhile
			// (and stops by itself if the outage outlasts its lock).
			log.Warn().Err(err).Msg("the store is unavailable; the server answers 503 until it is back")
			err = nil
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Error().Err(err).Dur("watchdog", period).Msg("the store does not answer; watchdog ping withheld (systemd restarts the server if this lasts)")
			}
			continue
		}
		notify.send("WATCHDOG=1")
	}
}

// reloader applies reloads to a running server.
type reloader struct {
	running config.Server
	load    func() (config.Server, error)
	level   *LogLevel
	front   *front
	newAPI  func([]httpapi.AdminToken) http.Handler
	mesh    *atomic.Pointer[meshEndpoint] // nil or empty: no tailnet node
	certs   *certs                        // nil: no TLS on listen
	notify  notifier
	log     zerolog.Logger
}

// reload re-reads the config and applies admin_token, log_level and (with
// a tailnet node running) tailscale.roles.
func (r *reloader) reload() {
	r.notify.send(sdnotify.Reloading())
	defer r.notify.send("READY=1")
	next, err := r.prepare()
	if err != nil {
		r.log.Error().Err(err).Msg("reload: config rejected; keeping the running config")
		return
	}
	r.apply(next)
}

// reloaded is a config read again and checked, with what applying it
// needs.
type reloaded struct {
	c      config.Server
	level  zerolog.Level
	tokens []httpapi.AdminToken
	mesh   *meshEndpoint    // nil: no tailnet node running
	pair   *tls.Certificate // nil: no TLS on listen
}

// prepare reads the config and checks everything the reload changes
// before anything changes: all of the reload or none.
func (r *reloader) prepare() (reloaded, error) {
	var next reloaded
	if r.load == nil {
		return next, fmt.Errorf("no config loader")
	}
	c, err := r.load()
	if err != nil {
		return next, err
	}
	if err := c.Validate(); err != nil {
		return next, err
	}
	next.c = c
	if next.level, err = zerolog.ParseLevel(c.LogLevel); err != nil {
		return next, err
	}
	if next.tokens, err = adminTokens(c.AdminTokens); err != nil {
		return next, err
	}
	if r.mesh != nil {
		next.mesh = r.mesh.Load()
	}
	if next.mesh != nil && c.Tailscale.Enabled {
		if _, err := mesh.NewAuthorizer(next.mesh.agentTag, c.Tailscale.Roles); err != nil {
			return next, fmt.Errorf("tailscale.roles: %w", err)
		}
	}
	if r.certs != nil {
		// The running tls_cert_file and tls_key_file, read again (a
		// renewed certificate); other paths need a restart.
		if next.pair, err = r.certs.read(); err != nil {
			return next, err
		}
	}
	return next, nil
}

// apply puts a prepared config in force: the admin tokens, the TLS
// certificate, the tailscale roles and the log level.
func (r *reloader) apply(next reloaded) {
	c := next.c
	r.front.swap(r.newAPI(next.tokens))
	if next.pair != nil {
		r.certs.cur.Store(next.pair)
		subject, notAfter, expired := validity(next.pair.Leaf, time.Now())
		r.log.Info().Str("subject", subject).Time("not_after", notAfter).Bool("expired", expired).Msg("reload: TLS certificate loaded")
	}
	if next.mesh != nil && c.Tailscale.Enabled {
		if err := next.mesh.setRoles(c.Tailscale.Roles); err != nil { // checked in prepare
			r.log.Error().Err(err).Msg("reload: tailscale.roles")
		} else {
			r.running.Tailscale.Roles = c.Tailscale.Roles
		}
	}
	old := r.running.LogLevel
	r.running.AdminTokens, r.running.LogLevel = c.AdminTokens, c.LogLevel
	if keys := tomlconfig.ChangedKeys(r.running, c); len(keys) > 0 {
		r.log.Warn().Strs("keys", keys).Msg("reload: these keys changed but take effect only when the server restarts")
	}
	if len(next.tokens) == 0 {
		r.log.Warn().Msg("no admin tokens configured: the admin API refuses every call (add [[admin_token]] to the config)")
	}
	// Logged before the new level applies, so that turning logs down
	// still shows the reload.
	r.log.Info().Int("admin_tokens", len(next.tokens)).Int("tailscale_roles", len(r.running.Tailscale.Roles)).Str("log_level", c.LogLevel).Str("previous_log_level", old).Msg("config reloaded")
	if r.level != nil {
		r.level.Set(next.level)
	} else if c.LogLevel != old {
		r.log.Warn().Msg("reload: this logger's level cannot change; log_level needs a restart")
	}
}
