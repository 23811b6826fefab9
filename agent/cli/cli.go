// Package cli is the slipway-agent command line: apply, rollback, status,
// generations, recover, gc and identity (the node's public keys for
// secrets), each with --json, and run, the daemon that makes the node part
// of a fleet. It parses flags, builds the agent's parts
// and prints results; the work happens in agent/activate and agent/daemon.
//
// Every failure returns an error (main exits non-zero); nothing here calls
// os.Exit. Logs go to stderr (JSON, or console format on a TTY); results go
// to stdout.
package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/config"
	"github.com/slipway-dev/slipway/agent/daemon"
	"github.com/slipway-dev/slipway/agent/nixos"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/agent/unitverify"
)

// Version is set at build time (-ldflags "-X .../agent/cli.Version=...").
var Version = "dev"

// Exit codes beyond 1 (any error) that scripts may rely on.
const (
	ExitReverted     = 3 // the switch failed and the node is back on its last good generation
	ExitRevertFailed = 4 // the switch failed and so did the revert
)

// ExitError carries a specific exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the status main exits with (see cmdexit.Status).
func (e *ExitError) ExitCode() int { return e.Code }

// Hint returns an operator hint for err, or "".
func Hint(err error) string {
	switch {
	case errors.Is(err, activate.ErrQuarantined):
		return "this release failed here before; fix it, or retry on purpose with --retry-quarantined"
	case errors.Is(err, activate.ErrNotOwned):
		return "slipway never overwrites or shadows unit files and paths it did not create; rename the unit or remove the existing file"
	case errors.Is(err, activate.ErrLocked):
		return "wait for the other switch to finish (slipway-agent status shows it)"
	case errors.Is(err, activate.ErrRevertFailed):
		return "inspect with `slipway-agent status` and `journalctl -u <unit>`; `slipway-agent rollback --to N` switches to a known generation"
	case errors.Is(err, daemon.ErrTailnetIdentity):
		return "bring the host onto the tailnet as this node: tailscale up --hostname=<node_name> --advertise-tags=tag:slipway-agent (and set tailscale.proxy when tailscaled runs in userspace networking)"
	case errors.Is(err, daemon.ErrTailnetEnrollRefused):
		return "the node's tailnet host name must be node_name and carry the server's agent tag (tailscale.tags), and the server must serve the tailnet ([tailscale] in server.toml)"
	case errors.Is(err, daemon.ErrEnrollRefused):
		return "create a new join token on the server, write it to join_token_file (or check node_name), and restart the agent; a node name already enrolled needs `slipway node reset NAME` and `slipway token create --node NAME`"
	case errors.Is(err, stage.ErrSecret):
		return "seal the secret to this node's recipient (`slipway-agent identity` prints it; `slipway secret rekey` after it enrolled), or check the secret's owner and group"
	case errors.Is(err, os.ErrPermission):
		return "slipway-agent manages systemd units and must run as root"
	}
	return ""
}

type globals struct {
	configPath string
	stateDir   string
	unitDir    string
	logLevel   string
	logFormat  string
	jsonOut    bool
	stdout     io.Writer
	stderr     io.Writer
	run        *runFlags // set by `run`: its flags and stricter validation apply
}

// Run executes the agent command line with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "slipway-agent",
		Short:         "Switch this node between generations of systemd units, verify them, revert on failure",
		Long:          "slipway-agent stages, switches, verifies and reverts generations on this node.\nWithout a server, `slipway-agent apply DIR` switches to a release directory directly.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "config file (default "+config.DefaultPath+" if present)")
	pf.StringVar(&g.stateDir, "state-dir", "", "state directory (overrides the config file)")
	pf.StringVar(&g.unitDir, "unit-dir", "", "directory for unit links (overrides the config file)")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides the config file)")
	pf.StringVar(&g.logFormat, "log-format", "auto", "auto (console on a TTY, else JSON), json or console")
	pf.BoolVar(&g.jsonOut, "json", false, "print the result as JSON on stdout")
	root.AddCommand(g.applyCmd(), g.rollbackCmd(), g.statusCmd(), g.generationsCmd(), g.recoverCmd(), g.gcCmd(), g.runCmd(), g.identityCmd())
	return root.ExecuteContext(ctx)
}

func (g *globals) config() (config.Settings, error) {
	path, explicit := g.configPath, g.configPath != ""
	if !explicit {
		path = config.DefaultPath
	}
	c, err := config.Load(path, explicit)
	if err != nil {
		return c, err
	}
	c.StateDir = cmp.Or(g.stateDir, c.StateDir)
	c.UnitDir = cmp.Or(g.unitDir, c.UnitDir)
	c.LogLevel = cmp.Or(g.logLevel, c.LogLevel)
	if g.run != nil {
		if err := g.run.apply(&c); err != nil {
			return c, err
		}
		return c, c.ValidateRun()
	}
	return c, c.Validate()
}

func (g *globals) logger(c config.Settings) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(c.LogLevel)
	var w io.Writer = g.stderr
	console := g.logFormat == "console"
	if g.logFormat == "auto" {
		if f, ok := g.stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: g.stderr, TimeFormat: time.TimeOnly}
	}
	if g.run != nil {
		return g.run.logger(w, lvl) // the daemon's level changes on SIGHUP
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("daemon", "slipway-agent").Logger()
}

// parts are the agent's pieces, built for one command.
type parts struct {
	cfg      config.Settings
	log      zerolog.Logger
	layout   stage.Layout
	db       *state.DB
	sd       *systemd.Conn
	switcher *activate.Switcher
}

func (g *globals) build(ctx context.Context, needSystemd bool) (*parts, func(), error) {
	c, err := g.config()
	if err != nil {
		return nil, nil, err
	}
	p := &parts{cfg: c, log: g.logger(c), layout: stage.Layout{Dir: c.StateDir, SecretsDir: c.SecretsDir}}
	// Tests only: a crash point (activate.CrashEnv) of the commands that
	// switch, read once here.
	var crash *activate.CrashAt
	if needSystemd {
		if crash, err = activate.CrashFromEnv(os.Getenv); err != nil {
			return nil, nil, err
		}
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
	}
	if p.db, err = state.Open(p.layout.DB()); err != nil {
		return nil, nil, err
	}
	closeFn := func() {}
	if needSystemd {
		if p.sd, err = dialSystemd(ctx); err != nil {
			return nil, nil, err
		}
		closeFn = p.sd.Close
		st := &stage.Stager{Layout: p.layout, Keys: stage.Keys{IdentityFile: c.AgeIdentityFile(), SSHHostKeys: c.SSHHostKeys},
			Log: p.log.With().Str("component", "stage").Logger()}
		p.switcher = activate.New(activate.Config{
			Layout:       p.layout,
			UnitDir:      c.UnitDir,
			LinkPrefixes: c.LinkPrefixes,
			Keep:         c.KeepGenerations,
			JobTimeout:   time.Duration(c.JobTimeout),
			NixOS:        &nixos.Driver{},
			Units:        &unitverify.Verifier{},
			Crash:        crash,
		}, p.db, st, p.sd, nil, p.log)
	}
	return p, closeFn, nil
}

// withParts is a RunE that builds the agent's parts (with a systemd
// connection when needSystemd), runs fn with them and releases them.
func (g *globals) withParts(needSystemd bool, fn func(cmd *cobra.Command, p *parts) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		p, done, err := g.build(cmd.Context(), needSystemd)
		if err != nil {
			return err
		}
		defer done()
		return fn(cmd, p)
	}
}

// finish prints an outcome (JSON or text) and maps errors to exit codes.
func (g *globals) finish(o activate.Outcome, err error, text func(io.Writer, activate.Outcome)) error {
	if g.jsonOut {
		v := struct {
			activate.Outcome
			Error string `json:"error,omitempty"`
		}{Outcome: o}
		if err != nil {
			v.Error = err.Error()
		}
		if jerr := writeJSON(g.stdout, v); jerr != nil {
			return jerr
		}
	} else if err == nil || errors.Is(err, activate.ErrReverted) || errors.Is(err, activate.ErrRevertFailed) {
		text(g.stdout, o)
	}
	switch {
	case errors.Is(err, activate.ErrRevertFailed):
		return &ExitError{Code: ExitRevertFailed, Err: err}
	case errors.Is(err, activate.ErrReverted):
		return &ExitError{Code: ExitReverted, Err: err}
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printOutcome(w io.Writer, o activate.Outcome) {
	switch o.Outcome {
	case "switched":
		fmt.Fprintf(w, "switched to generation %d (%s) in %s\n", o.To, short(o.ID), o.Duration.Round(time.Millisecond))
		printPlan(w, o.Plan)
		for _, warn := range o.Warnings {
			fmt.Fprintf(w, "  warning:   %s\n", warn)
		}
	case "unchanged":
		fmt.Fprintf(w, "generation %d (%s) is already current; nothing restarted\n", o.To, short(o.ID))
	case "reverted":
		fmt.Fprintf(w, "generation %d FAILED and was quarantined; reverted to generation %d\n  reason: %s\n", o.From, o.To, o.Reason)
	case "rollback-undone":
		fmt.Fprintf(w, "the rollback to generation %d was interrupted and is undone: back on generation %d (generation %d is not quarantined; roll back again with `slipway-agent rollback --to %d`)\n", o.From, o.To, o.From, o.From)
	case "revert-failed":
		fmt.Fprintf(w, "generation %d FAILED and the revert to generation %d failed too\n  reason: %s\n", o.From, o.To, o.Reason)
	case "nothing-to-recover":
		fmt.Fprintln(w, "no interrupted switch; nothing to recover")
		if len(o.Started) > 0 {
			fmt.Fprintf(w, "started units of the current generation that were not running: %v\n", o.Started)
		}
	case "discarded-staging":
		fmt.Fprintf(w, "discarded generation %d, interrupted while staging (the node was not changed)\n", o.From)
	default:
		fmt.Fprintf(w, "%s: %s\n", o.Op, o.Outcome)
	}
}

func printPlan(w io.Writer, p activate.Plan) {
	for _, row := range []struct {
		what  string
		units []string
	}{{"added", p.Added}, {"changed", p.Changed}, {"removed", p.Removed}} {
		if len(row.units) > 0 {
			fmt.Fprintf(w, "  %-10s %v\n", row.what+":", row.units)
		}
	}
	if len(p.Unchanged) > 0 {
		fmt.Fprintf(w, "  untouched: %d unit(s)\n", len(p.Unchanged))
	}
}

func short(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}

// dialSystemd connects for the lifetime of ctx: go-systemd closes the
// connection when the context given to Dial ends, so no shorter timeout
// context may be used here.
func dialSystemd(ctx context.Context) (*systemd.Conn, error) {
	return systemd.Dial(ctx)
}
