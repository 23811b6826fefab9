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

func TestSwitchRevertFake(t *testing.T) {
	ctx := context.Background()
	profile := filepath.Join(t.TempDir(), "profiles", "system")
	r := &linkRunner{profile: profile}
	d := &Driver{Profile: profile, Run: r}
	a, b := top, strings.Replace(top, "web-1", "web-2", 1)
	if prev, err := d.Switch(ctx, a); err != nil || prev != 0 {
		t.Fatalf("Switch(a) = %d, %v", prev, err)
	}
	prev, err := d.Switch(ctx, b)
	if err != nil || prev != 1 {
		t.Fatalf("Switch(b) = %d, %v", prev, err)
	}
	if err := d.Revert(ctx, prev); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"nix-env -p " + profile + " --option substituters  --set " + a, a + "/bin/switch-to-configuration switch",
		"nix-env -p " + profile + " --option substituters  --set " + b, b + "/bin/switch-to-configuration switch",
		"nix-env -p " + profile + " --option substituters  --switch-generation 1", a + "/bin/switch-to-configuration switch",
	}
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(r.calls, "\n"), strings.Join(want, "\n"))
	}

	// A failing activation is reported; the profile stays switched (the
	// caller reverts).
	r.fail = map[string]error{b + "/bin/switch-to-configuration": errors.New("exit status 4")}
	if _, err := d.Switch(ctx, b); err == nil || !strings.Contains(err.Error(), b) {
		t.Errorf("Switch with a failing activation = %v", err)
	}
	if n, cur, _ := d.Current(); n != 3 || cur != b {
		t.Errorf("Current = %d %s", n, cur)
	}
	if err := d.Revert(ctx, 9); !errors.Is(err, ErrNoGeneration) {
		t.Errorf("Revert(9) = %v", err)
	}
}

// TestProfileMovedHook: the hook runs right after nix-env moved the
// profile and before switch-to-configuration, in Switch and in Revert
// (where the agent's crash points sit); nil takes it off.
func TestProfileMovedHook(t *testing.T) {
	ctx := context.Background()
	profile := filepath.Join(t.TempDir(), "profiles", "system")
	r := &linkRunner{profile: profile}
	d := &Driver{Profile: profile, Run: r}
	d.OnProfileMoved(func() {
		_, cur, err := d.Current()
		r.calls = append(r.calls, fmt.Sprintf("moved: profile -> %s %v", filepath.Base(cur), err))
	})
	a, b := top, strings.Replace(top, "web-1", "web-2", 1)
	for _, step := range []func() error{
		func() error { _, err := d.Switch(ctx, a); return err },
		func() error { _, err := d.Switch(ctx, b); return err },
		func() error { return d.Revert(ctx, 1) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	d.OnProfileMoved(nil)
	if _, err := d.Switch(ctx, b); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"nix-env -p " + profile + " --option substituters  --set " + a, "moved: profile -> " + filepath.Base(a) + " <nil>", a + "/bin/switch-to-configuration switch",
		"nix-env -p " + profile + " --option substituters  --set " + b, "moved: profile -> " + filepath.Base(b) + " <nil>", b + "/bin/switch-to-configuration switch",
		"nix-env -p " + profile + " --option substituters  --switch-generation 1", "moved: profile -> " + filepath.Base(a) + " <nil>", a + "/bin/switch-to-configuration switch",
		"nix-env -p " + profile + " --option substituters  --set " + b, b + "/bin/switch-to-configuration switch",
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
