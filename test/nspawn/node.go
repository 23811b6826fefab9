package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Network modes of a node.
const (
	// NetworkPrivate gives the node a network namespace with only its own
	// loopback interface (the default).
	NetworkPrivate = "private"
	// NetworkVeth adds a veth pair: the node gets host0, the host a ve-…
	// link that nothing configures. Meant for partition tests that put
	// the host end into a namespace of their own.
	NetworkVeth = "veth"
	// NetworkHost shares the host's network namespace. For humans only:
	// tests must not use it.
	NetworkHost = "host"
	// NetworkNamespacePrefix + a path (e.g. "netns:/run/netns/slipway-tn")
	// joins an existing network namespace the test created: nodes joining
	// the same one share its loopback with each other and with the test
	// process if it runs there too (test/tailnet).
	NetworkNamespacePrefix = "netns:"
)

// DefaultStopTimeout is how long Stop waits for a node to power off before
// it kills it. Nodes stop units after at most 10 s (DefaultTimeoutStopSec in
// the root), so a healthy node is well within it.
const DefaultStopTimeout = 30 * time.Second

// nodePath is the PATH of every command run in a node.
const nodePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNotRunning is returned by Attach (and by operations on a node) when the
// node's systemd-nspawn process is gone.
var ErrNotRunning = errors.New("node is not running")

// Bind is a directory or file of the host made visible in a node.
type Bind struct {
	Host     string // absolute path on the host
	Node     string // absolute path in the node
	ReadOnly bool
}

// Options are the ways to boot a node. The zero value is a node with a
// private network and no binds.
type Options struct {
	Binds []Bind
	// Network is NetworkPrivate (""), NetworkVeth, NetworkHost or
	// NetworkNamespacePrefix + the path of a network namespace.
	Network string
	// Env is added to the environment of every command run in the node
	// with Exec, Start and Command ("KEY=value"; PATH is set already).
	Env []string
	// Console is the file the node's console (systemd-nspawn's output) is
	// written to. Empty: a new file in os.TempDir(). Ignored by
	// BootDetached, which writes it in its run directory.
	Console string
	// StopTimeout bounds the orderly power-off in Stop (default
	// DefaultStopTimeout).
	StopTimeout time.Duration
}

// Node is a booted systemd-nspawn container.
type Node struct {
	// Name is the machine name, also the node's host name.
	Name string
	// Leader is the host PID of the node's PID 1 (systemd).
	Leader int
	// PID is the host PID of the systemd-nspawn process.
	PID int

	env         []string
	console     string
	stopTimeout time.Duration

	// exited is closed when systemd-nspawn has exited, for nodes this
	// process started and waits for; nil for detached and attached nodes,
	// which are watched through /proc.
	exited  chan struct{}
	waitErr error
	// pidFile is the pid file of a detached node, removed by Stop.
	pidFile string
	// cgroups are the node's own cgroups (see cgroup.go), removed by Stop.
	cgroups []string

	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

// ExitError is returned by Exec when the command ran and exited non-zero
// (or was killed by a signal: Code is then -1).
type ExitError struct {
	Node   string
	Argv   []string
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("node %s: %s: exit status %d", e.Node, strings.Join(e.Argv, " "), e.Code)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// Boot starts a node named name from root (see EnsureRoot) and returns once
// the node's PID 1 runs systemd; use WaitRunning to wait for the boot to
// finish. ctx bounds only that wait, not the node's life: the node runs
// until Stop, or until this process dies (systemd-nspawn gets SIGTERM then
// and powers the node off).
func Boot(ctx context.Context, root, name string, opts Options) (*Node, error) {
	args, err := nspawnArgs(root, name, opts)
	if err != nil {
		return nil, err
	}
	var console *os.File
	if opts.Console != "" {
		console, err = os.OpenFile(opts.Console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	} else {
		console, err = os.CreateTemp("", "slipway-node-"+name+"-*.log")
	}
	if err != nil {
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	defer console.Close() // systemd-nspawn has its own descriptor
	booted := false
	if opts.Console == "" {
		defer func() {
			if !booted {
				os.Remove(console.Name())
			}
		}()
	}
	cmd, cgroups, err := nspawnCommand(name, args)
	if err != nil {
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	cmd.Stdout = console
	cmd.Stderr = console
	// Own process group, so that a kill reaches nothing else; SIGTERM if
	// this process dies, which systemd-nspawn turns into an orderly
	// shutdown of the node. (Pdeathsig follows the thread that started
	// the process; the Go runtime keeps that thread alive in practice.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = removeCgroups(cgroups)
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	n := newNode(name, cmd.Process.Pid, console.Name(), opts)
	n.cgroups = cgroups
	n.exited = make(chan struct{})
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	if err := n.waitLeader(ctx); err != nil {
		n.kill()
		<-n.exited
		n.cleanup(context.Background())
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	booted = true
	return n, nil
}

func newNode(name string, pid int, console string, opts Options) *Node {
	timeout := opts.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	return &Node{
		Name:        name,
		PID:         pid,
		env:         append([]string{nodePath}, opts.Env...),
		console:     console,
		stopTimeout: timeout,
	}
}

// nspawnArgs returns the systemd-nspawn arguments for a node.
func nspawnArgs(root, name string, opts Options) ([]string, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("node root %q is not an absolute path", root)
	}
	args := []string{
		// The host has no systemd bus: do not register with machined
		// and do not move into a scope unit of our own.
		"--register=no", "--keep-unit",
		// Ignore any .nspawn files of the host; do not link the
		// journal into the host's /var/log/journal; do not copy the
		// host's resolv.conf or time zone in.
		"--settings=no", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
		// Every write of the node goes to a tmpfs overlay: the cached
		// root stays pristine and nodes share nothing.
		"--volatile=overlay",
		"--console=read-only",
		"--directory=" + root,
		"--machine=" + name,
	}
	switch opts.Network {
	case "", NetworkPrivate:
		args = append(args, "--private-network")
	case NetworkVeth:
		args = append(args, "--network-veth")
	case NetworkHost:
	default:
		if p, ok := strings.CutPrefix(opts.Network, NetworkNamespacePrefix); ok && filepath.IsAbs(p) {
			args = append(args, "--network-namespace-path="+p)
			break
		}
		return nil, fmt.Errorf("node %s: unknown network %q (want %s, %s or %s)", name, opts.Network, NetworkPrivate, NetworkVeth, NetworkHost)
	}
	for _, b := range opts.Binds {
		if !filepath.IsAbs(b.Host) || !filepath.IsAbs(b.Node) {
			return nil, fmt.Errorf("node %s: bind %s:%s: both paths must be absolute", name, b.Host, b.Node)
		}
		if strings.ContainsAny(b.Host+b.Node, ":,") {
			return nil, fmt.Errorf("node %s: bind %s:%s: paths must not contain ':' or ','", name, b.Host, b.Node)
		}
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		args = append(args, flag+filepath.Clean(b.Host)+":"+filepath.Clean(b.Node))
	}
	return append(args, "--boot"), nil
}

// validName checks that name is a usable machine and host name: 1 to 64
// characters out of a-z, 0-9 and '-', not starting or ending with '-'.
func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("node name %q: must be 1 to 64 characters long", name)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("node name %q: only a-z, 0-9 and '-' are allowed", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("node name %q: must not start or end with '-'", name)
	}
	return nil
}

// waitLeader waits until the node's PID 1 runs systemd and sets Leader.
func (n *Node) waitLeader(ctx context.Context) error {
	for {
		if !n.running() {
			return fmt.Errorf("systemd-nspawn exited before the node booted%s; console:\n%s", n.exitReason(), n.consoleTail(40))
		}
		pid, err := findLeader(n.PID)
		if err != nil && n.running() {
			return fmt.Errorf("find the node's PID 1: %w", err)
		}
		if pid != 0 {
			n.Leader = pid
			return nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the node's PID 1: %w; console:\n%s", err, n.consoleTail(40))
		}
	}
}

// running reports whether systemd-nspawn still runs.
func (n *Node) running() bool {
	if n.exited != nil {
		select {
		case <-n.exited:
			return false
		default:
			return true
		}
	}
	return alive(n.PID)
}

func (n *Node) exitReason() string {
	if n.exited != nil && n.waitErr != nil {
		select {
		case <-n.exited:
			return " (" + n.waitErr.Error() + ")"
		default:
		}
	}
	return ""
}

// WaitRunning waits until systemd in the node has finished booting and
// returns nil if the system state is "running". A "degraded" node is an
// error that lists the failed units.
func (n *Node) WaitRunning(ctx context.Context) error {
	for {
		if !n.running() {
			return fmt.Errorf("node %s: %w%s; console:\n%s", n.Name, ErrNotRunning, n.exitReason(), n.consoleTail(40))
		}
		out, _, err := n.Exec(ctx, "systemctl", "is-system-running", "--wait")
		state := strings.TrimSpace(out)
		switch {
		case state == "running":
			return nil
		case state == "degraded":
			failed, _, _ := n.Exec(ctx, "systemctl", "--failed", "--no-pager", "--no-legend", "--plain")
			return fmt.Errorf("node %s: system is degraded; failed units:\n%s", n.Name, strings.TrimSpace(failed))
		case ctx.Err() != nil:
			return fmt.Errorf("node %s: wait for running (last state %q, %v): %w", n.Name, state, err, ctx.Err())
		}
		// Not up far enough to answer yet ("offline", no socket), or on
		// the way down: look again.
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("node %s: wait for running (last state %q): %w", n.Name, state, err)
		}
	}
}

// Command returns a command that runs argv in the node (through
// nsenter -a -r -w: all of the node's namespaces, and its root and working
// directory) with a clean environment: PATH plus Options.Env. The caller
// sets its input and output and runs it. It runs in a process group of its
// own, which ctx ending kills.
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	// -r and -w are not implied by -a. Entering the mount namespace alone
	// sets the root to that namespace's root mount, which is the node's
	// root only when systemd-nspawn ran in a process whose root is a mount
	// namespace's root: run from a chroot (make fresh-check), the node's
	// root is stacked on the chroot's directory instead, and the command
	// would see the host's root ("offline" from systemctl, which then
	// thinks it runs in a chroot).
	args := append([]string{"-t", strconv.Itoa(n.Leader), "-a", "-r", "-w", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = append([]string(nil), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// nsenter forks to enter the PID namespace: kill the whole group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Exec runs argv in the node and returns its output. A command that exits
// non-zero returns *ExitError.
func (n *Node) Exec(ctx context.Context, argv ...string) (stdout, stderr string, err error) {
	if len(argv) == 0 {
		return "", "", fmt.Errorf("node %s: exec: no command", n.Name)
	}
	var out, errOut bytes.Buffer
	cmd := n.Command(ctx, argv...)
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("node %s: %s: %w", n.Name, strings.Join(argv, " "), ctx.Err())
	case errors.As(err, &ee):
		err = &ExitError{Node: n.Name, Argv: argv, Code: ee.ExitCode(), Stderr: errOut.String()}
	default:
		err = fmt.Errorf("node %s: %s: %w", n.Name, strings.Join(argv, " "), err)
	}
	return out.String(), errOut.String(), err
}

// Start starts argv in the node in the background and returns the running
// command; the caller waits for it (or not: it dies with the node, or when
// ctx ends). Its output is appended to the console log.
func (n *Node) Start(ctx context.Context, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("node %s: start: no command", n.Name)
	}
	log, err := os.OpenFile(n.console, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("node %s: start %s: %w", n.Name, argv[0], err)
	}
	defer log.Close()
	cmd := n.Command(ctx, argv...)
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node %s: start %s: %w", n.Name, argv[0], err)
	}
	return cmd, nil
}

// ReadFile reads a file of the node. path is resolved inside the node's
// root, symlinks included.
func (n *Node) ReadFile(path string) ([]byte, error) {
	f, err := openInRoot(n.Leader, path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return b, nil
}

// WriteFile writes a file in the node (into its overlay; the cached root
// does not change), creating or truncating it. path is resolved inside the
// node's root; its directory must exist.
func (n *Node) WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := openInRoot(n.Leader, path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, uint32(perm.Perm()))
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// Stop powers the node off (systemctl poweroff inside, or systemd-nspawn's
// orderly halt if that cannot run) and waits for systemd-nspawn to exit; a
// node still up after the stop timeout, or when ctx ends, is killed, and
// Stop says so in its error. Stop is idempotent: later calls return the
// first call's result.
func (n *Node) Stop(ctx context.Context) error {
	n.stopMu.Lock()
	defer n.stopMu.Unlock()
	if !n.stopped {
		n.stopErr = n.stop(ctx)
		n.stopped = true
	}
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) error {
	var err error
	if n.running() {
		n.endJoined(ctx)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, perr := n.Exec(pctx, "systemctl", "poweroff", "--no-block")
		cancel()
		if perr != nil {
			// systemd-nspawn turns SIGTERM into SIGRTMIN+3 for the
			// node's systemd: an orderly halt.
			_ = syscall.Kill(n.PID, syscall.SIGTERM)
		}
		wctx, cancel := context.WithTimeout(ctx, n.stopTimeout)
		ok := n.waitExit(wctx)
		cancel()
		if !ok {
			n.kill()
			kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ok = n.waitExit(kctx)
			cancel()
			err = fmt.Errorf("node %s: did not power off within %s; killed", n.Name, n.stopTimeout)
			if !ok {
				err = fmt.Errorf("node %s: did not power off within %s and survived SIGKILL (systemd-nspawn pid %d)", n.Name, n.stopTimeout, n.PID)
			}
		}
	}
	n.cleanup(ctx)
	if n.pidFile != "" {
		if rerr := os.Remove(n.pidFile); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("node %s: %w", n.Name, rerr)
		}
	}
	return err
}

// endJoined ends the processes that Command started in the node (from this
// process or another one) before the node powers off: SIGTERM, then
// SIGKILL after joinedGrace. Their parent (nsenter) is outside the node, so
// the node's systemd would not see them go and would wait for them until
// its stop timeout. An nsenter that has not started its command yet is
// waited for, so that a command started just before Stop is ended too.
func (n *Node) endJoined(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, joinedGrace)
	defer cancel()
	termed := map[int]bool{}
	for {
		js := joiners(n.Leader)
		if len(js) == 0 {
			return
		}
		for _, j := range js {
			for _, pid := range j.children {
				if !termed[pid] {
					_ = syscall.Kill(pid, syscall.SIGTERM)
					termed[pid] = true
				}
			}
		}
		if sleepCtx(ctx, 20*time.Millisecond) != nil {
			for _, j := range joiners(n.Leader) {
				for _, pid := range j.children {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				_ = syscall.Kill(j.pid, syscall.SIGKILL)
			}
			return
		}
	}
}

// joinedGrace is how long processes started in a node get to exit on
// SIGTERM when the node stops.
const joinedGrace = 3 * time.Second

// waitExit waits until systemd-nspawn has exited; false if ctx ended first.
//
// While it waits it resumes stopped nsenter processes of this node: on
// shutdown, systemd stops every process in the node (kill(-1, SIGSTOP))
// before it signals them, nsenter mirrors its child's stop onto itself,
// and nothing in the node can continue it. A process whose parent is a
// stopped nsenter is never reaped, and a PID namespace does not go away
// before all its processes are reaped: the node would never exit.
func (n *Node) waitExit(ctx context.Context) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if !n.running() {
			return true
		}
		continueJoiners(n.Leader)
		select {
		case <-n.exited: // nil for detached nodes: never ready
			return true
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// kill ends the node at once: SIGKILL for its PID 1, which takes every
// process of the node with it (killing systemd-nspawn alone would not), then
// for systemd-nspawn's process group.
func (n *Node) kill() {
	if pid, _ := containerInit(n.PID, false); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if n.running() {
		_ = syscall.Kill(-n.PID, syscall.SIGKILL)
	}
}

// cleanup removes what a node leaves on the host after it has exited.
func (n *Node) cleanup(ctx context.Context) {
	removePropagateDir(n.Name)
	removeCgroupsEventually(ctx, n.cgroups)
}

// removePropagateDir removes the mount propagation directory that
// systemd-nspawn keeps for a running node, if systemd-nspawn could not
// (it was killed, or /run is not a tmpfs). os.Remove removes only an empty
// directory; anything else is left alone.
func removePropagateDir(name string) {
	_ = os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
}

// ConsoleLog returns the node's console output so far (systemd-nspawn's
// output: the boot and shutdown messages, and the output of Start).
func (n *Node) ConsoleLog() string {
	b, err := os.ReadFile(n.console)
	if err != nil {
		return fmt.Sprintf("(console log unavailable: %v)", err)
	}
	return string(b)
}

// ConsolePath returns the path of the node's console log.
func (n *Node) ConsolePath() string { return n.console }

// consoleTail returns the last lines of the console log.
func (n *Node) consoleTail(lines int) string {
	t := &tailBuffer{max: lines}
	_, _ = io.WriteString(t, n.ConsoleLog())
	return t.String()
}
