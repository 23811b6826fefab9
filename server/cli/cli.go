// Package cli is slipway-server's command line: the server (Serve in
// server/daemon), hash-token and migrate.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/sdnotify"
)

// Run is slipway-server's command line.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, spec []byte) error {
	fl := &serveFlags{}
	root := &cobra.Command{
		Use:           "slipway-server",
		Short:         "The Slipway coordinator: publishes each node's desired generation, confirms switches, keeps the fleet's state",
		Long:          serverHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       daemon.Version,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, fl, stderr, spec)
		},
	}
	fl.register(root)
	root.AddCommand(hashTokenCmd(stdin, stdout))
	root.AddCommand(daemon.MigrateCmd(stdout, stderr))
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
	lv := &daemon.LogLevel{}
	lvl, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel // Serve's Validate reports it
	}
	lv.Set(lvl)
	log := daemon.LevelLogger(stderr, lv, fl.format)
	return daemon.Serve(cmd.Context(), c, log, daemon.Options{
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
