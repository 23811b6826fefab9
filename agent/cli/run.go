package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/agent/config"
	"github.com/slipway-dev/slipway/agent/daemon"
	"github.com/slipway-dev/slipway/agent/metrics"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/sdnotify"
	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// runFlags are the flags of `run`; set ones override the config file.
type runFlags struct {
	server, name, joinTokenFile string
	caFile                      string
	labels                      []string // k=v; when any is given they replace the config's labels

	level *logLevel // the daemon logger's level, changed by a reload (set by logger)
}

func (f *runFlags) apply(c *config.Settings) error {
	if s := config.ParseServers(f.server); s != nil {
		c.Server = s
	}
	c.TLSCAFile = cmp.Or(f.caFile, c.TLSCAFile)
	c.NodeName = cmp.Or(f.name, c.NodeName)
	c.JoinTokenFile = cmp.Or(f.joinTokenFile, c.JoinTokenFile)
	if len(f.labels) > 0 {
		c.Labels = make(map[string]string, len(f.labels))
		for _, l := range f.labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("--label %q: want key=value", l)
			}
			c.Labels[k] = v
		}
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w (set node_name or --name)", err)
		}
		c.NodeName = h
	}
	return nil
}

func (g *globals) runCmd() *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{
		Use:   "run",
		Short: "Run as the node's daemon: enrol with the server, pull the desired generation, switch, confirm, report",
		Long:  runLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return g.runDaemon(cmd.Context(), f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.server, "server", "", "slipway-server address: http(s)://host:port or unix:///path.sock, or several separated by commas to fail over between (overrides server)")
	fl.StringVar(&f.caFile, "tls-ca-file", "", "CA certificates (PEM) to verify an https:// server against (overrides tls_ca_file; default the system's roots)")
	fl.StringVar(&f.name, "name", "", "node name (overrides node_name; default the host name)")
	fl.StringArrayVar(&f.labels, "label", nil, "node label key=value, repeatable; sent at enrolment; replaces the config's labels")
	fl.StringVar(&f.joinTokenFile, "join-token-file", "", "file holding the one-time join token (overrides join_token_file)")
	return c
}

// runLong is the help of `run`.
const runLong = `Run the agent daemon: it makes this node part of a fleet.

On start it reverts a switch a crash interrupted and starts the current
generation's units. It enrols once with the one-time join token from
join_token_file and keeps the node token in token_file (default
<state_dir>/node-token). Then it long-polls the server for the node's desired
generation, switches to it, waits for the server's confirm (no confirm within
the generation's confirm_timeout reverts: the "magic rollback"), and reports
the node's state. A generation that failed here is quarantined and only
retried when the operator retries it.

While the server is unreachable the node keeps its last good generation and
the daemon retries with backoff. With several servers (server = ["http://a:7420",
"http://b:7420"], or --server a,b) it sticks to the one in use and moves to the
next when it does not answer (never for an overload answer); a confirm from
any of them counts, and only no answer from all of them within
confirm_timeout reverts. SIGTERM stops it; a switch in progress is reverted
first.

With [tailscale] enabled it joins the tailnet as a node of its own (host name
= node name) and talks to the server over it (server = "http://slipway"):
it enrols at every start without a join token, the server knowing it by its
tailnet identity. With tailscale.mode = "host" it uses the host's own
tailscaled instead (its LocalAPI socket, tailscale.socket): it refuses to go
on when the host's tailnet name is not node_name or the host lacks the agent
tag, and reaches the server over the host's tailnet interface, or through
tailscaled's SOCKS5 proxy (tailscale.proxy) in userspace networking. With
[gossip] enabled it joins the fleet's serf cluster and
polls every gossip.poll_interval instead of long-polling, at once when the
server announces a change for this node.

Under systemd (Type=notify) it reports READY=1 once the start-up recover is
done, pings the watchdog (WatchdogSec) and reports STOPPING=1.

SIGHUP re-reads the config file: log_level takes effect at once (flags still
override the file); an invalid file is logged and the running config kept.
Every other key needs a restart, and labels are sent only at enrolment: to
change them, enrol again: an existing node needs "slipway node reset NAME" and a
join token from "slipway token create --node NAME" (a plain join token enrols only a
new name); then remove the node token and provide that join token.

Prometheus metrics are served at http://<metrics_listen>/metrics (default
127.0.0.1:9432; metrics_listen = "" turns them off).

Exit status: 0 stopped by SIGTERM (systemctl stop), 130 stopped by SIGINT
(Ctrl-C), 1 on any error (e.g. a refused join token, metrics_listen taken).`

// runDaemon is `run`: build the agent, serve metrics, follow SIGHUP, run
// the daemon until ctx ends. Each step owns its cleanup.
func (g *globals) runDaemon(ctx context.Context, f *runFlags) error {
	// Before anything else: SIGHUP's default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	g.run = f
	// The systemd connection must outlive SIGTERM: a switch in progress
	// reverts after the command's context has ended.
	p, done, err := g.build(context.WithoutCancel(ctx), true)
	if err != nil {
		return err
	}
	defer done()
	notify := sdnotify.Notifier(p.log)
	m := newMetrics(p.db, p.log)
	stopMetrics, err := serveMetrics(ctx, p.cfg.MetricsListen, m, p.log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	stopReload := g.followReloads(ctx, hup, p, notify)
	defer stopReload()

	d, err := daemon.New(daemonConfig(p, notify, m), p.switcher, p.db, p.sd, p.log)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// serveMetrics serves m at listen ("" = off) until the returned stop runs:
// through the revert after SIGTERM, since Run outlives ctx.
func serveMetrics(ctx context.Context, listen string, m *metrics.Recorder, log zerolog.Logger) (stop func(), err error) {
	if listen == "" {
		return func() {}, nil
	}
	mlog := log.With().Str("component", "metrics").Logger()
	ep, err := metrics.Listen(listen, m.Handler(mlog), mlog)
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := ep.Serve(mctx); err != nil {
			mlog.Error().Err(err).Msg("metrics endpoint stopped; the agent runs on without it")
		}
	}()
	return func() { cancel(); <-served }, nil
}

// followReloads re-reads the config on every SIGHUP (reloadLoop) until
// the returned stop runs or ctx ends.
func (g *globals) followReloads(ctx context.Context, hup <-chan os.Signal, p *parts, notify func(string)) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		g.reloadLoop(rctx, hup, p.cfg, p.log, notify)
	}()
	return func() { cancel(); <-reloaded }
}

// daemonConfig is the daemon's config from the agent's, with notify for
// sd_notify and m counting outcomes.
func daemonConfig(p *parts, notify func(string), m *metrics.Recorder) daemon.Config {
	return daemon.Config{
		Servers:                p.cfg.Server,
		CAFile:                 p.cfg.TLSCAFile,
		Name:                   p.cfg.NodeName,
		Labels:                 p.cfg.Labels,
		JoinTokenFile:          p.cfg.JoinTokenFile,
		TokenFile:              p.cfg.NodeTokenFile(),
		AgentVersion:           Version,
		Layout:                 p.layout,
		IdentityFile:           p.cfg.AgeIdentityFile(),
		PollWait:               time.Duration(p.cfg.PollWait),
		ReportInterval:         time.Duration(p.cfg.ReportInterval),
		OverloadConfirmTimeout: time.Duration(p.cfg.OverloadConfirmTimeout),
		Watchdog:               sdnotify.WatchdogPeriod(),
		Notify:                 notify,
		OnOutcome:              m.Observe,
		Tailscale:              tailscaleConfig(p.cfg),
		TailscaleHost:          hostTailnetConfig(p.cfg),
		Gossip:                 gossipConfig(p.cfg),
	}
}

// tailscaleConfig is the daemon's tsnet node, or nil when [tailscale] is
// off.
func tailscaleConfig(c config.Settings) *mesh.Config {
	ts := c.Tailscale
	if !ts.Enabled || c.TailscaleMode() != config.TailscaleModeTsnet {
		return nil
	}
	return &mesh.Config{
		Hostname:    c.TailscaleHostname(),
		ControlURL:  ts.ControlURL,
		AuthKeyFile: ts.AuthKeyFile,
		StateDir:    c.TailscaleStateDir(),
		Tags:        ts.Tags,
		Ephemeral:   ts.Ephemeral,
	}
}

// hostTailnetConfig is the host's tailscaled the daemon uses, or nil
// unless [tailscale] is on in mode "host".
func hostTailnetConfig(c config.Settings) *daemon.HostTailnet {
	ts := c.Tailscale
	if !ts.Enabled || c.TailscaleMode() != config.TailscaleModeHost {
		return nil
	}
	return &daemon.HostTailnet{HostConfig: mesh.HostConfig{Socket: ts.Socket, Proxy: ts.Proxy}, Tags: ts.Tags}
}

// gossipConfig is the daemon's serf member, or nil when [gossip] is off.
func gossipConfig(c config.Settings) *daemon.Gossip {
	g := c.Gossip
	if !g.Enabled {
		return nil
	}
	return &daemon.Gossip{
		Bind:         g.Bind,
		Advertise:    g.Advertise,
		KeyringFile:  g.KeyringFile,
		Join:         c.GossipJoin(),
		PollInterval: time.Duration(g.PollInterval),
	}
}

// newMetrics builds the daemon's metrics over the state database: the
// current generation is read at every scrape, the last switch time is
// seeded from the last result so a restart does not reset it to "never".
func newMetrics(db *state.DB, log zerolog.Logger) *metrics.Recorder {
	opts := metrics.Options{Current: func() (int, error) {
		snap, err := db.Snapshot()
		return snap.Meta.Current, err
	}}
	if snap, err := db.Snapshot(); err != nil {
		log.Warn().Err(err).Msg("metrics: cannot read the last switch from the state database")
	} else if r := snap.Result; r != nil {
		switch r.Outcome {
		case "switched", "reverted", "revert-failed", "rollback-undone":
			opts.LastSwitch = r.At
		}
	}
	return metrics.New(opts)
}

// reloadLoop applies a reload for every SIGHUP until ctx ends.
func (g *globals) reloadLoop(ctx context.Context, hup <-chan os.Signal, running config.Settings, log zerolog.Logger, notify func(string)) {
	log = log.With().Str("component", "reload").Logger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			running = g.reload(running, log, notify)
		}
	}
}

// reload re-reads the config (file, then flags) and applies what the
// running daemon can change: log_level. It returns the config now in force.
// A config that does not load or validate is logged and changes nothing.
// Only key names are logged, never values.
func (g *globals) reload(running config.Settings, log zerolog.Logger, notify func(string)) config.Settings {
	notify(sdnotify.Reloading())
	defer notify("READY=1")
	c, err := g.config()
	if err != nil {
		log.Error().Err(err).Msg("reload: config rejected; keeping the running config")
		return running
	}
	lvl, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil { // Validate accepts only valid levels
		log.Error().Err(err).Msg("reload: config rejected; keeping the running config")
		return running
	}
	// Logged before the new level applies, so that turning logs down
	// still shows the reload.
	old := running.LogLevel
	running.LogLevel = c.LogLevel
	var restart []string
	for _, k := range tomlconfig.ChangedKeys(running, c) {
		if k == "labels" {
			log.Warn().Str("key", k).Msg("reload: labels are sent to the server only at enrolment; to change them, an admin runs `slipway node reset NAME`, then remove the node token and enrol again with a join token from `slipway token create --node NAME`")
			continue
		}
		restart = append(restart, k)
	}
	if len(restart) > 0 {
		log.Warn().Strs("keys", restart).Msg("reload: these keys changed but take effect only when the agent restarts (systemctl restart slipway-agent; a switch in progress would be reverted)")
	}
	log.Info().Str("log_level", c.LogLevel).Str("previous_log_level", old).Msg("config reloaded")
	g.run.level.set(lvl)
	return running
}

// logLevel is the daemon logger's minimum level, changeable while it runs.
// It is attached as a zerolog.Sampler, the hook zerolog asks before it
// builds an event, so events below the level cost nothing.
type logLevel struct{ v atomic.Int32 }

// Sample reports whether an event at lvl is logged.
func (l *logLevel) Sample(lvl zerolog.Level) bool { return lvl >= zerolog.Level(l.v.Load()) }

func (l *logLevel) set(lvl zerolog.Level) { l.v.Store(int32(lvl)) }

// logger builds the daemon's logger with its level in f.level.
func (f *runFlags) logger(w io.Writer, lvl zerolog.Level) zerolog.Logger {
	if f.level == nil {
		f.level = &logLevel{}
	}
	f.level.set(lvl)
	return zerolog.New(w).Level(zerolog.TraceLevel).Sample(f.level).With().Timestamp().Str("daemon", "slipway-agent").Logger()
}
