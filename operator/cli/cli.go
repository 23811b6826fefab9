// Package cli is the operator's command line, `slipway`: it talks to
// slipway-server's admin API through api.Client (every command has --json).
// Human output goes to stdout as aligned tables; progress and notes go to
// stderr. It never prints an admin token or a secret, never writes anything
// locally but what `secret encrypt|rekey` write into a release directory,
// and never calls os.Exit (Run).
package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
)

// Version is set at build time (-ldflags "-X .../operator/cli.Version=...").
var Version = "dev"

// DefaultServer is the server address used when no flag, variable or config
// key names one.
const DefaultServer = "http://127.0.0.1:7420"

// ExitUnhealthy is the exit code of `status --fail-on-unhealthy` when a node
// is not converged.
const ExitUnhealthy = 1

// ExitError carries a specific exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the status main exits with (see cmdexit.Status).
func (e *ExitError) ExitCode() int { return e.Code }

// hinted is an error with an operator hint that depends on the context
// (the server address, the source of the token, the kind of object).
type hinted struct {
	err  error
	hint string
}

func (e *hinted) Error() string { return e.err.Error() }
func (e *hinted) Unwrap() error { return e.err }

func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: hint}
}

// Hint returns an operator hint for err, or "".
func Hint(err error) string {
	var h *hinted
	if errors.As(err, &h) {
		return h.hint
	}
	var se *api.StatusError
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return "check --token / SLIPWAY_TOKEN (or --token-file / SLIPWAY_TOKEN_FILE)"
	case errors.Is(err, api.ErrForbidden):
		return "this token's role does not allow this"
	case errors.As(err, &se) && se.Body.Hint != "":
		return se.Body.Hint
	case errors.Is(err, syscall.ECONNREFUSED):
		return "is slipway-server running? (see --server)"
	}
	return ""
}

// env is what Run takes from the process: the environment, the clock and
// the timings, so tests can replace them.
type env struct {
	getenv func(string) string
	now    func() time.Time
	loc    *time.Location // for absolute times in human output
	// pollInterval is the pause between polls of `events --follow`, and of
	// `rollout watch` while the event stream is down.
	pollInterval time.Duration
	// terminal reports whether w is a terminal, and its width in columns
	// (0 = unknown), for `rollout watch`'s live view.
	terminal func(w io.Writer) (bool, int)
	// progressMin is the blob size from which deploy prints percentages.
	progressMin int64
	// stdinTerminal returns the descriptor of r when r is a terminal.
	stdinTerminal func(r io.Reader) (fd int, ok bool)
	// readPassword reads a line from the terminal fd without echo; it
	// returns ctx's error when ctx ends first.
	readPassword func(ctx context.Context, fd int) ([]byte, error)
}

func osEnv() env {
	return env{
		getenv:       os.Getenv,
		now:          time.Now,
		loc:          time.Local,
		pollInterval: 2 * time.Second,
		progressMin:  8 << 20,
		terminal:     terminal,

		stdinTerminal: stdinTerminal,
		readPassword:  readPassword,
	}
}

type globals struct {
	env    env
	stdout io.Writer
	stderr io.Writer

	// flags
	configPath string
	server     string
	token      string
	tokenFile  string
	caFile     string
	jsonOut    bool

	// resolved on first use
	settings *settings
	api      *api.Client
}

// Run executes the slipway command line with args (without the program
// name): preview and deploy a release directory (diff, deploy), follow and
// steer its rollout (rollouts, rollout show|watch|pause|resume|promote|
// abort|rollback|retry), watch the fleet converge (status, nodes, node
// show, generations, events), act on one node (rollback, retry, node
// reset), and create join tokens (token create [--node]).
//
// What the CLI must never do:
//   - print, log or put into an error an admin token (the join token that
//     `slipway token create` makes is its output, and is shown once);
//   - write anything locally: no cache, no state, no config, no history. It
//     reads the config file, the token file and release directories, and
//     nothing else (the one exception to this rule and the next: `secret
//     encrypt` and `secret rekey` write secrets/NAME.age, ciphertext only,
//     and its public recipients record secrets/NAME.recipients, into the
//     release directory they are given);
//   - change a release directory, or send any write to the server with
//     `deploy --dry-run` or `diff` (only HEAD /v1/blobs, GET /v1/nodes and
//     GET /v1/manifests);
//   - print a secret's ciphertext or plaintext: diffs name secrets only;
//   - call os.Exit: every failure is a returned error (main exits non-zero).
//
// Usage errors exit 1 like every other failure; only ExitError carries
// another code. A command Ctrl-C stops exits 130, one SIGTERM cuts short
// 143, without an error line (shared/cmdexit, in main).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return run(ctx, args, stdout, stderr, osEnv())
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, e env) error {
	g := &globals{env: e, stdout: stdout, stderr: &lockedWriter{w: stderr}}
	root := g.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(g.stderr)
	g.addCommands(root)
	return root.ExecuteContext(ctx)
}

// rootCmd is `slipway` with its persistent flags, without subcommands.
func (g *globals) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "slipway",
		Short: "Deploy releases to a fleet of systemd nodes and watch them converge",
		Long: `slipway drives slipway-server: it previews and deploys release directories
to the nodes their target selects, follows and steers their rollouts wave by
wave, shows the fleet converging, and rolls single nodes back or retries
them.

The server address and the admin token come from flags, else the
environment (SLIPWAY_SERVER, SLIPWAY_TOKEN, SLIPWAY_TOKEN_FILE), else the
config file (keys server, token, token_file), else the server defaults to
` + DefaultServer + `. Several servers (--server a,b or server = ["a", "b"] in
the config file) are tried in turn: a server that does not answer is left
for the next one. An https:// server's certificate is verified against
the system's roots, or the CA file from --ca-file, SLIPWAY_CA_FILE or
ca_file in the config file.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return withHint(err, "see `"+c.CommandPath()+" --help`")
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "server address: http://host:port, https://host:port or unix:///path; several separated by commas are tried in turn (env SLIPWAY_SERVER; default "+DefaultServer+")")
	pf.StringVar(&g.token, "token", "", "admin token (env SLIPWAY_TOKEN; prefer --token-file: arguments are visible to other users)")
	pf.StringVar(&g.tokenFile, "token-file", "", "file holding the admin token (env SLIPWAY_TOKEN_FILE)")
	pf.StringVar(&g.caFile, "ca-file", "", "CA certificates (PEM) to verify an https:// server against (env SLIPWAY_CA_FILE; default the system's roots)")
	pf.StringVar(&g.configPath, "config", "", "config file (default $XDG_CONFIG_HOME/slipway/config.toml or ~/.config/slipway/config.toml, if present)")
	pf.BoolVar(&g.jsonOut, "json", false, "print the API objects as JSON on stdout")
	return root
}

// addCommands adds the subcommands to root, in their help groups.
func (g *globals) addCommands(root *cobra.Command) {
	root.AddGroup(
		&cobra.Group{ID: "deploy", Title: "Deploying:"},
		&cobra.Group{ID: "rollout", Title: "Following and steering rollouts:"},
		&cobra.Group{ID: "fleet", Title: "Watching the fleet:"},
		&cobra.Group{ID: "node", Title: "Acting on one node:"},
		&cobra.Group{ID: "admin", Title: "Administration:"},
	)
	for _, c := range []struct {
		group string
		cmd   *cobra.Command
	}{
		{"deploy", g.deployCmd()},
		{"deploy", g.diffCmd()},
		{"rollout", g.rolloutsCmd()},
		{"rollout", g.rolloutCmd()},
		{"deploy", g.secretCmd()},
		{"fleet", g.statusCmd()},
		{"fleet", g.nodesCmd()},
		{"fleet", g.nodeCmd()},
		{"fleet", g.generationsCmd()},
		{"fleet", g.eventsCmd()},
		{"fleet", g.notificationsCmd()},
		{"node", g.rollbackCmd()},
		{"node", g.retryCmd()},
		{"admin", g.tokenCmd()},
	} {
		c.cmd.GroupID = c.group
		root.AddCommand(c.cmd)
	}
}

// client returns the API client, resolving the settings on first use.
func (g *globals) client() (*api.Client, error) {
	if g.api != nil {
		return g.api, nil
	}
	s, err := g.resolve()
	if err != nil {
		return nil, err
	}
	var opts []api.ClientOption
	if s.caFile != "" {
		opts = append(opts, api.WithCAFile(s.caFile))
	}
	c, err := api.NewClientServers(s.servers, s.token, opts...)
	if err != nil {
		if errors.Is(err, api.ErrCAFile) {
			return nil, withHint(fmt.Errorf("%s: %w", s.caFileFrom, err), "point --ca-file, SLIPWAY_CA_FILE or ca_file in the config file at a PEM file of CA certificates")
		}
		return nil, withHint(err, "set --server, SLIPWAY_SERVER or server in the config file to http://host:port, https://host:port or unix:///path")
	}
	g.settings, g.api = s, c
	return c, nil
}

// apiError wraps an error of an API call with op and a hint that knows the
// server address and where the token came from. notFound, if not empty, is
// the hint for api.ErrNotFound.
func (g *globals) apiError(op string, err error, notFound string) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", op, err)
	s := g.settings
	var oe *net.OpError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &ua) && s.caFile == "":
		return withHint(err, "give the CA that signed the server's certificate with --ca-file FILE, SLIPWAY_CA_FILE or ca_file in the config file")
	case errors.As(err, &ua):
		return withHint(err, fmt.Sprintf("the CA file from %s did not sign the server's certificate: check it, or the server address (%s)", s.caFileFrom, s.server))
	case errors.As(err, &oe) && oe.Op == "dial":
		return withHint(err, fmt.Sprintf("is slipway-server running at %s? (server from %s)", s.server, s.serverFrom))
	case errors.Is(err, api.ErrUnauthorized) && s.token == "":
		return withHint(fmt.Errorf("%w; no token was given", err),
			"set a token with --token-file FILE, SLIPWAY_TOKEN_FILE, token_file in the config file, or --token / SLIPWAY_TOKEN")
	case errors.Is(err, api.ErrUnauthorized):
		return withHint(err, fmt.Sprintf("the server did not accept the token from %s: check --token / SLIPWAY_TOKEN", s.tokenFrom))
	case errors.Is(err, api.ErrNotFound) && notFound != "":
		return withHint(err, notFound)
	}
	return err
}

const seeNodes = "see `slipway nodes`"

func (g *globals) writeJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// note prints a line for the operator on stderr.
func (g *globals) note(format string, args ...any) {
	fmt.Fprintf(g.stderr, format+"\n", args...)
}

// lockedWriter serialises writes: upload progress is written from the HTTP
// transport's goroutine.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// exactArgs is cobra.ExactArgs with a hint.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return withHint(cobra.ExactArgs(n)(cmd, args), "see `"+cmd.CommandPath()+" --help`")
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	return withHint(cobra.NoArgs(cmd, args), "see `"+cmd.CommandPath()+" --help`")
}

// complete completes the first argument with what list returns from the
// server; it stays silent when the server cannot be asked.
func (g *globals) complete(cmd *cobra.Command, args []string, list func(context.Context, *api.Client) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := g.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	out, err := list(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNodes completes node names (with their state).
func (g *globals) completeNodes(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return g.complete(cmd, args, func(ctx context.Context, c *api.Client) ([]string, error) {
		nodes, err := c.Nodes(ctx)
		names := make([]string, 0, len(nodes))
		for _, n := range nodes {
			names = append(names, n.Name+"\t"+n.State)
		}
		return names, err
	})
}
