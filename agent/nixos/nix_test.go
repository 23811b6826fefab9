package nixos

// The real test: Debian's nix-bin, the real (single-user, root) Nix store,
// a local file:// binary cache signed with a key from
// `nix-store --generate-binary-cache-key`, and a profile in a temporary
// directory. The toplevels are tiny input-addressed store paths built by a
// builtins.derivation with /bin/sh (no nixpkgs): their
// bin/switch-to-configuration appends its calls to a file in the test
// directory. They must be input-addressed: Nix trusts a content-addressed
// path (`nix-store --add`) by its hash, without any signature, so such a
// path could not show that unsigned paths are refused.
//
// It needs root (it writes /nix) and nix-bin; it skips without them, or
// fails under SLIPWAY_E2E=1. If /nix does not exist yet, Nix creates the
// store on first use (single-user mode).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/generation"
)

const toplevelNix = `{ name, record }:
derivation {
  inherit name record;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    PATH=/usr/bin:/bin
    mkdir -p $out/bin
    printf '#!/bin/sh\necho "%s $*" >> %s\n' "$name" "$record" > $out/bin/switch-to-configuration
    chmod +x $out/bin/switch-to-configuration
  '' ];
}
`

type nixEnv struct {
	t      *testing.T
	dir    string
	record string
	paths  []string
}

func needRealNix(t *testing.T) *nixEnv {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("SLIPWAY_E2E") == "1" {
			t.Fatalf("%s, and SLIPWAY_E2E=1 forbids skipping", why)
		}
		t.Skip(why)
	}
	for _, tool := range []string{"nix", "nix-store", "nix-env", "nix-build"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(tool + " missing (Debian package nix-bin)")
		}
	}
	if os.Geteuid() != 0 {
		skip("not root: the test uses the real single-user Nix store")
	}
	dir := t.TempDir()
	e := &nixEnv{t: t, dir: dir, record: filepath.Join(dir, "calls")}
	t.Cleanup(func() {
		// Free the paths: the profile (in dir) is gone by then or soon.
		for _, p := range e.paths {
			exec.Command("nix-store", "--delete", p).Run()
		}
	})
	return e
}

func (e *nixEnv) nix(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command\nsubstituters =")
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		e.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// toplevel builds a toplevel-shaped store path named name.
func (e *nixEnv) toplevel(name string) string {
	f := filepath.Join(e.dir, "toplevel.nix")
	if err := os.WriteFile(f, []byte(toplevelNix), 0o644); err != nil {
		e.t.Fatal(err)
	}
	p := e.nix("nix-build", f, "--argstr", "name", name, "--argstr", "record", e.record,
		"--no-out-link", "--option", "sandbox", "false")
	e.paths = append(e.paths, p)
	return p
}

// key makes a signing key pair: (secret key file, public key).
func (e *nixEnv) key(name string) (string, string) {
	sk, pk := filepath.Join(e.dir, name+".sk"), filepath.Join(e.dir, name+".pk")
	e.nix("nix-store", "--generate-binary-cache-key", name, sk, pk)
	b, err := os.ReadFile(pk)
	if err != nil {
		e.t.Fatal(err)
	}
	return sk, strings.TrimSpace(string(b))
}

func (e *nixEnv) calls() string {
	b, _ := os.ReadFile(e.record)
	return string(b)
}

func TestRealNix(t *testing.T) {
	e := needRealNix(t)
	ctx := context.Background()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tag := hex.EncodeToString(suffix)

	sysA, sysB, unsigned := e.toplevel("sysA-"+tag), e.toplevel("sysB-"+tag), e.toplevel("unsigned-"+tag)
	sk, pk := e.key("slipway-test-" + tag)
	_, otherPK := e.key("other-" + tag)

	cache := "file://" + filepath.Join(e.dir, "cache")
	e.nix("nix", "store", "sign", "--key-file", sk, sysA, sysB)
	e.nix("nix", "copy", "--to", cache, sysA, sysB, unsigned)
	e.nix("nix-store", "--delete", sysA, sysB, unsigned)

	d := &Driver{Profile: filepath.Join(e.dir, "profiles", "system")}
	nixos := func(top string, keys ...string) generation.NixOS {
		return generation.NixOS{Toplevel: top, Substituters: []string{cache}, TrustedPublicKeys: keys}
	}

	// Refused: signed by a key the release does not trust; not signed.
	for _, c := range []struct {
		name string
		n    generation.NixOS
	}{
		{"wrong key", nixos(sysA, otherPK)},
		{"unsigned", nixos(unsigned, pk)},
	} {
		err := d.Realise(ctx, c.n)
		if err == nil {
			t.Fatalf("%s: Realise(%s) succeeded", c.name, c.n.Toplevel)
		}
		if !errors.Is(err, ErrUntrusted) {
			t.Errorf("%s: error does not match ErrUntrusted: %v", c.name, err)
		}
		if !strings.Contains(err.Error(), c.n.Toplevel) || !strings.Contains(err.Error(), "signature") {
			t.Errorf("%s: error does not name the path and the signature: %v", c.name, err)
		}
		if d.Valid(ctx, c.n.Toplevel) {
			t.Errorf("%s: %s is in the store after a refused Realise", c.name, c.n.Toplevel)
		}
	}
	if err := d.Realise(ctx, generation.NixOS{Toplevel: sysA, Substituters: []string{cache}}); err == nil {
		t.Error("Realise with no trusted keys succeeded")
	}

	// Realised from the cache with the right key (the first substituter
	// does not exist: the second one is used).
	for _, top := range []string{sysA, sysB} {
		n := nixos(top, otherPK, pk)
		n.Substituters = []string{"file://" + filepath.Join(e.dir, "no-cache"), cache}
		if err := d.Realise(ctx, n); err != nil {
			t.Fatalf("Realise(%s): %v", top, err)
		}
		if !d.Valid(ctx, top) {
			t.Fatalf("%s not valid after Realise", top)
		}
	}

	// Switch to A, then B, each confirmed: test first, the profile (the
	// boot default) only at the confirm.
	list := func() string {
		return e.nix("nix-env", "-p", d.Profile, "--list-generations")
	}
	if err := d.Test(ctx, sysA); err != nil {
		t.Fatalf("Test(A): %v", err)
	}
	if n, _, _ := d.Current(); n != 0 {
		t.Errorf("Test(A) made profile generation %d", n)
	}
	if err := d.SetBootDefault(ctx, sysA, ActionBoot); err != nil {
		t.Fatalf("SetBootDefault(A): %v", err)
	}
	if err := d.Test(ctx, sysB); err != nil {
		t.Fatalf("Test(B): %v", err)
	}
	if n, top, _ := d.Current(); n != 1 || top != sysA {
		t.Errorf("before B's confirm: Current() = %d %s, want 1 %s (the boot default)", n, top, sysA)
	}
	if err := d.SetBootDefault(ctx, sysB, ActionBoot); err != nil {
		t.Fatalf("SetBootDefault(B): %v", err)
	}
	prev := 1
	if l := list(); !strings.Contains(l, "1   ") || !regexpMatch(`(?m)^\s*2\s.*\(current\)$`, l) {
		t.Errorf("after two confirmed switches, --list-generations:\n%s", l)
	}
	if n, top, _ := d.Current(); n != 2 || top != sysB {
		t.Errorf("Current() = %d %s, want 2 %s", n, top, sysB)
	}

	// Revert to generation 1: the profile points at A again, A switched
	// (boot default and running system).
	if err := d.Revert(ctx, prev); err != nil {
		t.Fatalf("Revert(%d): %v", prev, err)
	}
	if l := list(); !regexpMatch(`(?m)^\s*1\s.*\(current\)$`, l) {
		t.Errorf("after Revert, --list-generations:\n%s", l)
	}
	if n, top, _ := d.Current(); n != 1 || top != sysA {
		t.Errorf("Current() = %d %s after Revert, want 1 %s", n, top, sysA)
	}
	want := "sysA-" + tag + " test\nsysA-" + tag + " boot\nsysB-" + tag + " test\nsysB-" + tag + " boot\nsysA-" + tag + " switch\n"
	if got := e.calls(); got != want {
		t.Errorf("switch-to-configuration calls:\n%s\nwant:\n%s", got, want)
	}
	if err := d.Revert(ctx, 7); err == nil {
		t.Error("Revert to a missing generation succeeded")
	}

	// GC keeps the newest K (never the current one).
	for _, top := range []string{sysB, sysA, sysB} {
		if err := d.SetBootDefault(ctx, top, ActionBoot); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := d.Generations()
	cur, _, _ := d.Current()
	if len(before) < 3 {
		t.Fatalf("generations before GC: %v\n%s", before, list())
	}
	if err := d.GC(ctx, 2); err != nil {
		t.Fatal(err)
	}
	after, _ := d.Generations()
	if len(after) != 2 || after[0] != before[len(before)-2] || after[1] != before[len(before)-1] || after[1] != cur {
		t.Errorf("generations after GC(2) = %v, before %v (current %d): want the newest two\n%s", after, before, cur, list())
	}

	// Restore (a revert's move): back to the newest profile generation
	// that has the toplevel — no new generation —, or, when GC removed
	// every generation with it, realised again and switched to as a new
	// one.
	e.calls() // (the record grows; compare suffixes)
	mark := len(e.calls())
	if err := d.Restore(ctx, nixos(sysA, pk)); err != nil {
		t.Fatalf("Restore(A): %v", err)
	}
	if n, top, _ := d.Current(); n != after[0] || top != sysA {
		t.Errorf("Restore(A): profile on %d %s, want the existing generation %d", n, top, after[0])
	}
	if gens, _ := d.Generations(); len(gens) != 2 {
		t.Errorf("Restore(A) made a new generation: %v", gens)
	}
	if err := d.Restore(ctx, nixos(sysA, pk)); err != nil { // the profile is on it: test only
		t.Fatalf("Restore(A) again: %v", err)
	}
	if got, want := e.calls()[mark:], "sysA-"+tag+" switch\nsysA-"+tag+" test\n"; got != want {
		t.Errorf("Restore calls:\n%s\nwant:\n%s", got, want)
	}
	e.nix("nix-env", "-p", d.Profile, "--set", sysA) // A as the newest generation…
	newest, _, _ := d.Current()
	if err := d.GC(ctx, 1); err != nil { // …and the only one left
		t.Fatal(err)
	}
	if gens, _ := d.Generations(); len(gens) != 1 || gens[0] != newest {
		t.Fatalf("after GC(1): %v, want [%d]\n%s", gens, newest, list())
	}
	if err := d.Restore(ctx, nixos(sysB, pk)); err != nil {
		t.Fatalf("Restore(B) after GC: %v", err)
	}
	if n, top, _ := d.Current(); top != sysB || n != newest+1 {
		t.Errorf("Restore(B) after GC: profile on %d %s, want the new generation %d with B", n, top, newest+1)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
