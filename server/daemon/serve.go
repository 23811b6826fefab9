package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/metrics"
	"github.com/slipway-dev/slipway/server/notify"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/ui"
	"github.com/slipway-dev/slipway/shared/window"
)

// Serve runs the server until ctx ends: it reads what the config names
// (readInputs), opens the state (openState), listens, starts the leader's
// work, the background work and the tailnet and gossip, serves until ctx
// ends or a listener fails, and shuts down in order (shutdown).
func Serve(ctx context.Context, c config.Server, log zerolog.Logger, opts Options) error {
	in, err := readInputs(c, log)
	if err != nil {
		return err
	}
	s, err := openState(ctx, c, in, log)
	if err != nil {
		return err
	}
	defer s.close()
	newAPI := s.apiFactory(c, opts, log)
	defer s.startFlusher(ctx, log)()
	fr := newFront(ctx, newAPI(in.tokens), s.m, s.g)
	srv := s.g.server(fr, func(net.Listener) context.Context { return fr.base })
	ln, lns, err := openListeners(c, s.g, in.tls)
	if err != nil {
		return err
	}
	// The leader (etcd: elected; bbolt: this server) runs the rollout
	// engine and the other work that runs once (leader.go).
	s.lead.self = serverName(ln.Addr().String())
	s.lead.el = s.st.elector(c, s.lead.self)
	stopLead := startLeadership(ctx, s.lead, singletons{reg: s.reg, ros: s.ros, targets: in.targets, crash: in.crash, log: log})
	defer stopLead()
	bg, err := startBackground(ctx, c, opts, s, fr, newAPI, in.tls, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer bg.stop()
	nets, err := startNetworks(ctx, c, opts, s, fr, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	if nets.me != nil {
		bg.mesh.Store(nets.me)
	}
	errc := make(chan error, len(lns)+1)
	for _, l := range lns {
		go func() { errc <- srv.Serve(l) }()
	}
	nets.me.serve(errc)
	announceReady(c, opts, in, ln, bg, nets, log)
	serveErr := waitForEnd(ctx, errc, log)
	bg.stopWatchdog() // no ping after STOPPING=1
	bg.notify.send("STOPPING=1")
	shutdown(srv, fr, s, nets, stopLead, log)
	return serveErr
}

// inputs is what Serve reads from the config and the files it names
// before it changes anything on disk.
type inputs struct {
	tokens       []httpapi.AdminToken
	groupWindows map[string]window.Set
	notifyRules  []rollout.NotifyRule
	targets      map[string]notify.Target
	prom         *analysis.Prometheus
	crash        rollout.CrashHook
	tls          *certs
}

func readInputs(c config.Server, log zerolog.Logger) (*inputs, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var in inputs
	var err error
	if in.tokens, err = adminTokens(c.AdminTokens); err != nil {
		return nil, err
	}
	if len(in.tokens) == 0 {
		log.Warn().Msg("no admin tokens configured: the admin API refuses every call (add [[admin_token]] to the config)")
	}
	if in.groupWindows, err = c.GroupWindows(); err != nil {
		return nil, err
	}
	if in.notifyRules, in.targets, err = webhooks(c); err != nil {
		return nil, err
	}
	if in.prom, err = c.Prometheus.Client(); err != nil { // [prometheus]: for analysis gates
		return nil, err
	}
	if in.crash, err = crashHook(os.Getenv(CrashEnv), log); err != nil { // tests only (crash.go)
		return nil, err
	}
	if in.tls, err = startCerts(c, log); err != nil {
		return nil, err
	}
	return &in, nil
}

// The metrics find the analysis counts on the rollout machine by a type
// assertion: this keeps the machine one.
var _ metrics.AnalysisCounter = (*rollout.Machine)(nil)

// state is what the server keeps: the store, blobs, registry, rollout
// machine, metrics, leadership and the request guard.
type state struct {
	st       *serverStore
	blobs    *blobstore.Store
	wake     *wakeups
	reg      *registry.Registry
	ros      *rollout.Machine
	m        *metrics.Server
	lead     *leadership
	g        *guard
	streams  *httpapi.StreamLimit
	dash     *ui.Shared
	unfollow func()
}

func openState(ctx context.Context, c config.Server, in *inputs, log zerolog.Logger) (s *state, err error) {
	if err := os.MkdirAll(c.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s = &state{unfollow: func() {}}
	if s.st, err = openStore(ctx, c, log); err != nil { // [store]: bbolt, or etcd shared with other servers (store.go)
		return nil, err
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.blobs, err = blobstore.Open(filepath.Join(c.StateDir, "blobs")); err != nil {
		return nil, err
	}
	if s.st.etcd != nil { // every server serves the blobs any of them received
		s.blobs.SetMirror(s.st.etcd)
	}
	s.wake = &wakeups{log: log.With().Str("component", "gossip").Logger()}
	s.reg = registry.New(s.st, s.blobs, registry.Config{OfflineAfter: time.Duration(c.OfflineAfter), DriftAfter: time.Duration(c.DriftAfter),
		OnDesired: s.wake.onDesired, Audit: auditConfig(c.Audit)}, log)
	s.ros = rollout.New(s.reg, rollout.Config{GroupWindows: in.groupWindows, Notify: in.notifyRules, Prometheus: in.prom}, log)
	s.ros.Crash = in.crash
	if s.st.etcd != nil { // other servers' writes wake the rollout engine too
		s.unfollow = s.reg.FollowWrites()
	}
	s.m = metrics.New(s.reg)
	s.m.SetRollouts(s.ros) // and its analysis counts: the machine is a metrics.AnalysisCounter
	s.lead = &leadership{m: s.m, log: log.With().Str("component", "leader").Logger()}
	if s.g, err = newGuard(c.Limits, s.m.Limited, log); err != nil {
		return nil, err
	}
	s.m.SetHeld(s.g.hold.Held)
	s.streams = httpapi.NewStreamLimit(c.Audit.MaxStreams)
	if s.dash, err = ui.NewShared(time.Duration(c.UI.SessionTTL)); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *state) close() {
	s.unfollow()
	s.st.Close()
}

// apiFactory returns what builds the HTTP API for a set of admin tokens
// (at start, and again on a reload).
func (s *state) apiFactory(c config.Server, opts Options, log zerolog.Logger) func([]httpapi.AdminToken) http.Handler {
	return func(t []httpapi.AdminToken) http.Handler {
		h := httpapi.New(s.reg, s.ros, s.blobs, t, opts.Spec, log)
		h.LimitAgentWrites(c.AgentWriteLimit, time.Duration(c.AgentWriteWait))
		h.LimitStreams(s.streams)
		h.LimitRefusals(s.g.unauthWait)
		h.ShowLeadership(s.lead.ready)
		if c.UI.Enabled {
			h.Mount(ui.Prefix, ui.New(s.reg, s.ros, h, s.dash, log))
		}
		return h
	}
}

// startFlusher flushes the last-seen times of routine reports every few
// seconds; the returned func stops it after one more flush, before the
// store closes.
func (s *state) startFlusher(ctx context.Context, log zerolog.Logger) (stop func()) {
	done := make(chan struct{})
	fctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		if err := s.reg.RunFlusher(fctx); err != nil {
			log.Error().Err(err).Msg("flushing last-seen times at shutdown")
		}
	}()
	return func() { cancel(); <-done }
}

// background is the work that runs until Serve returns: the metrics
// endpoint, the systemd watchdog and reloads.
type background struct {
	mep          *metrics.Endpoint
	notify       notifier
	mesh         *atomic.Pointer[meshEndpoint] // for reloads of tailscale.roles
	stopWatchdog func()
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

func startBackground(ctx context.Context, c config.Server, opts Options, s *state, fr *front,
	newAPI func([]httpapi.AdminToken) http.Handler, tls *certs, log zerolog.Logger) (*background, error) {
	b := &background{notify: notifier(opts.Notify), mesh: &atomic.Pointer[meshEndpoint]{}, stopWatchdog: func() {}}
	if c.MetricsListen != "" {
		mep, err := metrics.Listen(c.MetricsListen, s.m.Handler(log.With().Str("component", "metrics").Logger()), log)
		if err != nil {
			return nil, err
		}
		b.mep = mep
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	if b.mep != nil {
		b.wg.Go(func() {
			if err := b.mep.Serve(bg); err != nil {
				log.Error().Err(err).Msg("metrics endpoint stopped; the server runs on without it")
			}
		})
	}
	if opts.Watchdog > 0 {
		wctx, cancel := context.WithCancel(bg)
		done := make(chan struct{})
		go func() { defer close(done); watchdog(wctx, opts.Watchdog, s.reg.Ready, b.notify, log) }()
		b.stopWatchdog = sync.OnceFunc(func() { cancel(); <-done })
	}
	if opts.Reload != nil {
		rl := &reloader{running: c, load: opts.Load, level: opts.Level, front: fr, notify: b.notify, mesh: b.mesh,
			certs: tls, log: log.With().Str("component", "reload").Logger(), newAPI: newAPI}
		b.wg.Go(func() {
			for {
				select {
				case <-bg.Done():
					return
				case <-opts.Reload:
					rl.reload()
				}
			}
		})
	}
	return b, nil
}

func (b *background) stop() {
	b.stopWatchdog()
	b.cancel()
	b.wg.Wait()
}

func (b *background) metricsAddr() string {
	if b.mep == nil {
		return ""
	}
	return b.mep.Addr()
}

// networks are the tailnet node ([tailscale]) and the gossip member
// ([gossip]); either may be nil.
type networks struct {
	me *meshEndpoint
	gm *gossipMember
}

func startNetworks(ctx context.Context, c config.Server, opts Options, s *state, fr *front, log zerolog.Logger) (n networks, err error) {
	if c.Tailscale.Enabled { // the API on a tailnet node too
		if n.me, err = startMesh(ctx, c, fr, s.g, log); err != nil {
			return n, err
		}
	}
	if c.Gossip.Enabled { // liveness and wake-ups
		o := gossipOptions{intervals: opts.GossipIntervals}
		gc := c.Gossip
		if n.me != nil {
			o.node = n.me.node
			gc = gossipOnHost(gc, n.me.hostIP)
		}
		if n.gm, err = startGossip(gc, s.reg, o, log); err != nil {
			n.me.shutdown(context.Background(), nil)()
			return n, err // names gossip
		}
		s.wake.set(n.gm.agent)
	}
	return n, nil
}

// announceReady logs that the server is ready, tells the tests' hooks and
// systemd.
func announceReady(c config.Server, opts Options, in *inputs, ln net.Listener, bg *background, nets networks, log zerolog.Logger) {
	log.Info().Str("listen", ln.Addr().String()).Bool("tls", in.tls != nil).Str("agent_socket", c.AgentSocket).Str("metrics_listen", bg.metricsAddr()).
		Str("state_dir", c.StateDir).Int("admin_tokens", len(in.tokens)).Str("version", Version).Msg("slipway-server ready")
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	if opts.MetricsReady != nil && bg.mep != nil {
		opts.MetricsReady(bg.metricsAddr())
	}
	if opts.GossipReady != nil && nets.gm != nil {
		opts.GossipReady(nets.gm.agent.Addr())
	}
	bg.notify.send("READY=1")
}

// waitForEnd waits for ctx to end or a listener to fail (its error).
func waitForEnd(ctx context.Context, errc <-chan error, log zerolog.Logger) error {
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			// A listener failed: shut the rest down as for SIGTERM.
			err = fmt.Errorf("serve: %w", err)
			log.Error().Err(err).Msg("a listener failed")
			return err
		}
	}
	return nil
}

// shutdown closes the listeners, lets requests in flight finish (up to
// ShutdownTimeout) and, meanwhile, ends long-polls and event streams,
// answers held long-polls, leaves gossip and the tailnet and resigns
// leadership.
func shutdown(srv *http.Server, fr *front, s *state, nets networks, stopLead func(), log zerolog.Logger) {
	log.Info().Dur("timeout", ShutdownTimeout).Msg("shutting down: listeners closed, requests in flight finish")
	// Shutdown closes the listeners first, then runs this: long-polls and
	// event streams end, other requests in flight finish.
	srv.RegisterOnShutdown(fr.cancel)
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	// Gossip stops recording and leaves the cluster (over the tailnet
	// node, which closes after it) while requests finish.
	s.wake.set(nil)
	gossipLeft := make(chan struct{})
	go func() { defer close(gossipLeft); nets.gm.shutdown() }()
	meshStopped := nets.me.shutdown(sctx, gossipLeft)
	// Held long-polls are answered (and their connections closed) while
	// the servers stop, once the listeners are closed (Shutdown runs its
	// hooks after closing them): answered before, an agent's next poll
	// could still reach a server on its way out.
	holdStopped := make(chan struct{})
	srv.RegisterOnShutdown(func() { defer close(holdStopped); _ = s.g.hold.Shutdown(sctx) })
	// The leader resigns (another server leads at once) while requests
	// finish.
	leadStopped := make(chan struct{})
	go func() { defer close(leadStopped); stopLead() }()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("requests still in flight after the shutdown timeout; closing their connections")
		_ = srv.Close()
	}
	<-leadStopped
	<-holdStopped
	meshStopped()
	<-gossipLeft
	log.Info().Msg("stopped")
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
