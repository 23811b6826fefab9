package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Detached nodes outlive the process that booted them (test/cmd/slipway-nodes
// boots them for `make demo` and for humans). Each has, in its run directory,
// NAME.pid (the PID of its systemd-nspawn process) and NAME.log (its
// console).

// DefaultRunDir returns the run directory of detached nodes:
// $SLIPWAY_NODES_RUN_DIR, else /run/slipway-nodes.
func DefaultRunDir() string {
	if d := os.Getenv("SLIPWAY_NODES_RUN_DIR"); d != "" {
		return d
	}
	return "/run/slipway-nodes"
}

// BootDetached boots a node like Boot, but in a session of its own that
// outlives this process, with its console in runDir/NAME.log and the PID
// of systemd-nspawn in runDir/NAME.pid. It returns once the node's PID 1
// runs systemd. Booting a name that is already up is an error.
func BootDetached(ctx context.Context, root, runDir, name string, opts Options) (*Node, error) {
	args, err := nspawnArgs(root, name, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	if n, err := Attach(runDir, name); err == nil {
		return nil, fmt.Errorf("boot node %s: already up (systemd-nspawn pid %d)", name, n.PID)
	}
	logPath := filepath.Join(runDir, name+".log")
	console, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	defer console.Close()
	cmd, cgroups, err := nspawnCommand(name, args)
	if err != nil {
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = removeCgroups(cgroups)
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	n := newNode(name, cmd.Process.Pid, logPath, opts)
	n.pidFile = pidFile(runDir, name)
	n.cgroups = cgroups
	// Not waited for: once this process exits, systemd-nspawn belongs to
	// the host's init. Until then a dead one is a zombie, which alive
	// reports as gone.
	_ = cmd.Process.Release()
	if err := writeFileAtomic(n.pidFile, []byte(strconv.Itoa(n.PID)+"\n")); err != nil {
		n.kill()
		n.cleanup(context.Background())
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	if err := n.waitLeader(ctx); err != nil {
		n.kill()
		_ = os.Remove(n.pidFile)
		n.cleanup(context.Background())
		return nil, fmt.Errorf("boot node %s: %w", name, err)
	}
	return n, nil
}

// Attach returns a detached node booted by BootDetached (in this process or
// another one) from its pid file in runDir. It returns an error wrapping
// ErrNotRunning if the node is not up (no pid file, or a stale one).
func Attach(runDir, name string) (*Node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	path := pidFile(runDir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node %s: %w", name, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("node %s: malformed pid file %s", name, path)
	}
	if !alive(pid) || !isNspawnFor(pid, name) {
		return nil, fmt.Errorf("node %s: %w (stale pid file %s)", name, ErrNotRunning, path)
	}
	n := newNode(name, pid, filepath.Join(runDir, name+".log"), Options{})
	n.pidFile = path
	n.cgroups = cgroupsOf(pid, name)
	leader, err := findLeader(pid)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	if leader == 0 {
		return nil, fmt.Errorf("node %s: systemd-nspawn (pid %d) runs no systemd yet", name, pid)
	}
	n.Leader = leader
	return n, nil
}

// isNspawnFor reports whether pid is the systemd-nspawn process of node
// name (and not some other process that reuses a stale PID).
func isNspawnFor(pid int, name string) bool {
	args, err := cmdline(pid)
	if err != nil || len(args) == 0 || filepath.Base(args[0]) != "systemd-nspawn" {
		return false
	}
	return slices.Contains(args, "--machine="+name)
}

// DetachedNames returns the names of the detached nodes that have a pid file
// in runDir (up, or stale), sorted.
func DetachedNames(runDir string) ([]string, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".pid"); ok && validName(name) == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// StopDetached stops the detached node name and removes its pid file. A
// node that is not up (no pid file, or a stale one) is not an error: its
// pid file is removed. The console log stays for a post-mortem.
func StopDetached(ctx context.Context, runDir, name string) error {
	n, err := Attach(runDir, name)
	if errors.Is(err, ErrNotRunning) {
		if err := os.Remove(pidFile(runDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node %s: %w", name, err)
		}
		removePropagateDir(name)
		return nil
	}
	if err != nil {
		return err
	}
	return n.Stop(ctx)
}

func pidFile(runDir, name string) string { return filepath.Join(runDir, name+".pid") }

// writeFileAtomic writes path through a temporary file in the same
// directory, fsync and rename, so that readers never see half a file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
