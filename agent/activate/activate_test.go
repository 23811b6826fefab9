package activate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/health"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/generation"
)

// fakeSystemd records calls and keeps unit states. Units listed in failing
// fail their start/restart job.
type fakeSystemd struct {
	mu      sync.Mutex
	calls   []string
	active  map[string]string // unit -> ActiveState
	failing map[string]bool
	foreign map[string]string // unit -> FragmentPath of a unit we do not own
}

func newFake() *fakeSystemd {
	return &fakeSystemd{active: map[string]string{}, failing: map[string]bool{}, foreign: map[string]string{}}
}

func (f *fakeSystemd) record(op, u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+u)
}

func (f *fakeSystemd) Reload(context.Context) error { f.record("reload", ""); return nil }
func (f *fakeSystemd) start(op, u string) error {
	f.record(op, u)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing[u] {
		f.active[u] = "failed"
		return &systemd.JobError{Op: op, Unit: u, Result: "failed"}
	}
	f.active[u] = "active"
	return nil
}
func (f *fakeSystemd) Start(_ context.Context, u string) error   { return f.start("start", u) }
func (f *fakeSystemd) Restart(_ context.Context, u string) error { return f.start("restart", u) }
func (f *fakeSystemd) TryRestart(_ context.Context, u string) error {
	f.record("try-restart", u)
	return nil
}
func (f *fakeSystemd) Stop(_ context.Context, u string) error {
	f.record("stop", u)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[u] = "inactive"
	return nil
}
func (f *fakeSystemd) ResetFailed(context.Context, string) error { return nil }
func (f *fakeSystemd) Status(_ context.Context, u string) (systemd.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := systemd.Status{Name: u, LoadState: "loaded", ActiveState: f.active[u], FragmentPath: f.foreign[u]}
	if st.ActiveState == "" {
		st.ActiveState, st.LoadState = "inactive", "not-found"
	}
	return st, nil
}

// takeCalls returns the calls since the last take, sorted within runs of
// concurrent jobs is not needed: tests compare sets per op.
func (f *fakeSystemd) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	sort.Strings(c)
	return c
}

// fakeVerifier fails when fail is set, else checks units through the probe.
type fakeVerifier struct {
	probe health.UnitProbe
	fail  error
	specs []health.Spec
}

func (v *fakeVerifier) Verify(ctx context.Context, s health.Spec) error {
	v.specs = append(v.specs, s)
	if v.fail != nil {
		err := v.fail
		v.fail = nil
		return err
	}
	for _, u := range s.Units {
		h, err := v.probe(ctx, u)
		if err != nil {
			return err
		}
		if !h.Healthy {
			return &health.Failure{Check: "unit:" + u, Reason: h.State}
		}
	}
	return nil
}

type env struct {
	t       *testing.T
	a       *Switcher
	sd      *fakeSystemd
	v       *fakeVerifier
	db      *state.DB
	layout  stage.Layout
	unitDir string
	etc     string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, sd: newFake(), layout: stage.Layout{Dir: filepath.Join(root, "state")}, unitDir: filepath.Join(root, "units"), etc: filepath.Join(root, "etc")}
	os.MkdirAll(e.unitDir, 0o755)
	db, err := state.Open(e.layout.DB())
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	e.v = &fakeVerifier{probe: Probe(e.sd)}
	st := &stage.Stager{Layout: e.layout, Log: zerolog.Nop()}
	e.a = New(Config{Layout: e.layout, UnitDir: e.unitDir, LinkPrefixes: []string{e.etc}, Keep: 2}, db, st, e.sd, e.v, zerolog.Nop())
	return e
}

func svc(tag string) string {
	return "[Service]\nExecStart=/bin/sleep infinity\n# " + tag + "\n"
}

func manifest(units map[string]string) *generation.Manifest {
	return &generation.Manifest{Name: "test", Units: units, Health: generation.Health{MinHealthyTime: 1}}
}

func (e *env) apply(m *generation.Manifest) (Outcome, error) {
	e.t.Helper()
	return e.a.Apply(context.Background(), m, ApplyOptions{Source: "test"})
}

func (e *env) snap() state.Snapshot {
	s, err := e.db.Snapshot()
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) linkOf(u string) string {
	t, _ := os.Readlink(filepath.Join(e.unitDir, u))
	return t
}

func TestSwitchSequence(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// gen1: a service and a socket-activated pair.
	g1 := manifest(map[string]string{
		"keep.service": svc("1"), "change.service": svc("1"), "gone.service": svc("1"),
		"sock.socket": "[Socket]\nListenStream=127.0.0.1:9999\n", "sock.service": svc("1"),
	})
	o, err := e.apply(g1)
	if err != nil || o.Outcome != "switched" || o.To != 1 {
		t.Fatalf("gen1: %+v, %v", o, err)
	}
	if got, want := e.sd.takeCalls(), []string{"reload ", "start change.service", "start gone.service", "start keep.service", "start sock.socket"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("gen1 calls %q, want %q (sock.service is socket-activated, never started directly)", got, want)
	}
	if l := e.linkOf("keep.service"); l != filepath.Join(e.layout.Current(), "units", "keep.service") {
		t.Fatalf("unit link -> %q", l)
	}

	// gen2: change one, add one, remove one, keep one; the socket's service changes too.
	g2 := manifest(map[string]string{
		"keep.service": svc("1"), "change.service": svc("2"), "new.service": svc("2"),
		"sock.socket": "[Socket]\nListenStream=127.0.0.1:9999\n", "sock.service": svc("2"),
	})
	o, err = e.apply(g2)
	if err != nil || o.Outcome != "switched" {
		t.Fatalf("gen2: %+v, %v", o, err)
	}
	want := []string{"reload ", "restart change.service", "start new.service", "stop gone.service", "try-restart sock.service"}
	if got := e.sd.takeCalls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("gen2 calls %q, want %q", got, want)
	}
	if _, err := os.Lstat(filepath.Join(e.unitDir, "gone.service")); !os.IsNotExist(err) {
		t.Fatalf("removed unit's link still there: %v", err)
	}
	if !reflect.DeepEqual(o.Plan, Plan{Added: []string{"new.service"}, Changed: []string{"change.service", "sock.service"}, Removed: []string{"gone.service"}, Unchanged: []string{"keep.service", "sock.socket"}}) {
		t.Fatalf("plan %+v", o.Plan)
	}

	// Same manifest again: nothing restarted.
	o, err = e.apply(g2)
	if err != nil || o.Outcome != "unchanged" {
		t.Fatalf("reapply: %+v, %v", o, err)
	}
	if c := e.sd.takeCalls(); len(c) != 0 {
		t.Fatalf("reapply made calls: %q", c)
	}

	// gen3: a unit that fails to start → back on gen2, gen3 quarantined.
	g3 := manifest(map[string]string{"keep.service": svc("1"), "change.service": svc("2"), "new.service": svc("2"), "bad.service": svc("3"),
		"sock.socket": "[Socket]\nListenStream=127.0.0.1:9999\n", "sock.service": svc("2")})
	e.sd.failing["bad.service"] = true
	o, err = e.apply(g3)
	if !errors.Is(err, ErrReverted) || o.Outcome != "reverted" || o.From != 3 || o.To != 2 {
		t.Fatalf("gen3: %+v, %v", o, err)
	}
	if !strings.Contains(o.Reason, "bad.service") {
		t.Fatalf("reason %q does not name the unit", o.Reason)
	}
	calls := e.sd.takeCalls()
	if !contains(calls, "stop bad.service") || !contains(calls, "start keep.service") {
		t.Fatalf("revert calls %q", calls)
	}
	s := e.snap()
	if s.Meta.Current != 2 || s.Meta.LastGood != 2 || s.Journal != nil {
		t.Fatalf("after revert: meta %+v journal %+v", s.Meta, s.Journal)
	}
	if g, _ := s.Generation(3); g.Status != state.StatusQuarantined {
		t.Fatalf("gen3 status %q", g.Status)
	}
	if n, _ := e.layout.CurrentNumber(); n != 2 {
		t.Fatalf("current -> %d", n)
	}
	// Quarantined: not retried implicitly.
	if _, err := e.apply(g3); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("reapply quarantined: %v", err)
	}
	if c := e.sd.takeCalls(); len(c) != 0 {
		t.Fatalf("quarantined reapply made calls: %q", c)
	}

	// gen4: health check fails → revert.
	delete(e.sd.failing, "bad.service")
	g4 := manifest(map[string]string{"keep.service": svc("1"), "change.service": svc("4")})
	e.v.fail = &health.Failure{Check: "web-http", Reason: "connection refused"}
	o, err = e.apply(g4)
	if !errors.Is(err, ErrReverted) || !strings.Contains(o.Reason, "web-http") {
		t.Fatalf("gen4: %+v, %v", o, err)
	}
	e.sd.takeCalls()

	// Rollback to gen1.
	o, err = e.a.Rollback(ctx, 0)
	if err != nil || o.To != 1 || o.Outcome != "switched" {
		t.Fatalf("rollback: %+v, %v", o, err)
	}
	if s := e.snap(); s.Meta.Current != 1 {
		t.Fatalf("after rollback current %d", s.Meta.Current)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestRefusesUnownedUnitsAndPaths(t *testing.T) {
	e := newEnv(t)
	// A unit file someone else wrote.
	foreign := filepath.Join(e.unitDir, "nginx.service")
	os.WriteFile(foreign, []byte("[Service]\nExecStart=/usr/sbin/nginx\n"), 0o644)
	// A unit shipped by a package.
	e.sd.foreign["ssh.service"] = "/lib/systemd/system/ssh.service"
	e.sd.active["ssh.service"] = "active"
	// A config file someone else wrote under the link prefix.
	os.MkdirAll(e.etc, 0o755)
	os.WriteFile(filepath.Join(e.etc, "app.conf"), []byte("theirs"), 0o644)

	for _, tc := range []struct {
		name string
		m    *generation.Manifest
		want string
	}{
		{"unit file exists", manifest(map[string]string{"nginx.service": svc("x")}), "nginx.service exists"},
		{"unit shadowed", manifest(map[string]string{"ssh.service": svc("x")}), "already provided by /lib/systemd/system/ssh.service"},
		{"path exists", &generation.Manifest{Files: map[string]generation.File{"app.conf": {Content: "ours"}},
			Links: []generation.Link{{Path: filepath.Join(e.etc, "app.conf"), File: "app.conf"}}}, "app.conf exists"},
		{"path escapes", &generation.Manifest{Files: map[string]generation.File{"../x": {Content: "x"}}}, "files"},
		{"link outside prefix", &generation.Manifest{Files: map[string]generation.File{"x": {Content: "x"}},
			Links: []generation.Link{{Path: "/usr/bin/x", File: "x"}}}, "links[0].path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tree(t, filepath.Dir(e.unitDir))
			_, err := e.apply(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
			if c := e.sd.takeCalls(); len(c) != 0 {
				t.Fatalf("calls made: %q", c)
			}
			if after := tree(t, filepath.Dir(e.unitDir)); before != after {
				t.Fatalf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// tree prints every entry under root with its content or link target,
// except the state database (its bytes change on every open).
func tree(t *testing.T, root string) string {
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || filepath.Base(p) == "state.db" || filepath.Base(p) == "agent.lock" {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, "%s -> %s\n", rel, l)
		case fi.Mode().IsRegular():
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %v %q\n", rel, fi.Mode(), c)
		default:
			fmt.Fprintf(&b, "%s/\n", rel)
		}
		return nil
	})
	return b.String()
}

func TestRecoverRevertsInterruptedSwitch(t *testing.T) {
	e := newEnv(t)
	if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash in the verify phase of a switch to gen2: stage and
	// flip it by hand, as the dead process would have, and leave the journal.
	g2 := manifest(map[string]string{"a.service": svc("2"), "b.service": svc("2")})
	id, _ := g2.ID()
	if _, err := e.a.stager.Stage(context.Background(), 2, g2); err != nil {
		t.Fatal(err)
	}
	if err := e.a.transition(context.Background(), move{from: manifest(map[string]string{"a.service": svc("1")}), to: g2, toN: 2}); err != nil {
		t.Fatal(err)
	}
	e.db.Update(func(tx *state.Tx) error {
		tx.PutGeneration(state.Generation{Number: 2, ID: id, Status: state.StatusStaged})
		return tx.PutJournal(state.Journal{Op: "switch", From: 1, To: 2, Phase: state.PhaseVerify, PID: 4242})
	})
	e.sd.takeCalls()

	o, err := e.a.Recover(context.Background())
	if err != nil || o.Outcome != "reverted" || o.To != 1 {
		t.Fatalf("recover: %+v, %v", o, err)
	}
	calls := e.sd.takeCalls()
	if !contains(calls, "stop b.service") || !contains(calls, "restart a.service") {
		t.Fatalf("recover calls %q", calls)
	}
	s := e.snap()
	if s.Journal != nil || s.Meta.Current != 1 {
		t.Fatalf("after recover: %+v %+v", s.Meta, s.Journal)
	}
	if g, _ := s.Generation(2); g.Status != state.StatusQuarantined || !strings.Contains(g.Reason, "verify phase") {
		t.Fatalf("gen2 %+v", g)
	}
	// Nothing left to revert the second time; a stopped unit of the
	// current generation is started again (as at boot).
	e.sd.active["a.service"] = "inactive"
	e.sd.takeCalls()
	if o, err := e.a.Recover(context.Background()); err != nil || o.Outcome != "nothing-to-recover" || !reflect.DeepEqual(o.Started, []string{"a.service"}) {
		t.Fatalf("second recover: %+v %v", o, err)
	}
	if c := e.sd.takeCalls(); !reflect.DeepEqual(c, []string{"start a.service"}) {
		t.Fatalf("second recover calls %q", c)
	}
}

func TestFirstGenerationFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.sd.failing["a.service"] = true
	_, err := e.apply(manifest(map[string]string{"a.service": svc("1")}))
	if !errors.Is(err, ErrReverted) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Lstat(filepath.Join(e.unitDir, "a.service")); !os.IsNotExist(err) {
		t.Fatal("unit link left behind")
	}
	if _, err := os.Lstat(e.layout.Current()); !os.IsNotExist(err) {
		t.Fatal("current left behind")
	}
}

func TestGCKeepsRecentCurrentAndLastGood(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 5; i++ {
		m := manifest(map[string]string{"a.service": svc(fmt.Sprint(i))})
		m.Artifacts = []generation.Artifact{{Name: "bin", SHA256: sha(fmt.Sprint(i)), Size: int64(len(fmt.Sprint(i)))}}
		e.a.stager.Blobs = nil
		if _, err := e.a.Apply(context.Background(), m, ApplyOptions{Blobs: strBlobs{}}); err != nil {
			t.Fatal(err)
		}
	}
	for n := 1; n <= 5; n++ {
		if got, want := e.a.stager.Exists(n), n >= 3; got != want {
			t.Fatalf("generation %d on disk: %v, want %v (keep 2 besides current)", n, got, want)
		}
	}
	blobs, _ := os.ReadDir(e.layout.Store())
	if len(blobs) != 3 {
		t.Fatalf("%d blobs left, want 3", len(blobs))
	}
	if g, _ := e.snap().Generation(1); g.Status != state.StatusCollected {
		t.Fatalf("gen1 status %q", g.Status)
	}
}

type strBlobs struct{}

func (strBlobs) Open(_ context.Context, a generation.Artifact) (io.ReadCloser, error) {
	for i := 0; i < 10; i++ {
		if sha(fmt.Sprint(i)) == a.SHA256 {
			return io.NopCloser(strings.NewReader(fmt.Sprint(i))), nil
		}
	}
	return nil, errors.New("unknown blob")
}

func TestDiffRestartsUnitsWhoseArtifactsOrFilesChanged(t *testing.T) {
	unit := "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web --config /etc/web/web.toml\n"
	mk := func(sha, conf, other string) *generation.Manifest {
		return &generation.Manifest{
			Units:     map[string]string{"web.service": unit, "other.service": svc("x")},
			Artifacts: []generation.Artifact{{Name: "web", SHA256: sha, Size: 1}},
			Files:     map[string]generation.File{"web.toml": {Content: conf}, "other.toml": {Content: other}},
			Links:     []generation.Link{{Path: "/etc/web/web.toml", File: "web.toml"}},
		}
	}
	base := mk(sha("1"), "a", "a")
	for _, tc := range []struct {
		name string
		to   *generation.Manifest
		want []string
	}{
		{"nothing", mk(sha("1"), "a", "a"), nil},
		{"artifact", mk(sha("2"), "a", "a"), []string{"web.service"}},
		{"linked file", mk(sha("1"), "b", "a"), []string{"web.service"}},
		{"unrelated file", mk(sha("1"), "a", "b"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diff(base, tc.to).Changed; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("changed %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConfirm(t *testing.T) {
	e := newEnv(t)
	g1 := manifest(map[string]string{"a.service": svc("1")})
	var got []string
	ok := func(ctx context.Context, n int, id string) error {
		got = append(got, fmt.Sprint(n, " ", id))
		return nil
	}
	o, err := e.a.Apply(context.Background(), g1, ApplyOptions{Confirm: ok})
	if err != nil || o.Outcome != "switched" || len(got) != 1 || got[0] != fmt.Sprint(1, " ", o.ID) {
		t.Fatalf("confirmed switch: %+v %v, confirm calls %q", o, err, got)
	}
	// No confirm within confirm_timeout: the switch reverts.
	g2 := manifest(map[string]string{"a.service": svc("2")})
	g2.ConfirmTimeout = generation.Duration(50 * time.Millisecond)
	never := func(ctx context.Context, n int, id string) error { <-ctx.Done(); return ctx.Err() }
	start := time.Now()
	o, err = e.a.Apply(context.Background(), g2, ApplyOptions{Confirm: never})
	if !errors.Is(err, ErrReverted) || !strings.Contains(o.Reason, "no confirm from the server within confirm_timeout 50ms") {
		t.Fatalf("unconfirmed switch: %+v %v", o, err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("revert took %s", time.Since(start))
	}
	if s := e.snap(); s.Meta.Current != 1 {
		t.Fatalf("current %d after an unconfirmed switch", s.Meta.Current)
	}
}
