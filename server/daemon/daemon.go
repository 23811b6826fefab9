// Package daemon wires slipway-server together: config, the bbolt store,
// the blob store, the registry and the HTTP API on a TCP address (admin and
// agents) and optionally a unix socket (agents on the same machine or in
// containers it is bind-mounted into). It shuts down gracefully when its
// context ends. It is also the server's command line.
//
// It never logs tokens or configuration values that hold secrets.
package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store/boltstore"
)

// Version is set at build time.
var Version = "dev"

// Ready, when set, is called once the listeners are open (tests, sd_notify).
type Options struct {
	Spec  []byte
	Ready func(addr string)
}

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, c config.Server, log zerolog.Logger, opts Options) error {
	if err := c.Validate(); err != nil {
		return err
	}
	tokens, err := adminTokens(c.AdminTokens)
	if err != nil {
		return err
	}
	if len(tokens) == 0 {
		log.Warn().Msg("no admin tokens configured: the admin API refuses every call (add [[admin_token]] to the config)")
	}
	if err := os.MkdirAll(c.StateDir, 0o750); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	st, err := boltstore.Open(filepath.Join(c.StateDir, "store.db"), boltstore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := blobstore.Open(filepath.Join(c.StateDir, "blobs"))
	if err != nil {
		return err
	}
	reg := registry.New(st, blobs, registry.Config{OfflineAfter: time.Duration(c.OfflineAfter), DriftAfter: time.Duration(c.DriftAfter)}, log)
	h := httpapi.New(reg, blobs, tokens, opts.Spec, log)

	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	var lns []net.Listener
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	lns = append(lns, ln)
	if c.AgentSocket != "" {
		if err := os.MkdirAll(filepath.Dir(c.AgentSocket), 0o755); err != nil {
			return err
		}
		_ = os.Remove(c.AgentSocket)
		uln, err := net.Listen("unix", c.AgentSocket)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s: %w", c.AgentSocket, err)
		}
		lns = append(lns, uln)
	}
	errc := make(chan error, len(lns))
	for _, l := range lns {
		go func() { errc <- srv.Serve(l) }()
	}
	log.Info().Str("listen", ln.Addr().String()).Str("agent_socket", c.AgentSocket).Str("state_dir", c.StateDir).Int("admin_tokens", len(tokens)).Str("version", Version).Msg("slipway-server ready")
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	}
	log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Long-polls end with their request context (BaseContext is ctx).
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
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

// Logger builds the server's logger: JSON, or console format on a TTY.
func Logger(w io.Writer, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	console := format == "console"
	if f, ok := w.(*os.File); ok && format == "auto" && isatty.IsTerminal(f.Fd()) {
		console = true
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("component", "slipway-server").Logger()
}

// Run is slipway-server's command line.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, spec []byte) error {
	var cfgPath, listen, socket, stateDir, level, format string
	root := &cobra.Command{
		Use:           "slipway-server",
		Short:         "The Slipway coordinator: publishes each node's desired generation, confirms switches, keeps the fleet's state",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, explicit := cfgPath, cfgPath != ""
			if !explicit {
				path = config.DefaultPath
			}
			c, err := config.Load(path, explicit)
			if err != nil {
				return err
			}
			for _, o := range []struct {
				flag string
				dst  *string
				val  string
			}{{"listen", &c.Listen, listen}, {"agent-socket", &c.AgentSocket, socket}, {"state-dir", &c.StateDir, stateDir}, {"log-level", &c.LogLevel, level}} {
				if cmd.Flags().Changed(o.flag) {
					*o.dst = o.val
				}
			}
			return Serve(cmd.Context(), c, Logger(stderr, c.LogLevel, format), Options{Spec: spec})
		},
	}
	f := root.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (default "+config.DefaultPath+" if present)")
	f.StringVar(&listen, "listen", config.DefaultListen, "address of the API")
	f.StringVar(&socket, "agent-socket", "", "also serve the API on this unix socket (for agents)")
	f.StringVar(&stateDir, "state-dir", "/var/lib/slipway-server", "directory for store.db and blobs/")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&format, "log-format", "auto", "auto, json or console")
	root.AddCommand(&cobra.Command{
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
	})
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}
