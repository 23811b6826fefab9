package nixos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/generation"
)

// fakeRunner records commands; valid holds the store paths
// `nix-store --check-validity` accepts; fail maps a command prefix to an
// error.
type fakeRunner struct {
	calls []string
	valid map[string]bool
	fail  map[string]error
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	c := strings.TrimSpace(name + " " + strings.Join(args, " "))
	f.calls = append(f.calls, c)
	for p, err := range f.fail {
		if strings.HasPrefix(c, p) {
			return nil, err
		}
	}
	if name == "nix-store" && args[0] == "--check-validity" && !f.valid[args[1]] {
		return nil, errors.New("not valid")
	}
	return nil, nil
}

const top = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-1"

func TestRealiseCommands(t *testing.T) {
	ctx := context.Background()
	f := &fakeRunner{fail: map[string]error{"nix --extra-experimental-features nix-command copy --from https://a": errors.New("error: cannot add path '" + top + "' because it lacks a valid signature")}}
	d := &Driver{Run: f}
	n := generation.NixOS{Toplevel: top, Substituters: []string{"https://a", "https://b"}, TrustedPublicKeys: []string{"k1:AA==", "k2:BB=="}}
	err := d.Realise(ctx, n)
	// b "succeeds" but the path is still not valid in the fake store.
	if err == nil || !strings.Contains(err.Error(), top) {
		t.Fatalf("Realise = %v", err)
	}
	want := "nix --extra-experimental-features nix-command copy --from https://b --option trusted-public-keys k1:AA== k2:BB== --option require-sigs true " + top
	if !contains(f.calls, want) {
		t.Errorf("calls %q\nwant %q", f.calls, want)
	}

	for name, c := range map[string]struct {
		n    generation.NixOS
		want error
	}{
		"no keys":         {generation.NixOS{Toplevel: top, Substituters: []string{"https://a"}}, ErrNoTrustedKeys},
		"no substituters": {generation.NixOS{Toplevel: top, TrustedPublicKeys: []string{"k:AA=="}}, ErrNoSubstituters},
	} {
		f := &fakeRunner{}
		if err := (&Driver{Run: f}).Realise(ctx, c.n); !errors.Is(err, c.want) || !strings.Contains(err.Error(), top) {
			t.Errorf("%s: %v, want %v naming the path", name, err, c.want)
		}
		if len(f.calls) != 1 {
			t.Errorf("%s: fetched anyway: %q", name, f.calls)
		}
	}
	if err := d.Realise(ctx, generation.NixOS{Toplevel: "/tmp/x"}); err == nil {
		t.Error("a non-store toplevel was accepted")
	}
}

// linkRunner plays nix-env on a profile directory (set, switch-generation,
// rollback) so Switch/Revert can be followed without Nix.
type linkRunner struct {
	fakeRunner
	profile string
	n       int
}

func (l *linkRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, err := l.fakeRunner.Run(ctx, name, args...); err != nil {
		return nil, err
	}
	if name != "nix-env" {
		return nil, nil
	}
	point := func(n int) error {
		os.Remove(l.profile)
		return os.Symlink(fmt.Sprintf("%s-%d-link", filepath.Base(l.profile), n), l.profile)
	}
	switch args[len(args)-2] {
	case "--set":
		l.n++
		os.Symlink(args[len(args)-1], fmt.Sprintf("%s-%d-link", l.profile, l.n))
		return nil, point(l.n)
	case "--switch-generation":
		var n int
		fmt.Sscan(args[len(args)-1], &n)
		return nil, point(n)
	}
	return nil, nil
}

// TestBootSafeSequenceFake follows the commands of a switch to a, a
// switch to b confirmed (test, then the profile and boot), a switch to c
// reverted before its confirm (test c, test b: the profile never moved),
// and the ways back through the profile.
func TestBootSafeSequenceFake(t *testing.T) {
	ctx := context.Background()
	profile := filepath.Join(t.TempDir(), "profiles", "system")
	r := &linkRunner{profile: profile}
	d := &Driver{Profile: profile, Run: r}
	a, b, c := top, strings.Replace(top, "web-1", "web-2", 1), strings.Replace(top, "web-1", "web-3", 1)
	set := func(p string) string { return "nix-env -p " + profile + " --option substituters  --set " + p }
	stc := func(p, action string) string { return p + "/bin/switch-to-configuration " + action }
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"switch to a, confirmed", func() error { return errors.Join(d.Test(ctx, a), d.SetBootDefault(ctx, a, ActionBoot)) },
			[]string{stc(a, "test"), set(a), stc(a, "boot")}},
		{"switch to b, confirmed", func() error { return errors.Join(d.Test(ctx, b), d.SetBootDefault(ctx, b, ActionBoot)) },
			[]string{stc(b, "test"), set(b), stc(b, "boot")}},
		{"switch to c, reverted before the confirm", func() error { return errors.Join(d.Test(ctx, c), d.Revert(ctx, 2)) },
			[]string{stc(c, "test"), stc(b, "test")}},
		{"restore b (the profile is on it)", func() error { return d.Restore(ctx, generation.NixOS{Toplevel: b}) },
			[]string{stc(b, "test")}},
		{"boot default again after a crash: no second generation", func() error { return d.SetBootDefault(ctx, b, ActionSwitch) },
			[]string{stc(b, "switch")}},
		{"restore a (an older profile generation)", func() error { return d.Restore(ctx, generation.NixOS{Toplevel: a}) },
			[]string{"nix-env -p " + profile + " --option substituters  --switch-generation 1", stc(a, "switch")}},
	}
	for _, st := range steps {
		r.calls = nil
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if strings.Join(r.calls, "\n") != strings.Join(st.want, "\n") {
			t.Errorf("%s: calls:\n%s\nwant:\n%s", st.name, strings.Join(r.calls, "\n"), strings.Join(st.want, "\n"))
		}
	}
	if n, cur, _ := d.Current(); n != 1 || cur != a {
		t.Errorf("Current = %d %s, want 1 %s", n, cur, a)
	}

	// A failing activation is reported and leaves the profile alone.
	r.fail = map[string]error{stc(c, "test"): errors.New("exit status 4")}
	if err := d.Test(ctx, c); err == nil || !strings.Contains(err.Error(), c) {
		t.Errorf("Test with a failing activation = %v", err)
	}
	if n, cur, _ := d.Current(); n != 1 || cur != a {
		t.Errorf("after a failed Test: Current = %d %s", n, cur)
	}
	if err := d.Revert(ctx, 9); !errors.Is(err, ErrNoGeneration) {
		t.Errorf("Revert(9) = %v", err)
	}
	for _, action := range []string{"test", "dry-activate", ""} {
		r.calls = nil
		if err := d.SetBootDefault(ctx, b, action); err == nil || len(r.calls) > 0 {
			t.Errorf("SetBootDefault(%q) = %v, calls %q: want an error and no command", action, err, r.calls)
		}
	}
}

// TestBeforeActivationHook: the hook runs right before each
// switch-to-configuration, after any move of the profile (where the
// agent's crash points sit); nil takes it off.
func TestBeforeActivationHook(t *testing.T) {
	ctx := context.Background()
	profile := filepath.Join(t.TempDir(), "profiles", "system")
	r := &linkRunner{profile: profile}
	d := &Driver{Profile: profile, Run: r}
	d.BeforeActivation(func() {
		_, cur, err := d.Current()
		r.calls = append(r.calls, fmt.Sprintf("hook: profile -> %s %v", filepath.Base(cur), err))
	})
	a, b := top, strings.Replace(top, "web-1", "web-2", 1)
	for _, step := range []func() error{
		func() error { return d.SetBootDefault(ctx, a, ActionBoot) },
		func() error { return d.Test(ctx, b) },
		func() error { return d.SetBootDefault(ctx, b, ActionBoot) },
		func() error { return d.Revert(ctx, 1) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	d.BeforeActivation(nil)
	if err := d.Test(ctx, b); err != nil {
		t.Fatal(err)
	}
	set := "nix-env -p " + profile + " --option substituters  --set "
	want := []string{
		set + a, "hook: profile -> " + filepath.Base(a) + " <nil>", a + "/bin/switch-to-configuration boot",
		"hook: profile -> " + filepath.Base(a) + " <nil>", b + "/bin/switch-to-configuration test",
		set + b, "hook: profile -> " + filepath.Base(b) + " <nil>", b + "/bin/switch-to-configuration boot",
		"nix-env -p " + profile + " --option substituters  --switch-generation 1", "hook: profile -> " + filepath.Base(a) + " <nil>", a + "/bin/switch-to-configuration switch",
		b + "/bin/switch-to-configuration test",
	}
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(r.calls, "\n"), strings.Join(want, "\n"))
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
