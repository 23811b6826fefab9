package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/shared/generation"
)

// fakeNixOS is a system profile in memory: generations 1..N pointing at
// toplevels, one current (the boot default). It records every call, and
// the switch-to-configuration calls as "<action> <toplevel>". Toplevels in
// failSwitch fail their switch-to-configuration; toplevels in unsigned
// fail Realise.
type fakeNixOS struct {
	calls      []string
	gens       map[int]string
	next       int
	current    int
	failSwitch map[string]bool
	unsigned   map[string]bool
	gcKeep     int
	before     func() // BeforeActivation
}

func (f *fakeNixOS) BeforeActivation(fn func()) { f.before = fn }

func newFakeNixOS() *fakeNixOS {
	return &fakeNixOS{gens: map[int]string{}, next: 1, failSwitch: map[string]bool{}, unsigned: map[string]bool{}}
}

func (f *fakeNixOS) take() []string { c := f.calls; f.calls = nil; return c }

func (f *fakeNixOS) Realise(_ context.Context, n generation.NixOS) error {
	f.calls = append(f.calls, "realise "+short(n.Toplevel))
	if f.unsigned[n.Toplevel] {
		return fmt.Errorf("nixos: realise %s: lacks a signature by a trusted key", n.Toplevel)
	}
	return nil
}

func (f *fakeNixOS) activate(top, action string) error {
	if f.before != nil {
		f.before()
	}
	f.calls = append(f.calls, action+" "+short(top))
	if f.failSwitch[top] {
		return fmt.Errorf("nixos: %s %s: exit status 4", top, action)
	}
	return nil
}

func (f *fakeNixOS) Test(_ context.Context, top string) error { return f.activate(top, "test") }

func (f *fakeNixOS) SetBootDefault(_ context.Context, top, action string) error {
	if f.gens[f.current] != top {
		f.set(top)
	}
	return f.activate(top, action)
}

// set adds a profile generation with top, current.
func (f *fakeNixOS) set(top string) {
	f.gens[f.next], f.current = top, f.next
	f.next++
	f.calls = append(f.calls, fmt.Sprintf("set profile %d", f.current))
}

// boot is the profile of a node that ran top before slipway.
func (f *fakeNixOS) boot(top string) {
	f.set(top)
	f.take()
}

func (f *fakeNixOS) Revert(_ context.Context, gen int) error {
	if _, ok := f.gens[gen]; !ok {
		return fmt.Errorf("no generation %d", gen)
	}
	if gen == f.current {
		return f.activate(f.gens[gen], "test")
	}
	f.current = gen
	f.calls = append(f.calls, fmt.Sprintf("switch-generation %d", gen))
	return f.activate(f.gens[gen], "switch")
}

func (f *fakeNixOS) Restore(ctx context.Context, n generation.NixOS) error {
	if f.gens[f.current] == n.Toplevel {
		return f.activate(n.Toplevel, "test")
	}
	for g := f.next - 1; g > 0; g-- {
		if f.gens[g] == n.Toplevel {
			return f.Revert(ctx, g)
		}
	}
	return f.SetBootDefault(ctx, n.Toplevel, "switch")
}

func (f *fakeNixOS) Current() (int, string, error) { return f.current, f.gens[f.current], nil }

func (f *fakeNixOS) GC(_ context.Context, keep int) error {
	f.gcKeep = keep
	return nil
}

func short(top string) string { return top[strings.LastIndex(top, "-")+1:] }

func toplevel(name string) string {
	return "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-" + name
}

func nixosGen(name string) *generation.Manifest {
	return &generation.Manifest{Name: "sys", Health: generation.Health{MinHealthyTime: 1},
		NixOS: &generation.NixOS{Toplevel: toplevel(name), Substituters: []string{"file:///cache"},
			TrustedPublicKeys: []string{"cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="}}}
}

func withNixOS(e *env) *fakeNixOS {
	f := newFakeNixOS()
	e.a.cfg.NixOS = f
	return f
}

func TestNixOSSwitchAndRevert(t *testing.T) {
	e := newEnv(t)
	nx := withNixOS(e)
	nx.boot(toplevel("base")) // the node ran a system before slipway: profile generation 1

	// A generation of units first, then a toplevel: the units stop, the
	// system switches (test), and becomes the boot default once verified
	// (no server: verified is confirmed).
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}
	e.sd.takeCalls()
	o, err := e.apply(nixosGen("A"))
	if err != nil || o.Outcome != "switched" || o.To != 2 {
		t.Fatalf("switch to A: %+v, %v", o, err)
	}
	if got, want := nx.take(), []string{"realise A", "realise A", "test A", "set profile 2", "boot A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if got := e.sd.takeCalls(); !reflect.DeepEqual(got, []string{"reload ", "stop a.service"}) {
		t.Errorf("systemd calls %q: the units of the previous generation must stop", got)
	}
	if e.linkOf("a.service") != "" {
		t.Error("a.service still linked")
	}

	// B's switch-to-configuration fails: A is activated again (test); the
	// boot default never left A. B is quarantined.
	nx.failSwitch[toplevel("B")] = true
	o, err = e.apply(nixosGen("B"))
	if !errors.Is(err, ErrReverted) || o.Outcome != "reverted" || o.To != 2 {
		t.Fatalf("switch to B: %+v, %v", o, err)
	}
	if !strings.Contains(o.Reason, "exit status 4") {
		t.Errorf("reason %q does not say why", o.Reason)
	}
	if got, want := nx.take(), []string{"realise B", "realise B", "test B", "test A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if cur, top, _ := nx.Current(); cur != 2 || top != toplevel("A") {
		t.Errorf("profile on %d (%s), want 2 (A)", cur, top)
	}
	idB, _ := nixosGen("B").ID()
	if _, ok := e.snap().Quarantined(idB); !ok {
		t.Error("B not quarantined")
	}

	// Unhealthy after a good switch (health fails): same revert.
	e.v.fail = errors.New("web-http: connection refused")
	if _, err := e.apply(nixosGen("C")); !errors.Is(err, ErrReverted) {
		t.Fatalf("switch to C: %v", err)
	}
	if got, want := nx.take(), []string{"realise C", "realise C", "test C", "test A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	e.v.fail = nil

	// A closure that cannot be realised (unsigned) is rejected: nothing
	// switched, no generation left on disk.
	nx.unsigned[toplevel("D")] = true
	o, err = e.apply(nixosGen("D"))
	if err == nil || errors.Is(err, ErrReverted) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("switch to D: %+v, %v", o, err)
	}
	if got := nx.take(); !reflect.DeepEqual(got, []string{"realise D"}) {
		t.Errorf("nixos calls %q: a refused closure must not touch the system", got)
	}
	if s := e.snap(); s.Meta.Current != 2 || s.Journal != nil {
		t.Errorf("after a rejected closure: meta %+v journal %+v", s.Meta, s.Journal)
	}
	if e.a.stager.Exists(o.To) && o.To != 2 {
		t.Errorf("generation %d left on disk", o.To)
	}

	// A generation of units after the toplevel fails: the revert restores
	// A (the profile is on it: test).
	e.sd.failing["x.service"] = true
	if _, err := e.apply(manifest(map[string]string{"x.service": svc("1")})); !errors.Is(err, ErrReverted) {
		t.Fatalf("units after toplevel: %v", err)
	}
	if got, want := nx.take(), []string{"test A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}

	// GC of profile generations runs while a toplevel is current.
	if _, err := e.a.GC(); err != nil {
		t.Fatal(err)
	}
	if nx.gcKeep != e.a.cfg.Keep+2 {
		t.Errorf("profile GC keep = %d, want %d", nx.gcKeep, e.a.cfg.Keep+2)
	}
}

// bootCase is one run of TestNixOSBootDefaultAfterConfirm: the calls the
// driver must see before the confirm (atConfirm, with the boot default
// still on the previous toplevel) and in all (want).
type bootCase struct {
	name      string
	run       func(e *env, nx *fakeNixOS, confirm func(context.Context, int, string) error)
	confirmed bool // the server confirms
	atConfirm []string
	want      []string
	boot      string // the boot default at the end (short name)
	outcome   string
}

// TestNixOSBootDefaultAfterConfirm records the driver's calls of a switch
// from A to a new toplevel: switch-to-configuration test first, the
// profile and switch-to-configuration boot only after the server's
// confirm; a revert before the confirm (no confirm, unhealthy, or the
// agent restarted while it waited for the confirm) never touches the boot
// default; a confirmed switch whose agent was killed before the toplevel
// became the boot default is finished by the restart (switch, as a reboot
// may have come back on the previous default).
func TestNixOSBootDefaultAfterConfirm(t *testing.T) {
	apply := func(name string, retry bool) func(e *env, nx *fakeNixOS, confirm func(context.Context, int, string) error) {
		return func(e *env, _ *fakeNixOS, confirm func(context.Context, int, string) error) {
			_, _ = e.a.Apply(context.Background(), nixosGen(name), ApplyOptions{Confirm: confirm, RetryQuarantined: retry})
		}
	}
	// restartBeforeConfirm: the agent is killed while it waits for the
	// confirm of B; the restart reverts (test A). Then the operator retries B.
	restartBeforeConfirm := func(e *env, nx *fakeNixOS, confirm func(context.Context, int, string) error) {
		e.crashAt(CrashConfirm, 1, map[string]bool{})
		if got := crashes(func() { apply("B", false)(e, nx, confirm) }); got != CrashConfirm {
			e.t.Fatalf("did not crash at %s", CrashConfirm)
		}
		e.restart()
		if o, err := e.a.Recover(context.Background()); err != nil || o.Outcome != "reverted" {
			e.t.Fatalf("recover: %+v %v", o, err)
		}
		if _, top, _ := nx.Current(); top != toplevel("A") {
			e.t.Errorf("after the restart before the confirm the boot default is %s, want A", short(top))
		}
		apply("B", true)(e, nx, confirm)
	}
	killedAt := func(point string) func(e *env, nx *fakeNixOS, confirm func(context.Context, int, string) error) {
		return func(e *env, nx *fakeNixOS, confirm func(context.Context, int, string) error) {
			e.crashAt(point, 1, map[string]bool{})
			if got := crashes(func() { apply("B", false)(e, nx, confirm) }); got != point {
				e.t.Fatalf("did not crash at %s", point)
			}
			e.restart()
			if o, err := e.a.Recover(context.Background()); err != nil || o.Outcome != "switched" || o.To != 2 {
				e.t.Fatalf("recover: %+v %v, want switched to 2", o, err)
			}
		}
	}
	before := []string{"realise B", "realise B", "test B"}
	cases := []bootCase{
		{name: "switch and confirm", run: apply("B", false), confirmed: true, atConfirm: before,
			want: []string{"realise B", "realise B", "test B", "set profile 3", "boot B"}, boot: "B", outcome: "switched"},
		{name: "switch, no confirm: revert", run: apply("B", false), atConfirm: before,
			want: []string{"realise B", "realise B", "test B", "test A"}, boot: "A", outcome: "reverted"},
		{name: "restart before the confirm, then confirm", run: restartBeforeConfirm, confirmed: true,
			atConfirm: []string{"realise B", "realise B", "test B", "test A", "realise B", "realise B", "test B"},
			want:      []string{"realise B", "realise B", "test B", "test A", "realise B", "realise B", "test B", "set profile 3", "boot B"}, boot: "B", outcome: "switched"},
		{name: "restart before the confirm, then revert", run: restartBeforeConfirm,
			atConfirm: []string{"realise B", "realise B", "test B", "test A", "realise B", "realise B", "test B"},
			want:      []string{"realise B", "realise B", "test B", "test A", "realise B", "realise B", "test B", "test A"}, boot: "A", outcome: "reverted"},
		{name: "killed after the confirm, before the profile moved", run: killedAt(CrashBoot), confirmed: true, atConfirm: before,
			want: []string{"realise B", "realise B", "test B", "set profile 3", "switch B"}, boot: "B", outcome: "switched"},
		{name: "killed after the profile moved, before boot", run: killedAt(CrashBootProfiled), confirmed: true, atConfirm: before,
			want: []string{"realise B", "realise B", "test B", "set profile 3", "switch B"}, boot: "B", outcome: "switched"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			nx := withNixOS(e)
			nx.boot(toplevel("base"))
			e.applyOK(nixosGen("A"))
			nx.take()
			var atConfirm []string
			confirm := func(context.Context, int, string) error {
				atConfirm = append(atConfirm, nx.calls...)
				if _, top, _ := nx.Current(); top != toplevel("A") {
					t.Errorf("at the confirm the boot default is %s, want A (the previous one)", short(top))
				}
				if !c.confirmed {
					return errors.New("the server has not confirmed")
				}
				return nil
			}
			c.run(e, nx, confirm)
			if got := nx.calls[:min(len(atConfirm), len(nx.calls))]; !reflect.DeepEqual(atConfirm, c.atConfirm) || !reflect.DeepEqual(got, c.atConfirm) {
				t.Errorf("calls at the confirm %q, want %q", atConfirm, c.atConfirm)
			}
			if got := nx.take(); !reflect.DeepEqual(got, c.want) {
				t.Errorf("nixos calls %q, want %q", got, c.want)
			}
			s := e.snap()
			if _, top, _ := nx.Current(); short(top) != c.boot || s.Journal != nil {
				t.Errorf("boot default %s, journal %+v; want %s, none", short(top), s.Journal, c.boot)
			}
			if s.Result == nil || s.Result.Outcome != c.outcome {
				t.Errorf("last result %+v, want %s", s.Result, c.outcome)
			}
		})
	}
}

// A failing switch-to-configuration boot after the confirm leaves the
// journal in its boot phase: the next start finishes it.
func TestNixOSBootDefaultFailsThenRecovers(t *testing.T) {
	e := newEnv(t)
	nx := withNixOS(e)
	nx.boot(toplevel("base"))
	e.applyOK(nixosGen("A"))
	nx.take()
	fail := &bootFailing{fakeNixOS: nx}
	e.a.cfg.NixOS = fail
	o, err := e.apply(nixosGen("B"))
	if !errors.Is(err, ErrBootDefault) || o.Outcome != "boot-default-failed" || !strings.Contains(o.Reason, "boot loader") {
		t.Fatalf("apply B: %+v %v, want ErrBootDefault, outcome boot-default-failed naming the cause", o, err)
	}
	if s := e.snap(); s.Journal == nil || s.Journal.Phase != state.PhaseBoot || s.Meta.Current != 1 {
		t.Fatalf("journal %+v meta %+v: want phase boot, current 1 until it is finished", s.Journal, s.Meta)
	}
	e.a.cfg.NixOS = nx
	o, err = e.a.Recover(context.Background())
	if err != nil || o.Outcome != "switched" || o.To != 2 {
		t.Fatalf("recover: %+v %v", o, err)
	}
	if got, want := nx.take(), []string{"realise B", "realise B", "test B", "set profile 3", "boot B", "switch B"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if s := e.snap(); s.Journal != nil || s.Meta.Current != 2 || s.Meta.LastGood != 2 {
		t.Errorf("journal %+v meta %+v", s.Journal, s.Meta)
	}
}

// bootFailing fails every switch-to-configuration boot (a boot loader that
// cannot be written).
type bootFailing struct{ *fakeNixOS }

func (b *bootFailing) SetBootDefault(ctx context.Context, top, action string) error {
	if err := b.fakeNixOS.SetBootDefault(ctx, top, action); err != nil || action != "boot" {
		return err
	}
	return errors.New("switch-to-configuration boot: exit status 1: cannot install the boot loader")
}

// A toplevel that fails on a node whose previous generation had none: the
// system goes back to the profile generation recorded in the journal
// before the flip (with test: the profile never moved), also when the
// agent crashed mid-switch and Recover does the revert.
func TestNixOSRevertToProfileBeforeSwitch(t *testing.T) {
	e := newEnv(t)
	nx := withNixOS(e)
	ctx := context.Background()
	nx.boot(toplevel("base"))
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}

	nx.failSwitch[toplevel("A")] = true
	if _, err := e.apply(nixosGen("A")); !errors.Is(err, ErrReverted) {
		t.Fatalf("switch to A: %v", err)
	}
	if got, want := nx.take(), []string{"realise A", "realise A", "test A", "test base"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}

	// Crash in verify: the dead process flipped to B and switched the
	// running system; Recover reads the profile generation from the
	// journal.
	m := nixosGen("B")
	id, _ := m.ID()
	if _, err := e.a.stager.Stage(ctx, 9, m); err != nil {
		t.Fatal(err)
	}
	from := manifest(map[string]string{"a.service": svc("1")})
	if err := e.a.transition(ctx, move{from: from, to: m, toN: 9, profile: 1}); err != nil {
		t.Fatal(err)
	}
	e.db.Update(func(tx *state.Tx) error {
		tx.PutGeneration(state.Generation{Number: 9, ID: id, Status: state.StatusStaged})
		return tx.PutJournal(state.Journal{Op: "switch", From: 1, To: 9, Phase: state.PhaseVerify, NixOSProfile: 1, PID: 4242})
	})
	nx.take()
	o, err := e.a.Recover(ctx)
	if err != nil || o.To != 1 {
		t.Fatalf("recover: %+v, %v", o, err)
	}
	if got, want := nx.take(), []string{"test base"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if cur, _, _ := nx.Current(); cur != 1 {
		t.Errorf("profile on %d, want 1", cur)
	}

	// A journal of an agent that still moved the profile at the switch
	// (before boot-safe switches): the revert moves it back, with switch.
	nx.set(toplevel("B"))
	e.db.Update(func(tx *state.Tx) error {
		return tx.PutJournal(state.Journal{Op: "switch", From: 1, To: 9, Phase: state.PhaseVerify, NixOSProfile: 1, PID: 4243})
	})
	nx.take()
	if _, err := e.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := nx.take(), []string{"switch-generation 1", "switch base"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
}

// Without a driver a toplevel is refused before anything changes.
func TestNixOSWithoutDriver(t *testing.T) {
	e := newEnv(t)
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}
	before := e.snap()
	_, err := e.apply(nixosGen("A"))
	if !errors.Is(err, stage.ErrNixOSUnsupported) {
		t.Fatalf("err = %v, want ErrNixOSUnsupported", err)
	}
	after := e.snap()
	if after.Meta != before.Meta || len(after.Generations) != len(before.Generations) {
		t.Errorf("state changed: %+v -> %+v", before.Meta, after.Meta)
	}
	if _, err := os.Stat(e.layout.GenDir(2)); !os.IsNotExist(err) {
		t.Errorf("generation 2 staged: %v", err)
	}
}
