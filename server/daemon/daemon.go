// Package daemon wires slipway-server together: config, the store (bbolt
// in state_dir, or etcd shared by several servers, one of them the
// elected leader that runs the rollout engine and the other work that runs
// once: store.go, leader.go), the blob store (shared through etcd there), the registry and the HTTP API on a TCP
// address (admin and agents) and optionally a unix socket (agents on the
// same machine or in containers it is bind-mounted into), and with [tailscale] on a tailnet
// node of its own, or (mode "host") on the tailnet addresses of the host's
// tailscaled, where agents and admins are identified by WhoIs (mesh.go). With [gossip] it is a serf member that records the nodes'
// liveness and wakes agents when their desired generation changes
// (gossip.go). With [ui] on (the default) it serves the web dashboard at
// /ui/ on every listener of the admin API (server/ui). It shuts down gracefully when its context ends. It is also
// the server's command line.
//
// Operations (ops.go): sd_notify READY/WATCHDOG/STOPPING under systemd
// (Type=notify), SIGHUP reloads admin tokens, the log level,
// tailscale.roles and the TLS certificate without dropping connections, Prometheus metrics on
// metrics_listen (an address of their own, server/metrics), and the
// shutdown sequence.
//
// HTTP limits ([limits]: timeouts, connection caps, the unauthenticated
// rate limit) are in limits.go; HTTPS on listen in tls.go; the agent
// socket's mode and group in socket.go.
//
// It never logs tokens or configuration values that hold secrets.
package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/gossip"
	"github.com/slipway-dev/slipway/shared/sdnotify"
)

// Version is set at build time.
var Version = "dev"

// Options of Serve. See ops.go for sd_notify, reloads, metrics and the
// shutdown sequence.
type Options struct {
	Spec []byte
	// Ready, when set, is called with the API's address once every
	// listener is open.
	Ready func(addr string)
	// MetricsReady, when set, is called with the metrics address once it
	// listens (metrics_listen set).
	MetricsReady func(addr string)
	// Notify, when set, receives sd_notify states (READY=1, WATCHDOG=1,
	// RELOADING=1, STOPPING=1).
	Notify func(state string)
	// Watchdog is the sd_notify watchdog period (WatchdogSec); 0: none.
	Watchdog time.Duration
	// Reload delivers reload requests (SIGHUP); Load reads the config for
	// them (nil: reloads are refused and logged).
	Reload <-chan os.Signal
	Load   func() (config.Server, error)
	// Level is the level of log, changed by reloads (see LevelLogger);
	// nil: log_level needs a restart.
	Level *LogLevel
	// GossipIntervals are the gossip member's timers (zero: serf's LAN
	// defaults); tests shrink them (gossip.TestIntervals).
	GossipIntervals gossip.Intervals
	// GossipReady, when set, is called with the gossip member's address
	// ("ip:port", for others to join) once it runs ([gossip] enabled).
	GossipReady func(addr string)
}

// auditConfig is the registry's view of [audit].
func auditConfig(a config.Audit) registry.AuditConfig {
	return registry.AuditConfig{MaxEvents: a.MaxEvents, MaxAge: time.Duration(a.MaxAge), RefusalWindow: time.Duration(a.RefusalWindow)}
}

// startCerts loads tls_cert_file and tls_key_file (nil without them).
func startCerts(c config.Server, log zerolog.Logger) (*certs, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	tc, err := loadCerts(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	subject, notAfter, expired := validity(tc.leaf(), time.Now())
	ev := log.Info()
	if expired {
		ev = log.Warn()
	}
	ev.Str("subject", subject).Time("not_after", notAfter).Bool("expired", expired).Msg("serving HTTPS on listen")
	return tc, nil
}

// openListeners opens listen (over TLS with tc) and agent_socket, each
// counted by g's connection caps. api is listen's TCP listener (its
// address is the API's); all are the ones to serve.
func openListeners(c config.Server, g *guard, tc *certs) (api net.Listener, all []net.Listener, err error) {
	mode, err := c.SocketMode()
	if err != nil {
		return nil, nil, err
	}
	api, err = net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	served := g.listener(api)
	if tc != nil {
		served = tls.NewListener(served, tc.config())
	}
	all = []net.Listener{served}
	if c.AgentSocket != "" {
		uln, err := listenSocket(c.AgentSocket, mode, c.AgentSocketGroup)
		if err != nil {
			api.Close()
			return nil, nil, err
		}
		all = append(all, g.listener(uln))
	}
	return api, all, nil
}

func adminTokens(cs []config.AdminToken) ([]httpapi.AdminToken, error) {
	var out []httpapi.AdminToken
	for _, t := range cs {
		sum := t.SHA256
		if t.File != "" {
			b, err := os.ReadFile(t.File)
			if err != nil {
				return nil, fmt.Errorf("admin token %s: %w", t.Name, err)
			}
			tok := strings.TrimSpace(string(b))
			if len(tok) < 16 {
				return nil, fmt.Errorf("admin token %s: the token in %s is shorter than 16 characters", t.Name, t.File)
			}
			sum = httpapi.HashToken(tok)
		}
		out = append(out, httpapi.AdminToken{Name: t.Name, Role: t.Role, SHA256: sum})
	}
	return out, nil
}

// Logger builds the server's logger: JSON, or console format on a TTY
// (format "auto"). Its level is fixed; see LevelLogger for one a reload
// can change.
func Logger(w io.Writer, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	lv := &LogLevel{}
	lv.Set(lvl)
	return LevelLogger(w, lv, format)
}

// Run is slipway-server's command line.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, spec []byte) error {
	fl := &serveFlags{}
	root := &cobra.Command{
		Use:           "slipway-server",
		Short:         "The Slipway coordinator: publishes each node's desired generation, confirms switches, keeps the fleet's state",
		Long:          serverHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, fl, stderr, spec)
		},
	}
	fl.register(root)
	root.AddCommand(hashTokenCmd(stdin, stdout))
	root.AddCommand(migrateCmd(stdout, stderr))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// serverHelp is slipway-server's --help.
const serverHelp = `The Slipway coordinator: publishes each node's desired generation, confirms
switches, keeps the fleet's state.

Under systemd (Type=notify) it reports READY=1 once it listens, pings the
watchdog (WatchdogSec) while its store answers, and reports STOPPING=1.
SIGTERM: the listeners close, long-polls end, other requests finish (10s).
SIGHUP re-reads the config: admin_token, log_level and tailscale.roles apply
at once, without dropping connections, and the TLS certificate and key
(tls_cert_file, tls_key_file) are read again for new connections; other keys
need a restart; an invalid config or certificate is logged and the running
one kept. Command-line flags still override the file.

[limits] bounds what clients can take: header, body and idle timeouts,
header size, open connections in total and per client address, and a rate
limit on refused requests and failed enrolments per address (429 with
Retry-After).

[gossip] makes the server a serf member: it records each node's liveness
and wakes agents when their desired generation changes; on SIGTERM it leaves
the cluster gracefully.

Prometheus metrics: http://<metrics_listen>/metrics (default 127.0.0.1:9431;
metrics_listen = "" turns them off).

The web dashboard: http://<listen>/ui/ (log in with an admin token; over the
tailnet no login is needed); [ui] enabled = false turns it off.`

// serveFlags are slipway-server's flags; those given override the file.
type serveFlags struct {
	cfgPath, listen, socket, stateDir, level, format string
}

func (fl *serveFlags) register(root *cobra.Command) {
	f := root.Flags()
	f.StringVar(&fl.cfgPath, "config", "", "config file (default "+config.DefaultPath+" if present)")
	f.StringVar(&fl.listen, "listen", config.DefaultListen, "address of the API")
	f.StringVar(&fl.socket, "agent-socket", "", "also serve the API on this unix socket (for agents)")
	f.StringVar(&fl.stateDir, "state-dir", "/var/lib/slipway-server", "directory for store.db and blobs/")
	f.StringVar(&fl.level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&fl.format, "log-format", "auto", "auto, json or console")
}

// load reads the config file, then applies the flags given: at start and
// on every reload.
func (fl *serveFlags) load(cmd *cobra.Command) (config.Server, error) {
	path, explicit := fl.cfgPath, fl.cfgPath != ""
	if !explicit {
		path = config.DefaultPath
	}
	c, err := config.Load(path, explicit)
	if err != nil {
		return c, err
	}
	for _, o := range []struct {
		flag string
		dst  *string
		val  string
	}{{"listen", &c.Listen, fl.listen}, {"agent-socket", &c.AgentSocket, fl.socket}, {"state-dir", &c.StateDir, fl.stateDir}, {"log-level", &c.LogLevel, fl.level}} {
		if cmd.Flags().Changed(o.flag) {
			*o.dst = o.val
		}
	}
	return c, nil
}

// runServe is slipway-server without a subcommand: load the config, set
// up logging, reload on SIGHUP, and Serve.
func runServe(cmd *cobra.Command, fl *serveFlags, stderr io.Writer, spec []byte) error {
	// Before anything else: SIGHUP's default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	load := func() (config.Server, error) { return fl.load(cmd) }
	c, err := load()
	if err != nil {
		return err
	}
	lv := &LogLevel{}
	lvl, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel // Serve's Validate reports it
	}
	lv.Set(lvl)
	log := LevelLogger(stderr, lv, fl.format)
	return Serve(cmd.Context(), c, log, Options{
		Spec:     spec,
		Reload:   hup,
		Load:     load,
		Level:    lv,
		Watchdog: sdnotify.WatchdogPeriod(),
		Notify:   sdnotify.Notifier(log),
	})
}

// hashTokenCmd is `slipway-server hash-token`.
func hashTokenCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "hash-token",
		Short: "Read a token on stdin and print its sha256 for [[admin_token]] sha256 = …",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			tok := strings.TrimSpace(line)
			if len(tok) < 16 {
				return errors.New("token shorter than 16 characters")
			}
			_, err = fmt.Fprintln(stdout, httpapi.HashToken(tok))
			return err
		},
	}
}
