package activate

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/unitverify"
	"github.com/slipway-dev/slipway/shared/generation"
)

func TestParseCrashAt(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    *CrashAt
		wantErr string
	}{
		{"", nil, ""},
		{"flip", &CrashAt{Point: "flip", N: 1}, ""},
		{"revert-flipped:2", &CrashAt{Point: "revert-flipped", N: 2}, ""},
		{"flop", nil, `unknown crash point "flop"`},
		{"flip:0", nil, "whole number ≥ 1"},
		{"flip:x", nil, "whole number ≥ 1"},
		{"flip:", nil, "whole number ≥ 1"},
	} {
		got, err := ParseCrashAt(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), CrashEnv) {
				t.Errorf("%q: err %v, want one naming %s and %q", tc.in, err, CrashEnv, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want:
			t.Errorf("%q: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestEveryJournalWriteHasACrashPoint: every write of this package to
// state.db goes through Switcher.step (which reaches a crash point right
// after the write), every step names a listed crash point, and the
// journal phases switchTo writes through setPhase are crash points too.
func TestEveryJournalWriteHasACrashPoint(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	stepped := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				collectConsts(d, consts)
				continue
			}
			ast.Inspect(fd, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "db" && sel.Sel.Name == "Update" && fd.Name.Name != "step" {
					t.Errorf("%s: %s writes state.db without a crash point: use a.step(CrashX, …)", fset.Position(call.Pos()), fd.Name.Name)
				}
				if sel.Sel.Name == "step" && fd.Name.Name != "setPhase" {
					arg, ok := call.Args[0].(*ast.Ident)
					switch {
					case ok && arg.Name == "p" && fd.Name.Name == "switchTo":
						// setPhase: its phases are checked below.
					case !ok:
						t.Errorf("%s: step's point must be a Crash constant", fset.Position(call.Pos()))
					default:
						stepped[arg.Name] = true
					}
				}
				return true
			})
		}
	}
	for name := range stepped {
		if !slices.Contains(CrashPoints, consts[name]) {
			t.Errorf("step(%s): %q is not in CrashPoints", name, consts[name])
		}
	}
	for _, p := range []string{state.PhaseFlip, state.PhaseUnits, state.PhaseVerify, state.PhaseConfirm, state.PhaseBoot} {
		if !slices.Contains(CrashPoints, p) {
			t.Errorf("journal phase %q (setPhase) is not a crash point", p)
		}
	}
	if len(stepped) < 8 {
		t.Errorf("found %d step calls; the scan does not see the package", len(stepped))
	}
}

func collectConsts(d ast.Decl, out map[string]string) {
	gd, ok := d.(*ast.GenDecl)
	if !ok || gd.Tok != token.CONST {
		return
	}
	for _, s := range gd.Specs {
		vs := s.(*ast.ValueSpec)
		for i, n := range vs.Names {
			if i < len(vs.Values) {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					out[n.Name], _ = strconv.Unquote(lit.Value)
				}
			}
		}
	}
}

// crashSignal is what the test hook panics with in place of SIGKILL.
type crashSignal string

// crashAt arms point on e's agent (the n-th time it is reached) and
// records every point reached.
func (e *env) crashAt(point string, n int, reached map[string]bool) {
	seen := 0
	defer e.a.hookNixOS()
	e.a.crash = func(p string) {
		if !slices.Contains(CrashPoints, p) {
			e.t.Errorf("crash point %q reached but not listed in CrashPoints", p)
		}
		reached[p] = true
		if p == point {
			if seen++; seen == n {
				panic(crashSignal(p))
			}
		}
	}
}

// crashes runs f and reports the crash point it died at ("" if none).
func crashes(f func()) (point string) {
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(crashSignal)
			if !ok {
				panic(r)
			}
			point = string(c)
		}
	}()
	f()
	return ""
}

// restart is a new agent process on the same node: same state, same
// systemd, no crash point.
func (e *env) restart() {
	e.a = New(e.a.cfg, e.db, e.a.stager, e.a.sd, e.v, zerolog.Nop())
}

// crashReleases: old → new adds, changes and removes units, files, links
// and secrets; bad is new plus a unit that fails (its switch reverts);
// refused is rejected by systemd-analyze before the flip.
func crashReleases(e *env, rcpt string) (old, new, bad, refused *generation.Manifest) {
	keepSecret := sealed(e.t, "keep", rcpt)
	mk := func(name string, units map[string]string, files map[string]string, secrets map[string]string) *generation.Manifest {
		m := manifest(units)
		m.Name = name
		m.Files = map[string]generation.File{}
		for f, c := range files {
			m.Files[f] = generation.File{Content: c}
			m.Links = append(m.Links, generation.Link{Path: filepath.Join(e.etc, f), File: f})
		}
		slices.SortFunc(m.Links, func(a, b generation.Link) int { return strings.Compare(a.Path, b.Path) })
		for _, s := range slices.Sorted(mapKeys(secrets)) {
			m.Secrets = append(m.Secrets, generation.Secret{Name: s, Ciphertext: secrets[s]})
		}
		return m
	}
	old = mk("old", map[string]string{"keep.service": svc("k"), "change.service": svc("1"), "gone.service": svc("g")},
		map[string]string{"keep.conf": "k", "change.conf": "1", "gone.conf": "g"},
		map[string]string{"keep": keepSecret, "change": sealed(e.t, "1", rcpt), "gone": sealed(e.t, "g", rcpt)})
	newFiles := map[string]string{"keep.conf": "k", "change.conf": "2", "added.conf": "a"}
	newSecrets := map[string]string{"keep": keepSecret, "change": sealed(e.t, "2", rcpt), "added": sealed(e.t, "a", rcpt)}
	new = mk("new", map[string]string{"keep.service": svc("k"), "change.service": svc("2"), "added.service": svc("a")}, newFiles, newSecrets)
	bad = mk("bad", map[string]string{"keep.service": svc("k"), "change.service": svc("2"), "added.service": svc("a"), "bad.service": svc("b")}, newFiles, newSecrets)
	refused = mk("refused", map[string]string{"keep.service": svc("k"), "broken.service": "[Service]\nExecStart=/nonexistent/slipway-crash\n"}, newFiles, newSecrets)
	return old, new, bad, refused
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// crashCase is one crash point in one operation: setup brings the node
// to where run starts (old is generation 1 and current), run is the
// operation killed at the point, want is the release the node must run
// after the restart ("old" or "new") and quarantined how many generations
// must be quarantined.
type crashCase struct {
	op          string
	point       string
	n           int
	setup       func(e *env, r crashRels)
	run         func(e *env, r crashRels)
	want        string
	quarantined int
	recovered   string // outcome of the Recover after the restart
}

type crashRels struct{ old, new, bad, refused *generation.Manifest }

func crashCases() []crashCase {
	apply := func(m func(crashRels) *generation.Manifest, opts ApplyOptions) func(e *env, r crashRels) {
		return func(e *env, r crashRels) { _, _ = e.a.Apply(context.Background(), m(r), opts) }
	}
	newM := func(r crashRels) *generation.Manifest { return r.new }
	oldM := func(r crashRels) *generation.Manifest { return r.old }
	badM := func(r crashRels) *generation.Manifest { return r.bad }
	toNew := apply(newM, ApplyOptions{})
	var cases []crashCase
	for _, p := range []string{CrashStage, CrashWarned, CrashStaged} {
		cases = append(cases, crashCase{op: "switch", point: p, run: toNew, want: "old", recovered: "discarded-staging"})
	}
	for _, p := range []string{CrashFlip, CrashFlipped, CrashLinked, CrashReloaded, CrashUnits, CrashStopped, CrashVerify} {
		cases = append(cases, crashCase{op: "switch", point: p, run: toNew, want: "old", quarantined: 1, recovered: "reverted"})
	}
	confirm := func(context.Context, int, string) error { return nil }
	cases = append(cases,
		crashCase{op: "switch", point: CrashConfirm, run: apply(newM, ApplyOptions{Confirm: confirm}), want: "old", quarantined: 1, recovered: "reverted"},
		crashCase{op: "switch", point: CrashCommit, run: toNew, want: "new", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: CrashUnchanged, run: apply(oldM, ApplyOptions{}), want: "old", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: CrashRejected, run: apply(func(r crashRels) *generation.Manifest { return r.refused }, ApplyOptions{}), want: "old", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: CrashUnquarantined, setup: func(e *env, r crashRels) { _, _ = e.a.Apply(context.Background(), r.bad, ApplyOptions{}) },
			run: apply(badM, ApplyOptions{RetryQuarantined: true}), want: "old", recovered: "nothing-to-recover"},
	)
	gcSetup := func(e *env, r crashRels) { // generations 2 (new), 3 (old): the commit of 4 collects 1
		_, _ = e.a.Apply(context.Background(), r.new, ApplyOptions{})
		_, _ = e.a.Apply(context.Background(), r.old, ApplyOptions{})
	}
	for _, p := range []string{CrashGCRecorded, CrashGCRemoved} {
		cases = append(cases, crashCase{op: "switch", point: p, setup: gcSetup, run: toNew, want: "new", recovered: "nothing-to-recover"})
	}
	for _, p := range []string{CrashRevert, CrashRevertFlipped, CrashRevertLinked, CrashRevertLoaded, CrashRevertStopped, CrashRevertStarted} {
		cases = append(cases, crashCase{op: "revert", point: p, run: apply(badM, ApplyOptions{}), want: "old", quarantined: 1, recovered: "reverted"})
	}
	cases = append(cases, crashCase{op: "revert", point: CrashReverted, run: apply(badM, ApplyOptions{}), want: "old", quarantined: 1, recovered: "nothing-to-recover"})
	// A recover killed while reverting, and one killed after discarding.
	for _, p := range []string{CrashRevertFlipped, CrashReverted} {
		want := map[string]string{CrashRevertFlipped: "reverted", CrashReverted: "nothing-to-recover"}[p]
		cases = append(cases, crashCase{op: "recover", point: p, setup: crashedAt(CrashUnits, toNew),
			run: func(e *env, _ crashRels) { _, _ = e.a.Recover(context.Background()) }, want: "old", quarantined: 1, recovered: want})
	}
	cases = append(cases, crashCase{op: "recover", point: CrashDiscarded, setup: crashedAt(CrashStaged, toNew),
		run: func(e *env, _ crashRels) { _, _ = e.a.Recover(context.Background()) }, want: "old", recovered: "nothing-to-recover"})
	// Rollback from new (2) to old (1). Killed before its commit, the
	// restart undoes it (back on new) and does not quarantine old, which
	// ran healthy before; the same when the recover undoing it is killed.
	rbSetup := func(e *env, r crashRels) { _, _ = e.a.Apply(context.Background(), r.new, ApplyOptions{}) }
	rollback := func(e *env, _ crashRels) { _, _ = e.a.Rollback(context.Background(), 0) }
	for _, p := range []string{CrashFlip, CrashFlipped, CrashLinked, CrashReloaded, CrashUnits, CrashStopped, CrashVerify} {
		cases = append(cases, crashCase{op: "rollback", point: p, setup: rbSetup, run: rollback, want: "new", recovered: "rollback-undone"})
	}
	rbKilled := func(e *env, r crashRels) { rbSetup(e, r); crashedAt(CrashUnits, rollback)(e, r) }
	recoverRun := func(e *env, _ crashRels) { _, _ = e.a.Recover(context.Background()) }
	for _, p := range []string{CrashRevert, CrashRevertFlipped, CrashRevertStopped} {
		cases = append(cases, crashCase{op: "rollback-recover", point: p, setup: rbKilled, run: recoverRun, want: "new", recovered: "rollback-undone"})
	}
	cases = append(cases, crashCase{op: "rollback-recover", point: CrashReverted, setup: rbKilled, run: recoverRun, want: "new", recovered: "nothing-to-recover"})
	cases = append(cases, crashCase{op: "rollback", point: CrashCommit, setup: rbSetup, run: rollback, want: "old", recovered: "nothing-to-recover"})
	return cases
}

// crashedAt is a setup that runs run killed at point, then restarts.
func crashedAt(point string, run func(e *env, r crashRels)) func(e *env, r crashRels) {
	return func(e *env, r crashRels) {
		e.crashAt(point, 1, map[string]bool{})
		if got := crashes(func() { run(e, r) }); got != point {
			e.t.Fatalf("setup: did not crash at %s", point)
		}
		e.restart()
	}
}

// TestCrashAtEveryPoint kills the agent (a panic in place of SIGKILL) at
// every crash point of a switch, a revert, a recovery, a rollback and GC,
// restarts it and runs Recover: the node then runs exactly the old or the
// new release (current, unit links, file links, secrets, units running),
// nothing is half-switched and nothing that did not fail is quarantined.
// Every listed crash point is reached by some case.
func TestCrashAtEveryPoint(t *testing.T) {
	reached := map[string]bool{}
	for _, tc := range crashCases() {
		t.Run(tc.op+"/"+tc.point, func(t *testing.T) {
			e, rcpt := newSecretsEnv(t)
			e.a.cfg.Keep = 1
			old, new, bad, refused := crashReleases(e, rcpt)
			r := crashRels{old, new, bad, refused}
			e.a.cfg.Units = unitsFor(refused)
			e.sd.failing["bad.service"] = true
			if o, err := e.a.Apply(context.Background(), old, ApplyOptions{}); err != nil || o.To != 1 {
				t.Fatalf("apply old: %+v %v", o, err)
			}
			if tc.setup != nil {
				tc.setup(e, r)
			}
			n := tc.n
			if n == 0 {
				n = 1
			}
			e.crashAt(tc.point, n, reached)
			if got := crashes(func() { tc.run(e, r) }); got != tc.point {
				t.Fatalf("the %s did not reach crash point %s", tc.op, tc.point)
			}
			e.restart()
			o, err := e.a.Recover(context.Background())
			if err != nil || o.Outcome != tc.recovered {
				t.Fatalf("recover: %+v, %v; want outcome %s", o, err, tc.recovered)
			}
			want := map[string]*generation.Manifest{"old": old, "new": new}[tc.want]
			e.expectRuns(want, tc.quarantined)
		})
	}
	for _, p := range CrashPoints {
		if !reached[p] && !slices.Contains(NixOSCrashPoints, p) { // TestCrashAtEveryPointNixOS
			t.Errorf("crash point %s is never reached by a case", p)
		}
	}
}

// unitsFor refuses the units of refused and warns about every other
// generation's, so that both the warning write and the rejection run.
func unitsFor(refused *generation.Manifest) unitVerifier {
	return unitsByName{refused: refused}
}

type unitsByName struct{ refused *generation.Manifest }

func (u unitsByName) Verify(_ context.Context, units map[string]string, _ []unitverify.Rewrite) (unitverify.Result, error) {
	if _, ok := units["broken.service"]; ok {
		return unitverify.Result{Errors: []string{"broken.service: Invalid section header '[Service'"}}, nil
	}
	return unitverify.Result{Warnings: []string{"a warning"}}, nil
}

// expectRuns fails the test unless the node runs exactly m, with no
// switch in progress and `quarantined` generations quarantined.
func (e *env) expectRuns(m *generation.Manifest, quarantined int) {
	e.t.Helper()
	s := e.snap()
	if s.Journal != nil {
		e.t.Errorf("journal left: %+v", s.Journal)
	}
	cur, err := e.layout.CurrentNumber()
	if err != nil || cur != s.Meta.Current || cur != s.Meta.LastGood {
		e.t.Fatalf("current -> %d (%v), meta %+v", cur, err, s.Meta)
	}
	g, _ := s.Generation(cur)
	if id, _ := m.ID(); g.ID != id || g.Status != state.StatusGood {
		e.t.Errorf("current generation %d is %s %s (%s), want %s good", cur, g.Name, g.ID, g.Status, m.Name)
	}
	if len(s.Quarantine) != quarantined {
		e.t.Errorf("%d generations quarantined, want %d: %+v", len(s.Quarantine), quarantined, s.Quarantine)
	}
	for _, gen := range s.Generations {
		if (gen.Status == state.StatusGood || gen.Status == state.StatusStaged) && !e.a.stager.Exists(gen.Number) {
			e.t.Errorf("generation %d is %s but its directory is gone", gen.Number, gen.Status)
		}
	}
	for _, u := range []string{"keep.service", "change.service", "gone.service", "added.service", "bad.service"} {
		_, in := m.Units[u]
		active := e.sd.active[u] == "active"
		if mine, _ := owned(e.a.unitLink(u), e.a.unitTarget(u)); mine != in || active != in {
			e.t.Errorf("%s: linked %v, active %v (%q); want %v", u, mine, active, e.sd.active[u], in)
		}
	}
	for _, f := range []string{"keep.conf", "change.conf", "gone.conf", "added.conf"} {
		p := filepath.Join(e.etc, f)
		b, err := os.ReadFile(p)
		want, in := m.Files[f]
		switch {
		case in && (err != nil || string(b) != want.Content):
			e.t.Errorf("%s: %q %v, want %q", p, b, err, want.Content)
		case !in && !errors.Is(err, os.ErrNotExist):
			e.t.Errorf("%s exists (%q), want it gone", p, b)
		}
	}
	if sc := e.secretsCurrent(); sc != strconv.Itoa(cur) {
		e.t.Errorf("secrets/current -> %q, want %d", sc, cur)
	}
	ents, _ := os.ReadDir(e.layout.SecretsCurrent() + "/")
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	var want []string
	for _, s := range m.Secrets {
		want = append(want, s.Name)
	}
	if !slices.Equal(names, want) {
		e.t.Errorf("secrets %v, want %v", names, want)
	}
	// The changed secret's plaintext is the changed file's content.
	if got := e.secret(cur, "change"); got != m.Files["change.conf"].Content {
		e.t.Errorf("secret change is %q, want %q", got, m.Files["change.conf"].Content)
	}
}

// TestCrashAtEveryPointNixOS: the same for generations with a NixOS
// toplevel (a fake system profile): killed at every point of a switch
// from toplevel A to B, of the revert of a B whose switch-to-configuration
// fails, of a rollback from B to A and of the GC after a commit, the
// restarted agent leaves the system profile on the toplevel of the
// generation the node is on, whose switch-to-configuration ran last, and
// quarantines only what failed (an interrupted rollback's target ran
// healthy before).
func TestCrashAtEveryPointNixOS(t *testing.T) {
	type tc struct {
		op, point, want string
		gen             int
		quarantined     int
		recovered       string
	}
	var cases []tc
	for _, p := range []string{CrashStage, CrashStaged} {
		cases = append(cases, tc{"switch", p, "a", 1, 0, "discarded-staging"})
	}
	for _, p := range []string{CrashFlip, CrashFlipped, CrashLinked, CrashReloaded, CrashUnits, CrashStopped, CrashNixOSProfiled, CrashVerify} {
		cases = append(cases, tc{"switch", p, "a", 1, 1, "reverted"})
	}
	for _, p := range []string{CrashBoot, CrashBootProfiled} { // confirmed: finished
		cases = append(cases, tc{"switch", p, "b", 2, 0, "switched"})
	}
	cases = append(cases, tc{"switch", CrashCommit, "b", 2, 0, "nothing-to-recover"})
	for _, p := range []string{CrashRevert, CrashRevertFlipped, CrashRevertLinked, CrashRevertLoaded, CrashRevertStopped, CrashRevertProfiled, CrashRevertStarted} {
		cases = append(cases, tc{"revert", p, "a", 1, 1, "reverted"})
	}
	cases = append(cases, tc{"revert", CrashReverted, "a", 1, 1, "nothing-to-recover"})
	for _, p := range []string{CrashFlip, CrashFlipped, CrashUnits, CrashStopped, CrashNixOSProfiled, CrashVerify} {
		cases = append(cases, tc{"rollback", p, "b", 2, 0, "rollback-undone"})
	}
	for _, p := range []string{CrashBoot, CrashBootProfiled} {
		cases = append(cases, tc{"rollback", p, "a", 1, 0, "switched"})
	}
	cases = append(cases, tc{"rollback", CrashCommit, "a", 1, 0, "nothing-to-recover"})
	for _, p := range []string{CrashGCRecorded, CrashGCRemoved} {
		cases = append(cases, tc{"gc", p, "b", 4, 0, "nothing-to-recover"})
	}
	reached := map[string]bool{}
	for _, c := range cases {
		t.Run(c.op+"/"+c.point, func(t *testing.T) {
			e := newEnv(t)
			e.a.cfg.Keep = 1
			nx := withNixOS(e)
			nx.failSwitch[toplevel("bad")] = true
			nx.boot(toplevel("base")) // the node's system before slipway
			if o, err := e.apply(nixosGen("a")); err != nil || o.To != 1 {
				t.Fatalf("apply a: %+v %v", o, err)
			}
			to := "b"
			if c.op == "revert" {
				to = "bad"
			}
			run := func() { _, _ = e.apply(nixosGen(to)) }
			switch c.op {
			case "rollback":
				e.applyOK(nixosGen("b"))
				run = func() { _, _ = e.a.Rollback(context.Background(), 0) }
			case "gc": // generations 2 (b) and 3 (a): the commit of 4 (b) collects 1 and 2
				e.applyOK(nixosGen("b"))
				e.applyOK(nixosGen("a"))
			}
			e.crashAt(c.point, 1, reached)
			if got := crashes(run); got != c.point {
				t.Fatalf("the %s did not reach %s", c.op, c.point)
			}
			e.restart()
			o, err := e.a.Recover(context.Background())
			if err != nil || o.Outcome != c.recovered {
				t.Fatalf("recover: %+v %v; want outcome %s", o, err, c.recovered)
			}
			s := e.snap()
			if _, top, _ := nx.Current(); top != toplevel(c.want) || s.Meta.Current != c.gen || s.Meta.LastGood != c.gen || s.Journal != nil {
				t.Errorf("system profile on %s, meta %+v, journal %+v; want toplevel %s, generation %d", short(top), s.Meta, s.Journal, c.want, c.gen)
			}
			if last := lastActivated(nx.calls, "test", "switch"); last != c.want {
				t.Errorf("the running system is %s (the last switch-to-configuration test or switch), want %s (calls %q)", last, c.want, nx.calls)
			}
			if last := lastActivated(nx.calls, "boot", "switch"); last != c.want {
				t.Errorf("the boot loader's default is %s (the last switch-to-configuration boot or switch), want %s (calls %q)", last, c.want, nx.calls)
			}
			if len(s.Quarantine) != c.quarantined {
				t.Errorf("%d generations quarantined, want %d: %+v", len(s.Quarantine), c.quarantined, s.Quarantine)
			}
		})
	}
	for _, p := range NixOSCrashPoints {
		if !reached[p] {
			t.Errorf("NixOS crash point %s is never reached by a case", p)
		}
	}
}

// applyOK applies m and fails the test unless it switched.
func (e *env) applyOK(m *generation.Manifest) {
	e.t.Helper()
	if o, err := e.apply(m); err != nil || o.Outcome != "switched" {
		e.t.Fatalf("apply %s: %+v %v", m.Name, o, err)
	}
}

// lastActivated is the short name of the toplevel whose
// switch-to-configuration the fake ran last with one of actions.
func lastActivated(calls []string, actions ...string) string {
	for i := len(calls) - 1; i >= 0; i-- {
		for _, a := range actions {
			if top, ok := strings.CutPrefix(calls[i], a+" "); ok {
				return top
			}
		}
	}
	return ""
}
