package nspawn

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The root recipe. Everything that changes the content of the root is part
// of recipeKey, so a change here builds a new root beside the old one instead
// of reusing a stale cache.
const (
	suite   = "bookworm"
	variant = "minbase"
	mirror  = "http://deb.debian.org/debian"

	// postSetupVersion names the version of postSetup. Bump it whenever
	// postSetup changes what it writes.
	postSetupVersion = "3"

	// rootMarker is written last into a complete root, before the rename.
	rootMarker = ".slipway-nspawn-root"
)

// includes are the packages added to the minbase variant: systemd as init,
// dbus for the agent's systemd connection, iproute2 for network tests,
// ca-certificates for HTTPS artifact fetches.
var includes = []string{"systemd", "dbus", "systemd-sysv", "iproute2", "ca-certificates"}

// aptPackages are installed with apt-get in a chroot after debootstrap:
// nix-bin for the NixOS driver's end-to-end test (a real Nix store and
// system profile in the node). debootstrap's own --include cannot take it
// (its perl dependencies fail to configure in debootstrap's order).
var aptPackages = []string{"nix-bin"}

// maskedUnits are masked in the root (linked to /dev/null). None of them
// fails in a container, but each either does work that has no place in a
// short-lived test node or writes noise on the console:
//
//   - apt-daily*.timer, dpkg-db-backup.timer: would start apt or dpkg jobs
//     in the middle of a test (Persistent=true fires them soon after boot,
//     since a volatile node never remembers the last run).
//   - e2scrub_all.timer, e2scrub_reap.service, fstrim.timer: file system
//     maintenance for block devices a container does not have.
//   - systemd-timesyncd.service: the host owns the clock (not in minbase,
//     masked in case a later recipe pulls it in).
//   - console-getty.service, getty@.service: the console is read-only for
//     the harness; a login prompt only clutters the console log.
var maskedUnits = []string{
	"apt-daily.timer",
	"apt-daily-upgrade.timer",
	"dpkg-db-backup.timer",
	"e2scrub_all.timer",
	"e2scrub_reap.service",
	"fstrim.timer",
	"systemd-timesyncd.service",
	"console-getty.service",
	"getty@.service",
}

// managerConf goes to /etc/systemd/system.conf.d/ in the root.
const managerConf = `# Written by the slipway node harness (test/nspawn).
[Manager]
# A node's shutdown must be quick: tests stop nodes in their cleanup.
DefaultTimeoutStopSec=10s
# The console is a log file; keep it free of escape sequences.
LogColor=no
`

// hostsFile replaces the host's /etc/hosts that debootstrap copies in.
const hostsFile = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
`

// DefaultCacheDir returns the directory roots are cached in: $SLIPWAY_NSPAWN_CACHE,
// else /var/cache/slipway/nspawn.
func DefaultCacheDir() string {
	if d := os.Getenv("SLIPWAY_NSPAWN_CACHE"); d != "" {
		return d
	}
	return "/var/cache/slipway/nspawn"
}

// debootstrapArgs returns the debootstrap arguments for building into target.
func debootstrapArgs(target string) []string {
	return []string{
		"--variant=" + variant,
		"--arch=" + debArch(),
		"--include=" + strings.Join(includes, ","),
		suite, target, mirror,
	}
}

// debArch maps the Go architecture to Debian's name for it.
func debArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	default:
		return runtime.GOARCH // amd64, arm64, riscv64, s390x
	}
}

// recipeKey names the root a recipe builds: suite and the first 12 hex
// digits of a hash over the debootstrap arguments and the post-setup version.
func recipeKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "debootstrap %s\n", strings.Join(debootstrapArgs("TARGET"), " "))
	fmt.Fprintf(h, "apt-get install %s\n", strings.Join(aptPackages, " "))
	fmt.Fprintf(h, "post-setup %s\n", postSetupVersion)
	fmt.Fprintf(h, "masked %s\n", strings.Join(maskedUnits, " "))
	fmt.Fprintf(h, "manager.conf %q\nhosts %q\n", managerConf, hostsFile)
	return suite + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// EnsureRoot returns the path of the cached node root in cacheDir (""
// means DefaultCacheDir()), building it with debootstrap first if it is not
// there. The root is built in a temporary directory beside its final place
// and renamed into place only when complete, so a killed build never leaves
// a half root behind; concurrent callers (other test binaries too) are
// serialised by an flock on cacheDir/.lock. Progress lines go to progress
// (nil discards them). If debootstrap fails, the error carries the tail of
// its output; the whole output stays in cacheDir/<key>.log.
func EnsureRoot(ctx context.Context, cacheDir string, progress io.Writer) (string, error) {
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	if progress == nil {
		progress = io.Discard
	}
	key := recipeKey()
	final := filepath.Join(cacheDir, key)
	if complete(final) {
		return final, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("node root: %w", err)
	}
	unlock, err := lockDir(ctx, cacheDir, progress)
	if err != nil {
		return "", fmt.Errorf("node root: %w", err)
	}
	defer unlock()
	if complete(final) { // built by whoever held the lock before us
		return final, nil
	}
	if err := removeStaleBuilds(cacheDir); err != nil {
		return "", fmt.Errorf("node root: %w", err)
	}
	if _, err := os.Stat(final); err == nil {
		// A directory without the marker is not ours to trust or reuse.
		if err := removeTree(final); err != nil {
			return "", fmt.Errorf("node root: remove incomplete %s: %w", final, err)
		}
	}
	tmp := filepath.Join(cacheDir, ".build-"+key+"-"+randomHex(4))
	start := time.Now()
	io.WriteString(progress, fmt.Sprintf("building node root with debootstrap (first run, ~1 min)… %s\n", final))
	if err := build(ctx, tmp, filepath.Join(cacheDir, key+".log")); err != nil {
		if rerr := removeTree(tmp); rerr != nil {
			err = fmt.Errorf("%w (and removing the partial root: %v)", err, rerr)
		}
		return "", fmt.Errorf("node root: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = removeTree(tmp)
		return "", fmt.Errorf("node root: %w", err)
	}
	if err := syncDir(cacheDir); err != nil {
		return "", fmt.Errorf("node root: %w", err)
	}
	io.WriteString(progress, fmt.Sprintf("node root ready in %s: %s\n", time.Since(start).Round(100*time.Millisecond), final))
	return final, nil
}

// complete reports whether root is a finished root (carries the marker).
func complete(root string) bool {
	_, err := os.Stat(filepath.Join(root, rootMarker))
	return err == nil
}

// lockDir takes an exclusive flock on dir/.lock, polling so that ctx can end
// the wait. The returned func releases it.
func lockDir(ctx context.Context, dir string, progress io.Writer) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if !said {
			io.WriteString(progress, fmt.Sprintf("waiting for another process building the node root (%s)…\n", f.Name()))
			said = true
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
	}
}

// removeStaleBuilds removes the temporary build directories of builds that
// were killed. The caller holds the lock, so no build is running.
func removeStaleBuilds(cacheDir string) error {
	stale, err := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	if err != nil {
		return err
	}
	for _, dir := range stale {
		if err := removeTree(dir); err != nil {
			return fmt.Errorf("remove stale build %s: %w", dir, err)
		}
	}
	return nil
}

// build runs debootstrap into tmp and then postSetup. The debootstrap output
// goes to logPath.
func build(ctx context.Context, tmp, logPath string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap is not installed (Debian package debootstrap): %w", err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	tail := &tailBuffer{max: 30}
	cmd := exec.CommandContext(ctx, "debootstrap", debootstrapArgs(tmp)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C",
		"DEBIAN_FRONTEND=noninteractive",
	}
	cmd.Stdout = io.MultiWriter(logFile, tail)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// SIGTERM first: debootstrap's exit trap unmounts what it mounted in
	// the target.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("debootstrap %s: %w; last output (full log %s):\n%s",
			strings.Join(cmd.Args[1:], " "), err, logPath, tail.String())
	}
	if err := aptInstall(ctx, tmp, cmd.Env, cmd.Stdout, tail, logPath); err != nil {
		return err
	}
	if err := postSetup(tmp); err != nil {
		return fmt.Errorf("post-setup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, rootMarker), []byte(recipeKey()+"\n"), 0o644); err != nil {
		return err
	}
	return syncDir(tmp)
}

// aptInstall installs aptPackages into root with apt-get in a chroot (from
// the same Debian mirror debootstrap used); a policy-rc.d keeps their
// services from starting during the build.
func aptInstall(ctx context.Context, root string, env []string, out io.Writer, tail *tailBuffer, logPath string) error {
	if len(aptPackages) == 0 {
		return nil
	}
	policy := filepath.Join(root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	defer os.Remove(policy)
	for _, args := range [][]string{
		{"apt-get", "update"},
		append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, aptPackages...),
		{"apt-get", "clean"},
	} {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("chroot %s %s: %w; last output (full log %s):\n%s", root, strings.Join(args, " "), err, logPath, tail.String())
		}
	}
	return os.RemoveAll(filepath.Join(root, "var/lib/apt/lists"))
}

// postSetup turns a fresh debootstrap root into a node root. It works on the
// directory from the host (no chroot) and writes only inside root.
func postSetup(root string) error {
	p := func(rel string) string { return filepath.Join(root, rel) }
	for _, step := range []func(p func(string) string) error{setMachineID, setHostFiles, maskUnits, dropDebs} {
		if err := step(p); err != nil {
			return err
		}
	}
	return nil
}

// setMachineID gives each boot its own machine ID: with an empty
// /etc/machine-id, systemd initialises a transient one from the container
// UUID that systemd-nspawn makes up per boot (and does not treat the boot
// as a first boot). dbus reads the same ID.
func setMachineID(p func(string) string) error {
	if err := os.WriteFile(p("etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	if err := os.Chmod(p("etc/machine-id"), 0o444); err != nil {
		return err
	}
	return replaceWithSymlink(p("var/lib/dbus/machine-id"), "/etc/machine-id")
}

// setHostFiles replaces the host's hostname, hosts and resolv.conf that
// debootstrap copies, and adds the manager settings. Without /etc/hostname
// systemd keeps the host name systemd-nspawn set: the node name. A node
// resolves nothing but localhost.
func setHostFiles(p func(string) string) error {
	if err := os.Remove(p("etc/hostname")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(p("etc/hosts"), []byte(hostsFile), 0o644); err != nil {
		return err
	}
	if err := replaceWithFile(p("etc/resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(p("etc/systemd/system.conf.d"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p("etc/systemd/system.conf.d/50-slipway-nspawn.conf"), []byte(managerConf), 0o644)
}

// maskUnits masks maskedUnits and drops their enablement links too, so
// nothing lists a masked unit as wanted.
func maskUnits(p func(string) string) error {
	for _, unit := range maskedUnits {
		if err := replaceWithSymlink(p("etc/systemd/system/"+unit), "/dev/null"); err != nil {
			return err
		}
		links, err := filepath.Glob(p("etc/systemd/system/*.wants/" + unit))
		if err != nil {
			return err
		}
		for _, l := range links {
			if err := os.Remove(l); err != nil {
				return err
			}
		}
	}
	return nil
}

// dropDebs removes the package cache, dead weight in every node.
func dropDebs(p func(string) string) error {
	debs, err := filepath.Glob(p("var/cache/apt/archives/*.deb"))
	if err != nil {
		return err
	}
	for _, d := range debs {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	return nil
}

// replaceWithSymlink makes path a symlink to target, whatever it was before.
func replaceWithSymlink(path, target string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(target, path)
}

// replaceWithFile makes path a regular file (not a symlink) with data.
func replaceWithFile(path string, data []byte, perm os.FileMode) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, data, perm)
}

// removeTree removes dir, a root built (or half built) by debootstrap. A
// killed debootstrap can leave /proc, /sys or device mounts inside its
// target: those are unmounted first, and the tree is left alone if any
// mount remains, so that removing it never reaches into a host file system.
func removeTree(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	mounts, err := mountsUnder(abs)
	if err != nil {
		return err
	}
	// Deepest first.
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	if mounts, err = mountsUnder(abs); err != nil {
		return err
	} else if len(mounts) > 0 {
		return fmt.Errorf("%s still has mounts inside (%s); not removing it", abs, strings.Join(mounts, ", "))
	}
	return os.RemoveAll(abs)
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	max     int
	lines   []string
	partial []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(data[:i]))
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
		data = data[i+1:]
	}
	t.partial = append([]byte(nil), data...)
	return n, nil
}

func (t *tailBuffer) String() string {
	lines := t.lines
	if len(t.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.partial))
	}
	return strings.Join(lines, "\n")
}
