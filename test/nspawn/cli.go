package nspawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// Usage is the help text of test/cmd/slipway-nodes.
const Usage = `usage: slipway-nodes up NAME... [--bind HOST:NODE[:ro]]... [--network private|veth|host]
       slipway-nodes exec NAME [--] CMD [ARG...]
       slipway-nodes list
       slipway-nodes down [NAME...]

Boots, enters, lists and stops detached systemd-nspawn nodes (a cached Debian
bookworm root, each node on a volatile overlay). Needs root.

  up    boot nodes and wait until each is running (console: RUN_DIR/NAME.log)
  exec  run a command in a node; its exit code is passed through
  list  list the nodes with their state
  down  stop the named nodes, or all of them (idempotent)

environment:
  SLIPWAY_NSPAWN_CACHE   root cache (default /var/cache/slipway/nspawn)
  SLIPWAY_NODES_RUN_DIR  pid files and console logs (default /run/slipway-nodes)
`

// ErrUsage is returned by RunCLI for a malformed command line.
var ErrUsage = errors.New("usage")

// RunCLI runs the slipway-nodes command line args (without the program
// name). A command run by exec that exits non-zero returns *ExitError with
// its code, for the caller to exit with.
func RunCLI(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("no command")
	}
	runDir := DefaultRunDir()
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		return cliUp(ctx, runDir, rest, stdout, stderr)
	case "exec":
		return cliExec(ctx, runDir, rest, stdin, stdout, stderr)
	case "list", "ls":
		if len(rest) > 0 {
			return usageError("list takes no arguments")
		}
		return cliList(ctx, runDir, stdout)
	case "down":
		return cliDown(ctx, runDir, rest, stdout)
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, Usage)
		return err
	default:
		return usageError("unknown command " + cmd)
	}
}

func usageError(msg string) error {
	return fmt.Errorf("%w: %s\n%s", ErrUsage, msg, strings.TrimRight(Usage, "\n"))
}

func cliUp(ctx context.Context, runDir string, args []string, stdout, stderr io.Writer) error {
	names, opts, err := parseUpArgs(args)
	if err != nil {
		return err
	}
	if _, err := nspawnArgs("/", names[0], opts); err != nil { // options check before the root build
		return err
	}
	if reason := Prerequisites(); reason != "" {
		return errors.New(reason)
	}
	for _, name := range names {
		if n, err := Attach(runDir, name); err == nil {
			return fmt.Errorf("node %s is already up (systemd-nspawn pid %d)", name, n.PID)
		}
	}
	root, err := EnsureRoot(ctx, "", prefixWriter{w: stderr, prefix: "slipway-nodes: "})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "booting %s from %s…\n", strings.Join(names, ", "), root)
	return upAll(ctx, root, runDir, names, opts, stdout)
}

// parseUpArgs reads up's arguments: --bind and --network (as --flag=value
// or --flag value) and at least one node name, each once.
func parseUpArgs(args []string) ([]string, Options, error) {
	var names []string
	var opts Options
	for i := 0; i < len(args); i++ {
		a := args[i]
		flag, value, hasValue := strings.Cut(a, "=")
		switch flag {
		case "--bind", "--network":
			if !hasValue {
				if i+1 >= len(args) {
					return nil, opts, usageError(flag + " needs a value")
				}
				i++
				value = args[i]
			}
			if flag == "--network" {
				opts.Network = value
				continue
			}
			b, err := parseBind(value)
			if err != nil {
				return nil, opts, usageError(err.Error())
			}
			opts.Binds = append(opts.Binds, b)
		default:
			if strings.HasPrefix(a, "-") {
				return nil, opts, usageError("unknown flag " + a)
			}
			if err := validName(a); err != nil {
				return nil, opts, err
			}
			if !slices.Contains(names, a) {
				names = append(names, a)
			}
		}
	}
	if len(names) == 0 {
		return nil, opts, usageError("up needs at least one node name")
	}
	return names, opts, nil
}

// upAll boots the nodes side by side from root, printing a line for each
// one running; the errors of the others are joined.
func upAll(ctx context.Context, root, runDir string, names []string, opts Options, stdout io.Writer) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, name := range names {
		wg.Go(func() {
			start := time.Now()
			err := upOne(ctx, root, runDir, name, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			fmt.Fprintf(stdout, "%s: running after %s (console %s)\n", name,
				time.Since(start).Round(100*time.Millisecond), filepath.Join(runDir, name+".log"))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// upOne boots one detached node and waits until it runs; a node that does
// not get there is stopped again (its console log stays).
func upOne(ctx context.Context, root, runDir, name string, opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	n, err := BootDetached(ctx, root, runDir, name, opts)
	if err != nil {
		return err
	}
	if err := n.WaitRunning(ctx); err != nil {
		sctx, scancel := context.WithTimeout(context.Background(), DefaultStopTimeout)
		defer scancel()
		_ = n.Stop(sctx)
		return fmt.Errorf("%w (console %s)", err, n.ConsolePath())
	}
	return nil
}

// parseBind parses HOST:NODE[:ro|:rw]. A relative HOST is taken from the
// working directory.
func parseBind(s string) (Bind, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Bind{}, fmt.Errorf("bind %q: want HOST:NODE[:ro]", s)
	}
	host, err := filepath.Abs(parts[0])
	if err != nil {
		return Bind{}, fmt.Errorf("bind %q: %w", s, err)
	}
	b := Bind{Host: host, Node: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			b.ReadOnly = true
		case "rw":
		default:
			return Bind{}, fmt.Errorf("bind %q: unknown mode %q (want ro or rw)", s, parts[2])
		}
	}
	if !filepath.IsAbs(b.Node) {
		return Bind{}, fmt.Errorf("bind %q: the node path must be absolute", s)
	}
	return b, nil
}

func cliExec(ctx context.Context, runDir string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("exec needs a node name")
	}
	name, argv := args[0], args[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError("exec needs a command")
	}
	n, err := Attach(runDir, name)
	if err != nil {
		return err
	}
	cmd := n.Command(ctx, argv...)
	if term := os.Getenv("TERM"); term != "" {
		cmd.Env = append(cmd.Env, "TERM="+term)
	}
	// Stay in the terminal's foreground process group, so that an
	// interactive shell in the node can read from it.
	cmd.SysProcAttr.Setpgid = false
	cmd.Cancel = nil
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return &ExitError{Node: name, Argv: argv, Code: code}
	}
	if err != nil {
		return fmt.Errorf("node %s: %s: %w", name, argv[0], err)
	}
	return nil
}

func cliList(ctx context.Context, runDir string, stdout io.Writer) error {
	names, err := DetachedNames(runDir)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPID\tLEADER\tSTATE\tCONSOLE")
	for _, name := range names {
		console := filepath.Join(runDir, name+".log")
		n, err := Attach(runDir, name)
		if errors.Is(err, ErrNotRunning) {
			fmt.Fprintf(tw, "%s\t-\t-\tstopped (stale pid file)\t%s\n", name, console)
			continue
		}
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t%v\t%s\n", name, err, console)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, _, _ := n.Exec(sctx, "systemctl", "is-system-running")
		cancel()
		state := strings.TrimSpace(out)
		if state == "" {
			state = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", name, n.PID, n.Leader, state, console)
	}
	return tw.Flush()
}

func cliDown(ctx context.Context, runDir string, names []string, stdout io.Writer) error {
	if len(names) == 0 {
		var err error
		if names, err = DetachedNames(runDir); err != nil {
			return err
		}
	}
	var errs []error
	for _, name := range names {
		if err := validName(name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := StopDetached(ctx, runDir, name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: down\n", name)
	}
	return errors.Join(errs...)
}

// prefixWriter prefixes every write (a line, from EnsureRoot) with prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}
