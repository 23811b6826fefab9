package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/agent/config"
	"github.com/slipway-dev/slipway/agent/daemon"
)

// runFlags are the flags of `run`; set ones override the config file.
type runFlags struct {
	server, name, joinTokenFile string
	labels                      []string // k=v; when any is given they replace the config's labels
}

func (f *runFlags) apply(c *config.Agent) error {
	if f.server != "" {
		c.Server = f.server
	}
	if f.name != "" {
		c.NodeName = f.name
	}
	if f.joinTokenFile != "" {
		c.JoinTokenFile = f.joinTokenFile
	}
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
		Long: `Run the agent daemon: it makes this node part of a fleet.

On start it reverts a switch a crash interrupted and starts the current
generation's units. It enrols once with the one-time join token from
join_token_file and keeps the node token in token_file (default
<state_dir>/node-token). Then it long-polls the server for the node's desired
generation, switches to it, waits for the server's confirm (no confirm within
the generation's confirm_timeout reverts: the "magic rollback"), and reports
the node's state. A generation that failed here is quarantined and only
retried when the operator retries it.

While the server is unreachable the node keeps its last good generation and
the daemon retries with backoff. SIGTERM stops it; a switch in progress is
reverted first.

Exit status: 0 stopped by a signal, 1 on any error (e.g. a refused join token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g.run = f
			// The systemd connection must outlive SIGTERM: a switch in
			// progress reverts after the command's context has ended.
			p, done, err := g.build(context.WithoutCancel(cmd.Context()), true)
			if err != nil {
				return err
			}
			defer done()
			var watchdog time.Duration
			if w, err := sddaemon.SdWatchdogEnabled(false); err == nil {
				watchdog = w
			}
			d, err := daemon.New(daemon.Config{
				Server:         p.cfg.Server,
				Name:           p.cfg.NodeName,
				Labels:         p.cfg.Labels,
				JoinTokenFile:  p.cfg.JoinTokenFile,
				TokenFile:      p.cfg.NodeTokenFile(),
				AgentVersion:   Version,
				Layout:         p.layout,
				PollWait:       time.Duration(p.cfg.PollWait),
				ReportInterval: time.Duration(p.cfg.ReportInterval),
				Watchdog:       watchdog,
				Notify: func(state string) {
					if _, err := sddaemon.SdNotify(false, state); err != nil {
						p.log.Debug().Err(err).Str("state", state).Msg("sd_notify")
					}
				},
			}, p.agent, p.db, p.sd, p.log)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.server, "server", "", "slipway-server address: http(s)://host:port or unix:///path.sock (overrides server)")
	fl.StringVar(&f.name, "name", "", "node name (overrides node_name; default the host name)")
	fl.StringArrayVar(&f.labels, "label", nil, "node label key=value, repeatable; sent at enrolment; replaces the config's labels")
	fl.StringVar(&f.joinTokenFile, "join-token-file", "", "file holding the one-time join token (overrides join_token_file)")
	return c
}
