package nspawn

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDebootstrap puts a debootstrap script first in PATH that runs body
// with $target set to the target directory, and counts its runs in the
// returned file.
func fakeDebootstrap(t *testing.T, body string) (runs string) {
	t.Helper()
	bin := t.TempDir()
	runs = filepath.Join(bin, "runs")
	script := "#!/bin/sh\nset -e\necho run >> " + runs + "\n" +
		"for a; do target=$last; last=$a; done\n" + body
	if err := os.WriteFile(filepath.Join(bin, "debootstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// chroot stands in for the apt-get runs inside the new root: it
	// records them in <root>/chroot-calls (the root must exist).
	chroot := "#!/bin/sh\nset -e\nroot=$1; shift\ntest -d \"$root/usr/sbin\"\necho \"$*\" >> \"$root/chroot-calls\"\n"
	if err := os.WriteFile(filepath.Join(bin, "chroot"), []byte(chroot), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	return runs
}

// debootstrapLike creates what postSetup expects from a real debootstrap.
const debootstrapLike = `
mkdir -p "$target/etc/systemd/system/timers.target.wants" "$target/var/lib/dbus" "$target/var/cache/apt/archives" "$target/usr/sbin"
echo 0123456789abcdef0123456789abcdef > "$target/etc/machine-id"
cp "$target/etc/machine-id" "$target/var/lib/dbus/machine-id"
echo buildhost > "$target/etc/hostname"
echo "nameserver 192.0.2.1" > "$target/etc/resolv.conf"
ln -s /lib/systemd/system/apt-daily.timer "$target/etc/systemd/system/timers.target.wants/apt-daily.timer"
touch "$target/var/cache/apt/archives/systemd_252.deb"
echo "I: Base system installed successfully."
`

func TestEnsureRootBuildsOnceAndCaches(t *testing.T) {
	runs := fakeDebootstrap(t, debootstrapLike)
	cache := filepath.Join(t.TempDir(), "cache")
	var progress strings.Builder
	var mu sync.Mutex
	roots := make([]string, 3)
	var wg sync.WaitGroup
	for i := range roots {
		wg.Go(func() {
			var buf strings.Builder
			root, err := EnsureRoot(context.Background(), cache, &buf)
			if err != nil {
				t.Error(err)
			}
			roots[i] = root
			mu.Lock()
			progress.WriteString(buf.String())
			mu.Unlock()
		})
	}
	wg.Wait()
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 1 {
		t.Errorf("debootstrap ran %d times, want once", strings.Count(string(b), "run"))
	}
	root := roots[0]
	if root != filepath.Join(cache, recipeKey()) || roots[1] != root || roots[2] != root {
		t.Fatalf("roots = %q, want three times %s", roots, filepath.Join(cache, recipeKey()))
	}
	if !strings.Contains(progress.String(), "building node root with debootstrap") || !strings.Contains(progress.String(), "node root ready in") {
		t.Errorf("progress:\n%s", progress.String())
	}
	if _, err := EnsureRoot(context.Background(), cache, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 1 {
		t.Errorf("a cached root was built again")
	}

	// The post-setup.
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	link := func(rel string) string {
		l, err := os.Readlink(filepath.Join(root, rel))
		if err != nil {
			t.Error(err)
		}
		return l
	}
	if got := read("etc/machine-id"); got != "" {
		t.Errorf("machine-id = %q, want empty", got)
	}
	if got, want := read("chroot-calls"), "apt-get update\napt-get install -y --no-install-recommends nix-bin\napt-get clean\n"; got != want {
		t.Errorf("apt-get in the root:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/policy-rc.d")); !os.IsNotExist(err) {
		t.Errorf("policy-rc.d left in the root: %v", err)
	}
	if got := link("var/lib/dbus/machine-id"); got != "/etc/machine-id" {
		t.Errorf("dbus machine-id -> %q", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/hostname")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("etc/hostname: %v, want removed", err)
	}
	if got := read("etc/resolv.conf"); got != "" {
		t.Errorf("resolv.conf = %q, want empty", got)
	}
	if got := read("etc/hosts"); got != hostsFile {
		t.Errorf("hosts = %q", got)
	}
	if got := read("etc/systemd/system.conf.d/50-slipway-nspawn.conf"); !strings.Contains(got, "DefaultTimeoutStopSec=10s") {
		t.Errorf("manager conf = %q", got)
	}
	for _, u := range maskedUnits {
		if got := link("etc/systemd/system/" + u); got != "/dev/null" {
			t.Errorf("%s -> %q, want masked", u, got)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/timers.target.wants/apt-daily.timer")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("enablement link of a masked unit: %v, want removed", err)
	}
	if debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb")); len(debs) != 0 {
		t.Errorf("package cache left: %q", debs)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(cache, ".build-*")); len(leftovers) != 0 {
		t.Errorf("build dirs left: %q", leftovers)
	}
}

func TestEnsureRootFailedBuild(t *testing.T) {
	fakeDebootstrap(t, `mkdir -p "$target/etc"
i=0; while [ $i -lt 50 ]; do echo "I: line $i"; i=$((i+1)); done
echo "E: Couldn't download packages: systemd" >&2
exit 1`)
	cache := t.TempDir()
	// A killed earlier build leaves its temporary directory behind.
	stale := filepath.Join(cache, ".build-"+recipeKey()+"-dead")
	if err := os.MkdirAll(filepath.Join(stale, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := EnsureRoot(context.Background(), cache, nil)
	if err == nil {
		t.Fatal("EnsureRoot succeeded with a failing debootstrap")
	}
	for _, want := range []string{"debootstrap", "exit status 1", "E: Couldn't download packages: systemd", "I: line 49"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "I: line 0\n") {
		t.Errorf("error holds the whole output, want its tail:\n%v", err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.IsDir() {
			t.Errorf("directory left in the cache: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(cache, recipeKey()+".log")); err != nil {
		t.Errorf("full log: %v", err)
	}
}

func TestEnsureRootCanceled(t *testing.T) {
	fakeDebootstrap(t, `mkdir -p "$target/proc"; exec sleep 60`)
	cache := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := EnsureRoot(ctx, cache, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("EnsureRoot past its deadline = %v, want DeadlineExceeded", err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.IsDir() {
			t.Errorf("directory left in the cache: %s", e.Name())
		}
	}
}
