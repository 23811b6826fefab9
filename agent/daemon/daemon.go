// Package daemon is the agent's main loop, `slipway-agent run`: it makes a
// node part of a fleet. It enrols with slipway-server, fetches the node's
// desired generation (long-polls, or with gossip polls woken by serf
// events), switches to it through agent/activate with the server's confirm
// as the last step, and reports the node's state. Run lists the steps;
// loop, handle, enroll, reportLoop and gossipLoop hold the detail. With
// several server addresses it fails over between them (failover.go).
//
// The daemon never logs a token or an auth key, never switches without a
// freshly fetched desired generation, and never starts a second switch
// while one runs (the loop is sequential; activate's lock guards against
// other processes).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/config"
	"github.com/slipway-dev/slipway/agent/nixos"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/ctxsleep"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/gossip"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/routinereport"
	"github.com/slipway-dev/slipway/shared/seal"
)

// ErrEnrollRefused is returned by Run when the server refuses the join
// token (wrong, expired, already used) or the enrolment request.
var ErrEnrollRefused = errors.New("the server refused to enrol this node")

// ErrTailnetEnrollRefused is returned by Run (it wraps ErrEnrollRefused)
// when the server refuses to enrol the node by its tailnet identity.
var ErrTailnetEnrollRefused = fmt.Errorf("%w by its tailnet identity", ErrEnrollRefused)

// Outcomes the daemon reports besides activate's (switched, unchanged,
// reverted, revert-failed).
const (
	OutcomeQuarantined   = "quarantined"    // desired generation failed here before; not retried
	OutcomeRejected      = "rejected"       // refused before any change on the node
	OutcomeRetrying      = "retrying"       // failed before any change for a passing reason; tried again
	OutcomeRecoverFailed = "recover-failed" // the start-up recover failed
	OutcomeInterrupted   = "interrupted"    // the agent stopped while staging; the node was not changed
)

// clientOptions are the API client's options every connection shares;
// failover logs the client's moves from one server to the next.
func (c Config) clientOptions(failover func(api.Failover)) []api.ClientOption {
	opts := []api.ClientOption{api.WithDialTimeout(c.DialTimeout), api.WithFailover(failover)}
	if c.CAFile != "" {
		opts = append(opts, api.WithCAFile(c.CAFile))
	}
	return opts
}

// Config of the daemon. Zero intervals take the defaults named.
type Config struct {
	// Servers are the server's addresses, http(s)://host:port or
	// unix:///path.sock, tried in order (see the package doc on failover).
	Servers       []string
	CAFile        string            // CA certificates for an https server ("" = the system's roots)
	Name          string            // node name
	Labels        map[string]string // sent at enrolment
	JoinTokenFile string            // one-time join token, read when there is no node token
	TokenFile     string            // node token, written 0600 at enrolment
	AgentVersion  string
	Layout        stage.Layout // to read the current generation's manifest
	IdentityFile  string       // the node's age identity, created on first start; "" = none

	PollWait        time.Duration // long-poll wait (30s)
	ReportInterval  time.Duration // longest time between reports (60s)
	ConfirmInterval time.Duration // between two confirm requests (1s)
	// OverloadConfirmTimeout bounds a confirm while the server answers
	// overloaded (429, 5xx): config.DefaultOverloadConfirmTimeout. It never
	// shortens the manifest's confirm_timeout.
	OverloadConfirmTimeout time.Duration
	BackoffMin             time.Duration // first delay after a failed request (1s)
	BackoffMax             time.Duration // longest delay (30s)
	RequestTimeout         time.Duration // one request other than the long-poll; a stalled blob download (30s)
	DialTimeout            time.Duration // one connection attempt, with several servers (api.DefaultDialTimeout)
	ResyncInterval         time.Duration // poll without If-None-Match at least this often (5m)
	MinPollInterval        time.Duration // floor between polls that bring no news (1s)
	FinalReportTimeout     time.Duration // bound on the report sent while stopping (5s)
	Watchdog               time.Duration // sd_notify watchdog period (0: none)

	// Notify, when set, receives sd_notify states ("READY=1", …).
	Notify func(state string)

	// Dial, when set, opens the connections to the server when the daemon
	// is not on its own tailnet node (tests and benchmarks watch the wire
	// with it). Nil: the host's network.
	Dial api.DialFunc

	// OnOutcome, when set, receives every outcome Recover and Apply return
	// (for metrics); interrupted says the daemon was stopping by then.
	OnOutcome func(o activate.Outcome, interrupted bool)

	// Tailscale, when set, is the tsnet node Run brings up (after
	// READY=1) and sends every request to the server through; the node
	// then enrols without a join token. Its Log is set by Run.
	Tailscale *mesh.Config
	// TailscaleHost, when set, is the host's own tailscaled, used instead
	// of a tsnet node ([tailscale] mode "host"): Run waits until it is on
	// the tailnet (after READY=1), refuses to go on (ErrTailnetIdentity)
	// when it does not call the node Name or lacks one of its Tags, and
	// sends every request through its dialer. The node then enrols
	// without a join token.
	TailscaleHost *HostTailnet
	// TailnetWaitLog is the time between two "still waiting" logs while
	// the tailnet node comes up (15s).
	TailnetWaitLog time.Duration

	// newHost opens the host's tailscaled (tests: a fake); nil =
	// mesh.NewHost.
	newHost func(mesh.HostConfig) (hostTailnet, error)

	// Gossip, when set, makes the daemon a serf member and changes its
	// fetch mode (see the package doc).
	Gossip *Gossip

	// newMember creates the serf member (tests: a fake); nil = gossip.Create.
	newMember func(gossip.Config) (member, error)
}

// Gossip configures the daemon's serf member and the fetch mode that goes
// with it.
type Gossip struct {
	Bind         string           // "ip:port"; with Tailscale only the port counts
	Advertise    string           // "ip:port" others reach this member at; "" = the bound address
	KeyringFile  string           // base64 keys, one per line, the first encrypts; "" = no encryption
	Join         []string         // "host:port" of members to join
	PollInterval time.Duration    // between two polls, jittered ±10% (60s)
	WakeDelay    time.Duration    // a wake-up polls this much later, absorbing the rest of a burst (500ms)
	Intervals    gossip.Intervals // serf's timers; zero = serf's LAN defaults
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PollWait, api.DefaultPollWait)
	def(&c.ReportInterval, time.Minute)
	def(&c.ConfirmInterval, time.Second)
	def(&c.OverloadConfirmTimeout, config.DefaultOverloadConfirmTimeout)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.RequestTimeout, 30*time.Second)
	def(&c.ResyncInterval, 5*time.Minute)
	def(&c.MinPollInterval, time.Second)
	def(&c.FinalReportTimeout, 5*time.Second)
	def(&c.TailnetWaitLog, 15*time.Second)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.Gossip != nil {
		g := *c.Gossip
		def(&g.PollInterval, time.Minute)
		def(&g.WakeDelay, 500*time.Millisecond)
		c.Gossip = &g
	}
}

// switcher is what the daemon needs of the switch; *activate.Switcher has it.
type switcher interface {
	Recover(ctx context.Context) (activate.Outcome, error)
	Apply(ctx context.Context, m *generation.Manifest, opts activate.ApplyOptions) (activate.Outcome, error)
}

// unitStatus reads a unit's live state; *systemd.Conn has it.
type unitStatus interface {
	Status(ctx context.Context, unit string) (systemd.Status, error)
}

// status is what the daemon itself knows about the node, reported along
// with what the state database says.
type status struct {
	State   string // api.AgentIdle, AgentSwitching, AgentFailed
	Target  string // ID being switched to (or that failed)
	Outcome string // "" = the last result in the state database
	Reason  string
}

type rejection struct {
	retry  int
	reason string
}

// Daemon is the agent's main loop.
type Daemon struct {
	cfg    Config
	sw     switcher
	db     *state.DB
	sd     unitStatus
	stager *stage.Stager // reads manifests only
	client *api.Client
	log    zerolog.Logger // component=daemon, node
	// base is log without its component, and root the logger New was
	// given: the parents of the loggers of the daemon's other parts, which
	// set their own component (and shared/gossip its node). zerolog
	// appends fields, so a key set twice would be repeated on every line.
	base zerolog.Logger // node
	root zerolog.Logger
	now  func() time.Time

	mu   sync.Mutex
	st   status
	seq  uint64 // bumped on every change of st
	sent uint64 // seq of the last report the server accepted
	// skip decides which timed reports ride on the long-poll instead
	// (shared/routinereport).
	skip routinereport.Skipper
	kick chan struct{}
	// sending holds a token while a report is being posted (the confirm's
	// report waits for it: see carry).
	sending chan struct{}
	// flushed are closed once a report built after they were added has
	// been sent (or failed): see flush.
	flushed []chan struct{}

	recipient string     // the node's age recipient, sent at enrolment
	hostIP    netip.Addr // the host tailscaled's IPv4 (mode "host"), set before enrolment

	// Used by the loop goroutine only.
	rejected   map[string]rejection // by desired ID
	applyRetry backoff

	// Gossip (see gossip.go).
	wake       chan struct{} // a desired-changed event concerning this node arrived
	retags     chan struct{} // the member's tags may be stale (tagLoop updates them)
	gmu        sync.Mutex
	wakes      int    // events not yet served by a poll
	member     member // nil until started
	taggedGen  string // the generation the member's tags carry
	taggedOnce bool
}

// New returns a daemon for node cfg.Name. sw switches (an *activate.Switcher),
// db is the agent's state, sd reads unit states for reports (may be nil).
func New(cfg Config, sw switcher, db *state.DB, sd unitStatus, log zerolog.Logger) (*Daemon, error) {
	cfg.defaults()
	if cfg.Name == "" {
		return nil, errors.New("daemon: no node name")
	}
	if cfg.TokenFile == "" {
		return nil, errors.New("daemon: no token file")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("daemon: no server address")
	}
	if cfg.Tailscale != nil && cfg.TailscaleHost != nil {
		return nil, errors.New("daemon: a tsnet node and the host's tailscaled: choose one")
	}
	if cfg.Tailscale != nil || cfg.TailscaleHost != nil {
		// Run builds the tailnet client once the node is up; refuse an
		// address it cannot use (unix://) now.
		if _, err := api.NewClientServers(cfg.Servers, "", api.WithDialer(new(net.Dialer).DialContext)); err != nil {
			return nil, fmt.Errorf("daemon: tailnet: %w", err)
		}
	}
	if cfg.newMember == nil {
		cfg.newMember = newGossipMember
	}
	if cfg.newHost == nil {
		cfg.newHost = newHostTailnet
	}
	d := &Daemon{
		cfg:      cfg,
		sw:       sw,
		db:       db,
		sd:       sd,
		stager:   &stage.Stager{Layout: cfg.Layout, Log: zerolog.Nop()},
		root:     log,
		base:     log.With().Str("node", cfg.Name).Logger(),
		log:      log.With().Str("node", cfg.Name).Str("component", "daemon").Logger(),
		now:      time.Now,
		st:       status{State: api.AgentIdle},
		seq:      1,
		kick:     make(chan struct{}, 1),
		sending:  make(chan struct{}, 1),
		rejected: map[string]rejection{},
		wake:     make(chan struct{}, 1),
		retags:   make(chan struct{}, 1),
	}
	d.applyRetry = d.backoff(cfg.ResyncInterval)
	opts := cfg.clientOptions(d.logFailover)
	if cfg.Dial != nil {
		opts = append(opts, api.WithDialer(cfg.Dial))
	}
	c, err := api.NewClientServers(cfg.Servers, "", opts...)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.client = c
	return d, nil
}

// onTailnet reports whether the daemon talks to the server over the
// tailnet (its own tsnet node or the host's tailscaled), where the server
// knows it by WhoIs.
func (d *Daemon) onTailnet() bool { return d.cfg.Tailscale != nil || d.cfg.TailscaleHost != nil }

// Run runs the daemon until ctx ends (nil) or enrolment is refused. Its
// steps: recover, READY=1, the node's identity, the tailnet, enrolment,
// then the loop beside the report and gossip goroutines (serve); each step
// owns its cleanup. When ctx ends (SIGTERM) an idle daemon returns nil at
// once; a switch in progress finishes its revert first (activate does
// that), then the final state is reported (bounded by
// Config.FinalReportTimeout), the serf member leaves the cluster, the tsnet
// node is closed (last: the report and the leave may go over it) and Run
// returns nil.
//
// Config.Notify, when set, receives sd_notify states: READY=1 after
// recover (the server, and the tailnet's control server, may be down for
// long: readiness waits for neither), WATCHDOG=1 every Config.Watchdog/2
// from the very start (recover, the tailnet and enrolment may outlast the
// watchdog period) until Run returns, STOPPING=1 at the end.
func (d *Daemon) Run(ctx context.Context) error {
	d.logStart()
	stopWatchdog := d.startWatchdog(ctx)
	defer stopWatchdog()
	if !d.recoverAtStart(ctx) {
		return nil
	}
	d.notify("READY=1")
	defer func() {
		stopWatchdog() // no ping after STOPPING=1
		d.notify("STOPPING=1")
	}()
	if err := d.loadIdentity(); err != nil {
		return err
	}
	node, err := d.joinTailnet(ctx)
	if node != nil {
		defer d.closeNode(node) // last, after the final report and the gossip leave
	}
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	token, err := d.enroll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	d.client = d.client.WithToken(token)
	d.serve(ctx, node)
	d.log.Info().Msg("stopped")
	return nil
}

// errStopped: ctx ended during a start-up step; Run returns nil.
var errStopped = errors.New("stopped while starting")

func (d *Daemon) logStart() {
	ev := d.log.Info().Strs("servers", d.client.Servers()).Str("agent_version", d.cfg.AgentVersion).
		Dur("report_interval", d.cfg.ReportInterval).Bool("tailscale", d.cfg.Tailscale != nil).Bool("tailscale_host", d.cfg.TailscaleHost != nil).Bool("gossip", d.cfg.Gossip != nil)
	if g := d.cfg.Gossip; g != nil {
		ev = ev.Dur("poll_interval", g.PollInterval)
	} else {
		ev = ev.Dur("poll_wait", d.cfg.PollWait)
	}
	ev.Msg("starting")
}

// startWatchdog pings the watchdog (with Config.Watchdog and Notify set)
// from the start, not from READY: recover and enrolment may take longer
// than the watchdog period. It pings on through a revert after SIGTERM,
// until stop runs (stop may run twice).
func (d *Daemon) startWatchdog(ctx context.Context) (stop func()) {
	if d.cfg.Watchdog <= 0 || d.cfg.Notify == nil {
		return func() {}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); d.watchdog(wctx) }()
	return func() { cancel(); <-done }
}

// recoverAtStart runs Recover, which reverts a switch a crash interrupted
// and starts the units of the current generation. A failing recover is
// logged and reported (state failed, outcome "recover-failed") but does
// not stop the daemon: the server may have the fix. It reports false when
// ctx ended meanwhile.
func (d *Daemon) recoverAtStart(ctx context.Context) bool {
	o, err := d.sw.Recover(ctx)
	d.observe(o, ctx.Err() != nil)
	switch {
	case err != nil && ctx.Err() != nil:
		return false
	case err != nil:
		d.log.Error().Err(err).Msg("recover failed; running on, the server may send a fix")
		d.setStatus(status{State: api.AgentFailed, Outcome: OutcomeRecoverFailed, Reason: err.Error()})
	case o.Outcome != "nothing-to-recover" || len(o.Started) > 0:
		d.log.Warn().Str("outcome", o.Outcome).Int("generation", o.To).Strs("started", o.Started).Str("reason", o.Reason).Msg("recovered at start")
	}
	return true
}

// loadIdentity loads the node's age identity from Config.IdentityFile,
// creating it (0600) on the first start; its recipient is sent at
// enrolment so secrets can be sealed to the node. A file that is there but
// unusable is an error naming it (replacing it would lock the node out of
// its secrets).
func (d *Daemon) loadIdentity() error {
	if d.cfg.IdentityFile == "" {
		return nil
	}
	id, created, err := seal.LoadOrCreateIdentity(d.cfg.IdentityFile)
	if err != nil {
		return fmt.Errorf("node identity: %w (move the file away to create a new identity; secrets sealed to the old one must then be sealed again)", err)
	}
	d.recipient = id.Recipient().String()
	ev := d.log.Debug()
	if created {
		ev = d.log.Info()
	}
	ev.Str("identity_file", d.cfg.IdentityFile).Str("age_recipient", d.recipient).Bool("created", created).Msg("node identity")
	return nil
}

// joinTailnet brings up the tailnet (after READY=1: the control server,
// or the host's tailscaled, may be out of reach for long; the wait is
// bounded only by ctx) and points the client at it, so that every request
// to the server (polls, reports, confirms, blobs) goes over it:
//   - Config.Tailscale: the node's own tsnet node (upTailnet), returned
//     for gossip and to be closed. A node that cannot start (an unreadable
//     auth key file, a key the control refuses) is an error.
//   - Config.TailscaleHost: the host's own tailscaled (upHost, through its
//     LocalAPI socket). It is an error wrapping ErrTailnetIdentity, before
//     anything is sent to the server, when its tailnet name is not
//     Config.Name, it lacks one of the required tags, or it runs in
//     userspace networking without a proxy; requests go through its
//     dialer (its tailnet interface, or its SOCKS5 proxy), tailnet names
//     resolved from its network map.
//
// Without either it does nothing. It returns errStopped when ctx ended
// while waiting.
func (d *Daemon) joinTailnet(ctx context.Context) (*mesh.Node, error) {
	var dial api.DialFunc
	var node *mesh.Node
	switch {
	case d.cfg.Tailscale != nil:
		n, err := d.upTailnet(ctx)
		if err != nil {
			return nil, stoppedOr(ctx, err)
		}
		node, dial = n, n.DialContext
	case d.cfg.TailscaleHost != nil:
		h, self, err := d.upHost(ctx)
		if err != nil {
			return nil, stoppedOr(ctx, err)
		}
		d.hostIP = hostIPv4(self.IPs)
		dial = h.DialContext
	default:
		return nil, nil
	}
	c, err := api.NewClientServers(d.cfg.Servers, "", append(d.cfg.clientOptions(d.logFailover), api.WithDialer(dial))...)
	if err != nil {
		return node, fmt.Errorf("tailnet: %w", err)
	}
	d.client = c
	return node, nil
}

// stoppedOr is errStopped when ctx ended, else err.
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errStopped
	}
	return err
}

func (d *Daemon) closeNode(node *mesh.Node) {
	if err := node.Close(); err != nil {
		d.log.Warn().Err(err).Msg("closing the tailnet node")
	}
}

// serve runs the loop, with the report goroutine and (Config.Gossip) the
// gossip goroutine beside it, until ctx ends; then it reports the final
// state and leaves the gossip cluster.
func (d *Daemon) serve(ctx context.Context, node *mesh.Node) {
	var wg sync.WaitGroup
	bg, stop := context.WithCancel(ctx)
	wg.Go(func() { d.reportLoop(bg) })
	if d.cfg.Gossip != nil {
		var tn tailnet
		if node != nil {
			tn = node
		}
		wg.Go(func() { d.gossipLoop(bg, tn) })
	}
	d.loop(ctx)
	stop()
	wg.Wait()
	d.finalReport(ctx)
	d.leaveGossip()
}

// loop polls the desired generation and acts on it (handle) until ctx
// ends.
//
// Each fetch sends If-None-Match with the ETag of the last desired state
// seen (api.Desired.ETag: the ID, plus the retry counter once an operator
// retried, so a retry wakes the long-poll). Without gossip each fetch is a
// long-poll of Config.PollWait. With Config.Gossip each fetch answers at
// once (wait 0: no request is held open on the server) and the next one
// follows after Gossip.PollInterval, jittered ±10%, or sooner when a
// desired-changed event that concerns this node (names it, or names no
// node) arrives: the fetch then starts Gossip.WakeDelay later, and every
// event that arrived until it starts is served by it (a burst is one
// fetch; events during a fetch or a switch cause one more fetch after it).
// Events for other nodes are ignored. No desired generation: report idle.
//
// A switch only starts right after a successful fetch, i.e. with the
// server reachable. While the server is unreachable the node keeps running
// its last good generation; the loop logs, backs off (Config.BackoffMin
// doubling to Config.BackoffMax, jittered) and converges once the server is
// back. A node token the server rejects (HTTP 401/403) is logged as an
// error with what to do (an admin runs `slipway node reset NAME` and
// `slipway token create --node NAME`; remove the token file, provide that
// join token); over the tailnet a 401/403 means the server does not accept
// the node's tailnet identity, and the log says what it checks.
//
// Every Config.ResyncInterval the loop polls without If-None-Match and
// acts on the answer as if it were new (idempotent: nothing happens unless
// something was missed), so a lost wake-up (or a server whose ETag ignores
// Retry) delays a change by ResyncInterval at most. Polls that bring no
// news are spaced by at least Config.MinPollInterval in case a server
// answers them at once (with gossip: by the poll interval, or WakeDelay
// after a wake-up).
func (d *Daemon) loop(ctx context.Context) {
	bo := d.backoff(d.cfg.BackoffMax)
	have := ""
	var lastFull time.Time // last answer that was not "unchanged"
	for ctx.Err() == nil {
		ask := have
		if ask != "" && d.now().Sub(lastFull) >= d.cfg.ResyncInterval {
			ask = "" // resync: see the desired state even if a wake-up was lost
		}
		start := d.now()
		des, has, err := d.poll(ctx, ask)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			delay := bo.next()
			ev := d.log.Warn()
			switch {
			case (errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden)) && d.onTailnet():
				ev = d.log.Error().Str("hint", fmt.Sprintf("the server refuses this node's tailnet identity: its tailnet host name must be %q and it must carry the server's agent tag (tailscale.tags)", d.cfg.Name))
			case errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden):
				ev = d.log.Error().Str("token_file", d.cfg.TokenFile).
					Str("hint", "the server rejects this node's token; to enrol again, an admin runs `slipway node reset NAME` and `slipway token create --node NAME`; remove the token file and provide that join token")
			}
			ev.Err(err).Dur("retry_in", delay).Msg("cannot get the desired generation; keeping the current generation")
			sleep(ctx, delay)
			continue
		}
		if bo.failures > 0 {
			d.log.Info().Int("failed_attempts", bo.failures).Msg("server reachable again")
		}
		bo.reset()
		switch {
		case des == nil && !has: // unchanged
			d.idle(ctx, start)
		case des == nil: // no desired generation
			if have != "" || d.status().State != api.AgentIdle {
				d.log.Info().Msg("no desired generation for this node")
			}
			lastFull, have = d.now(), ""
			d.setIdle()
			d.idle(ctx, start)
		default:
			news := des.ETag() != have
			have = des.ETag()
			again := d.handle(ctx, des)
			lastFull = d.now() // a switch may take longer than ResyncInterval
			switch {
			case again && ctx.Err() == nil:
				have = "" // fetch it again (and so check the server) before the next try
				sleep(ctx, d.applyRetry.next())
			case !news:
				d.idle(ctx, start) // a resync, or a server answering the same state at once
			}
		}
	}
}

// poll long-polls the desired generation once; with gossip it asks
// without waiting, and the wake-ups it serves are taken.
func (d *Daemon) poll(ctx context.Context, have string) (*api.Desired, bool, error) {
	wait := d.cfg.PollWait
	if d.cfg.Gossip != nil {
		wait = 0
		if n := d.takeWakes(); n > 0 {
			d.log.Debug().Int("events", n).Msg("desired-changed: polling now")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, wait+d.cfg.RequestTimeout)
	defer cancel()
	sent := d.skip.Carry(d.now())
	var hdr http.Header
	if sent != "" {
		hdr = http.Header{routinereport.RequestHeader: {sent}}
	}
	des, changed, ans, err := d.client.DesiredWith(ctx, d.cfg.Name, have, wait, hdr)
	if err == nil && d.skip.Answer(sent, ans.Get(routinereport.ResponseHeader)) {
		d.log.Debug().Msg("the server holds another status report: posting ours")
		d.kickReport()
	}
	return des, changed, err
}

// idle waits before the next poll when the last one brought no news: with
// gossip until the poll interval passes or an event wakes the daemon, else
// (long-polls) at least MinPollInterval after the last poll started.
func (d *Daemon) idle(ctx context.Context, start time.Time) {
	if d.cfg.Gossip != nil {
		d.waitWake(ctx)
		return
	}
	if rest := d.cfg.MinPollInterval - d.now().Sub(start); rest > 0 {
		sleep(ctx, rest)
	}
}

// handle acts on a desired generation. It reports whether to try again
// after a backoff (a passing failure before any change on the node).
//
// A desired generation that is current (and last good) is idle. One held
// back by gate is reported failed. Anything else: record Retry for the ID
// in the state database (before the switch, so a restart never retries a
// second time), report switching, and Apply it with the server as blob
// source (serverBlobs) and a confirm that first reports, then POSTs until
// the server confirms (confirm). activate bounds the confirm by the
// manifest's confirm_timeout and reverts without it: losing the server
// after the switch reverts the node ("magic rollback"). Then report idle
// (switched) or failed (reverted, with the reason); see settle.
//
// A SIGTERM during a switch, after the flip, reverts and quarantines the
// generation (activate's rule: a stop mid-switch is a failure); an
// operator retry brings it back. A retry that did not get as far as
// lifting the quarantine (switch lock held, agent stopped) does not use up
// the operator's retry (keepRetry).
func (d *Daemon) handle(ctx context.Context, des *api.Desired) (again bool) {
	log := d.log.With().Str("id", des.ID).Str("release", des.Release).Int("retry", des.Retry).Logger()
	snap, err := d.db.Snapshot()
	if err != nil {
		log.Error().Err(err).Msg("cannot read the agent state")
		d.setStatus(status{State: api.AgentIdle, Target: des.ID, Outcome: OutcomeRetrying, Reason: err.Error()})
		return true
	}
	if cur, ok := snap.Settled(des.ID); ok {
		if d.status().Target != "" || d.status().State != api.AgentIdle {
			log.Info().Int("generation", cur.Number).Msg("desired generation is current; nothing to do")
		}
		d.applyRetry.reset()
		d.setIdle()
		return false
	}
	seen, retry, done, again := d.gate(log, snap, des)
	if done {
		return again
	}
	m, err := parseDesired(des)
	if err != nil {
		return d.reject(log, des, err)
	}
	if err := d.putRetry(des); err != nil {
		log.Error().Err(err).Msg("cannot record the retry number")
		d.setStatus(status{State: api.AgentIdle, Target: des.ID, Outcome: OutcomeRetrying, Reason: err.Error()})
		return true
	}
	log.Info().Bool("retry_quarantined", retry).Msg("switching to the desired generation")
	d.setStatus(d.switchingTo(des.ID))
	o, err := d.sw.Apply(ctx, m, activate.ApplyOptions{
		Source:           "server release " + des.Release,
		Blobs:            &serverBlobs{d: d},
		RetryQuarantined: retry,
		Confirm: func(wctx context.Context, number int, id string) error {
			return d.confirm(ctx, wctx, number, id)
		},
	})
	d.observe(o, ctx.Err() != nil)
	d.retag() // the current generation may have changed; never waits on gossip
	if retry && err != nil && !errors.Is(err, activate.ErrReverted) && !errors.Is(err, activate.ErrRevertFailed) {
		d.keepRetry(log, des.ID, seen)
	}
	return d.settle(ctx, log, des, o, err)
}

// switchingTo is the status of a switch to id that starts now. A retry
// after a passing failure keeps that failure's outcome ("retrying") and
// reason in view: the report says the node is switching and why the last
// attempt did not get there, so a rollout whose deadline passes while a
// retry runs still names the cause.
func (d *Daemon) switchingTo(id string) status {
	st := status{State: api.AgentSwitching, Target: id}
	if prev := d.status(); prev.Target == id && prev.Outcome == OutcomeRetrying {
		st.Outcome, st.Reason = prev.Outcome, prev.Reason
	}
	return st
}

// gate decides on a desired generation that is not current: one
// quarantined on this node whose Retry is not above the retry number last
// acted on for its ID, or one rejected before at this Retry, is reported
// failed and not switched to (done). Else it returns the retry number last
// acted on and whether Apply lifts the quarantine (retry). again: a
// passing failure, try after a backoff.
func (d *Daemon) gate(log zerolog.Logger, snap state.Snapshot, des *api.Desired) (seen int, retry, done, again bool) {
	seen, recorded := snap.Retry(des.ID)
	q, quarantined := snap.Quarantined(des.ID)
	if quarantined && !recorded {
		// Quarantined outside the daemon: this Retry is the baseline.
		if err := d.putRetry(des); err != nil {
			log.Error().Err(err).Msg("cannot record the retry number")
			return 0, false, true, true
		}
		seen = des.Retry
	}
	if quarantined && des.Retry <= seen {
		if cur := d.status(); cur.State == api.AgentFailed && cur.Target == des.ID {
			return 0, false, true, false // already reported (as reverted, or quarantined)
		}
		log.Warn().Int("generation", q.Number).Str("reason", q.Reason).Int("retry_seen", seen).
			Msg("desired generation is quarantined on this node; waiting for a new release or an operator retry")
		d.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: OutcomeQuarantined, Reason: q.Reason})
		return 0, false, true, false
	}
	if r, ok := d.rejected[des.ID]; ok && des.Retry <= r.retry {
		d.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: OutcomeRejected, Reason: r.reason})
		return 0, false, true, false
	}
	return seen, quarantined && des.Retry > seen, false, false
}

// parseDesired parses the desired generation's manifest and checks that it
// has the desired ID.
func parseDesired(des *api.Desired) (*generation.Manifest, error) {
	m, err := generation.Parse(des.Manifest)
	if err == nil {
		var id string
		if id, err = m.ID(); err == nil && id != des.ID {
			err = fmt.Errorf("manifest ID %s does not match the desired ID", id)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("desired generation: %w", err)
	}
	return m, nil
}

// settle reports what Apply of des did (outcome o, error err) and whether
// to try again after a backoff. A desired generation rejected before
// anything on the node changed (permanent: an invalid manifest, a unit
// file the agent does not own, unit files systemd-analyze verify refuses,
// a secret this node cannot decrypt or whose owner it lacks, a NixOS
// toplevel this node cannot run, a blob the server refuses with 4xx) is
// reported failed (outcome "rejected") and not tried again until its
// Retry is bumped, a new desired generation arrives, or the daemon
// restarts. Other failures before the switch (the server gone while blobs
// download, the switch lock held by a local command) are reported idle
// with outcome "retrying" and tried again after a backoff that grows to
// Config.ResyncInterval, so a flapping blob store cannot fill the history
// quickly.
func (d *Daemon) settle(ctx context.Context, log zerolog.Logger, des *api.Desired, o activate.Outcome, err error) (again bool) {
	switch {
	case err == nil:
		log.Info().Str("outcome", o.Outcome).Int("generation", o.To).Dur("took", o.Duration).Msg("on the desired generation")
		d.applyRetry.reset()
		d.setStatus(status{State: api.AgentIdle, Outcome: o.Outcome})
		return false
	case errors.Is(err, activate.ErrReverted), errors.Is(err, activate.ErrRevertFailed):
		log.Error().Str("outcome", o.Outcome).Int("generation", o.From).Int("current", o.To).Str("reason", o.Reason).Msg("switch failed")
		d.applyRetry.reset()
		d.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: o.Outcome, Reason: o.Reason})
		return false
	case errors.Is(err, activate.ErrQuarantined):
		d.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: OutcomeQuarantined, Reason: err.Error()})
		return false
	case ctx.Err() != nil:
		log.Info().Err(err).Msg("stopped before the switch; the node was not changed")
		d.setStatus(status{State: api.AgentIdle, Target: des.ID, Outcome: OutcomeInterrupted, Reason: "agent stopping"})
		return false
	case permanent(err):
		return d.reject(log, des, err)
	case errors.Is(err, activate.ErrBootDefault):
		log.Warn().Err(err).Int("generation", o.To).Msg("running the confirmed generation, but it is not the boot default yet; trying again")
		d.setStatus(status{State: api.AgentIdle, Target: des.ID, Outcome: o.Outcome, Reason: err.Error()})
		return true
	}
	log.Warn().Err(err).Msg("could not switch (the node was not changed); trying again")
	d.setStatus(status{State: api.AgentIdle, Target: des.ID, Outcome: OutcomeRetrying, Reason: err.Error()})
	return true
}

func (d *Daemon) reject(log zerolog.Logger, des *api.Desired, err error) bool {
	log.Error().Err(err).Msg("desired generation rejected; the node was not changed")
	d.rejected[des.ID] = rejection{retry: des.Retry, reason: err.Error()}
	d.setStatus(status{State: api.AgentFailed, Target: des.ID, Outcome: OutcomeRejected, Reason: err.Error()})
	return false
}

// keepRetry undoes the retry record of id when a retry did not get as far
// as lifting the quarantine (the switch lock was held, the agent stopped):
// the operator's retry is not used up.
func (d *Daemon) keepRetry(log zerolog.Logger, id string, seen int) {
	snap, err := d.db.Snapshot()
	if err == nil {
		if _, still := snap.Quarantined(id); !still {
			return
		}
		err = d.db.Update(func(tx *state.Tx) error {
			return tx.PutRetrySeen(state.RetrySeen{ID: id, Retry: seen, At: d.now()})
		})
	}
	if err != nil {
		log.Error().Err(err).Msg("cannot restore the retry number")
	}
}

func (d *Daemon) putRetry(des *api.Desired) error {
	return d.db.Update(func(tx *state.Tx) error {
		return tx.PutRetrySeen(state.RetrySeen{ID: des.ID, Retry: des.Retry, At: d.now()})
	})
}

// permanent reports whether an Apply error will not go away by trying the
// same desired generation again.
func permanent(err error) bool {
	var se *api.StatusError
	if errors.As(err, &se) && se.Status >= 400 && se.Status < 500 && se.Status != 408 && se.Status != 429 {
		return true
	}
	return errors.Is(err, generation.ErrInvalid) || errors.Is(err, activate.ErrNotOwned) || errors.Is(err, activate.ErrUnitsRefused) ||
		errors.Is(err, stage.ErrSecret) || errors.Is(err, stage.ErrNixOSUnsupported) ||
		errors.Is(err, nixos.ErrUntrusted) || errors.Is(err, nixos.ErrNotToplevel) || errors.Is(err, nixos.ErrNoNix)
}

func (d *Daemon) observe(o activate.Outcome, interrupted bool) {
	if d.cfg.OnOutcome != nil {
		d.cfg.OnOutcome(o, interrupted)
	}
}

func (d *Daemon) notify(s string) {
	if d.cfg.Notify != nil {
		d.cfg.Notify(s)
	}
}

func (d *Daemon) watchdog(ctx context.Context) {
	t := time.NewTicker(d.cfg.Watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify("WATCHDOG=1")
		}
	}
}

// backoff yields jittered delays doubling from BackoffMin up to limit.
type backoff struct {
	min, max, cur time.Duration
	failures      int
}

func (d *Daemon) backoff(limit time.Duration) backoff {
	return backoff{min: d.cfg.BackoffMin, max: max(limit, d.cfg.BackoffMin)}
}

// next returns a delay in [cur/2, cur] and doubles cur.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	cur := b.cur
	b.cur = min(2*b.cur, b.max)
	b.failures++
	return cur/2 + rand.N(cur/2+1)
}

func (b *backoff) reset() { b.cur, b.failures = 0, 0 }

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool { return ctxsleep.Sleep(ctx, d) }

// redact drops credentials from a server address before it is logged.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
