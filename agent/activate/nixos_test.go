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
// toplevels, one current. It records every call. Toplevels in failSwitch
// fail their switch-to-configuration (after the profile moved, like the
// real one); toplevels in unsigned fail Realise.
type fakeNixOS struct {
	calls      []string
	gens       map[int]string
	next       int
	current    int
	failSwitch map[string]bool
	unsigned   map[string]bool
	gcKeep     int
	moved      func() // OnProfileMoved
}

func (f *fakeNixOS) OnProfileMoved(fn func()) { f.moved = fn }

func (f *fakeNixOS) profileMoved() {
	if f.moved != nil {
		f.moved()
	}
}

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

func (f *fakeNixOS) activate(top string) error {
	f.calls = append(f.calls, "activate "+short(top))
	if f.failSwitch[top] {
		return fmt.Errorf("nixos: %s switch: exit status 4", top)
	}
	return nil
}

func (f *fakeNixOS) Switch(_ context.Context, top string) (int, error) {
	prev := f.current
	f.gens[f.next], f.current = top, f.next
	f.next++
	f.calls = append(f.calls, fmt.Sprintf("set profile %d", f.current))
	f.profileMoved()
	return prev, f.activate(top)
}

func (f *fakeNixOS) Revert(_ context.Context, gen int) error {
	if _, ok := f.gens[gen]; !ok {
		return fmt.Errorf("no generation %d", gen)
	}
	f.current = gen
	f.calls = append(f.calls, fmt.Sprintf("switch-generation %d", gen))
	f.profileMoved()
	return f.activate(f.gens[gen])
}

func (f *fakeNixOS) Restore(ctx context.Context, n generation.NixOS) error {
	for g := f.next - 1; g > 0; g-- {
		if f.gens[g] == n.Toplevel {
			if g == f.current {
				return f.activate(n.Toplevel)
			}
			return f.Revert(ctx, g)
		}
	}
	_, err := f.Switch(ctx, n.Toplevel)
	return err
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
	// The node ran a system before slipway: profile generation 1.
	nx.Switch(context.Background(), toplevel("base"))
	nx.take()

	// A generation of units first, then a toplevel: the units stop, the
	// system switches.
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}
	e.sd.takeCalls()
	o, err := e.apply(nixosGen("A"))
	if err != nil || o.Outcome != "switched" || o.To != 2 {
		t.Fatalf("switch to A: %+v, %v", o, err)
	}
	if got, want := nx.take(), []string{"realise A", "realise A", "set profile 2", "activate A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if got := e.sd.takeCalls(); !reflect.DeepEqual(got, []string{"reload ", "stop a.service"}) {
		t.Errorf("systemd calls %q: the units of the previous generation must stop", got)
	}
	if e.linkOf("a.service") != "" {
		t.Error("a.service still linked")
	}

	// B's switch-to-configuration fails: the profile goes back to A's
	// generation, A is activated again, B is quarantined.
	nx.failSwitch[toplevel("B")] = true
	o, err = e.apply(nixosGen("B"))
	if !errors.Is(err, ErrReverted) || o.Outcome != "reverted" || o.To != 2 {
		t.Fatalf("switch to B: %+v, %v", o, err)
	}
	if !strings.Contains(o.Reason, "exit status 4") {
		t.Errorf("reason %q does not say why", o.Reason)
	}
	if got, want := nx.take(), []string{"realise B", "realise B", "set profile 3", "activate B", "switch-generation 2", "activate A"}; !reflect.DeepEqual(got, want) {
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
	if got, want := nx.take(), []string{"realise C", "realise C", "set profile 4", "activate C", "switch-generation 2", "activate A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}

	// A closure that cannot be realised (unsigned) is rejected: nothing
	// switched, no generation left on disk.
	nx.unsigned[toplevel("D")] = true
	o, err = e.apply(nixosGen("D"))
	if err == nil || errors.Is(err, ErrReverted) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("switch to D: %+v, %v", o, err)
	}
	if got := nx.take(); !reflect.DeepEqual(got, []string{"realise D"}) {
		t.Errorf("nixos calls %q: a refused closure must not touch the profile", got)
	}
	if s := e.snap(); s.Meta.Current != 2 || s.Journal != nil {
		t.Errorf("after a rejected closure: meta %+v journal %+v", s.Meta, s.Journal)
	}
	if e.a.stager.Exists(o.To) && o.To != 2 {
		t.Errorf("generation %d left on disk", o.To)
	}

	// A generation of units after the toplevel fails: the revert restores
	// A (already the profile's current generation: activated again).
	e.sd.failing["x.service"] = true
	if _, err := e.apply(manifest(map[string]string{"x.service": svc("1")})); !errors.Is(err, ErrReverted) {
		t.Fatalf("units after toplevel: %v", err)
	}
	if got, want := nx.take(), []string{"activate A"}; !reflect.DeepEqual(got, want) {
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

// A toplevel that fails on a node whose previous generation had none: the
// profile goes back to the generation recorded in the journal before the
// flip, also when the agent crashed mid-switch and Recover does the revert.
func TestNixOSRevertToProfileBeforeSwitch(t *testing.T) {
	e := newEnv(t)
	nx := withNixOS(e)
	ctx := context.Background()
	nx.Switch(ctx, toplevel("base"))
	nx.take()
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}

	nx.failSwitch[toplevel("A")] = true
	if _, err := e.apply(nixosGen("A")); !errors.Is(err, ErrReverted) {
		t.Fatalf("switch to A: %v", err)
	}
	if got, want := nx.take(), []string{"realise A", "realise A", "set profile 2", "activate A", "switch-generation 1", "activate base"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}

	// Crash in verify: the dead process flipped to B and switched the
	// system; Recover reads the profile generation from the journal.
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
	if got, want := nx.take(), []string{"switch-generation 1", "activate base"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nixos calls %q, want %q", got, want)
	}
	if cur, _, _ := nx.Current(); cur != 1 {
		t.Errorf("profile on %d, want 1", cur)
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
