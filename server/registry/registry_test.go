package registry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
)

// flakyStore is a real store whose transactions can be made to conflict
// (every one, or the next n) or to fail.
type flakyStore struct {
	store.Store
	conflictAll  atomic.Bool
	conflictNext atomic.Int32
	fail         atomic.Bool
	txns         atomic.Int32 // transactions attempted
	// nodeGets counts reads of node records (nodes/<name>).
	nodeGets atomic.Int32
}

func (s *flakyStore) Get(ctx context.Context, key string) (store.Entry, error) {
	if strings.HasPrefix(key, "nodes/") {
		s.nodeGets.Add(1)
	}
	return s.Store.Get(ctx, key)
}

func (s *flakyStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	s.txns.Add(1)
	switch {
	case s.conflictAll.Load():
		return 0, fmt.Errorf("%w: forced by the test", store.ErrConflict)
	case s.conflictNext.Add(-1) >= 0:
		return 0, fmt.Errorf("%w: forced once by the test", store.ErrConflict)
	case s.fail.Load():
		return 0, errors.New("disk on fire")
	}
	return s.Store.Txn(ctx, conds, ops)
}

type noBlobs struct{}

func (noBlobs) Has(string) (bool, int64, error) { return false, 0, nil }

// desiredCalls records Config.OnDesired: the nodes of each call and, read
// inside the call, their desired ETags (so a test sees what was committed
// when the hook ran).
type desiredCalls struct {
	mu    sync.Mutex
	reg   *registry.Registry
	calls [][]string
	seen  map[string]string // node -> ETag read inside the latest call naming it
}

func (d *desiredCalls) on(nodes []string) {
	seen := map[string]string{}
	for _, n := range nodes {
		des, err := d.reg.Desired(context.Background(), n)
		if err != nil {
			panic(err)
		}
		seen[n] = des.ETag()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, slices.Clone(nodes))
	for n, e := range seen {
		d.seen[n] = e
	}
}

// take returns the calls so far and forgets them.
func (d *desiredCalls) take() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

type fixture struct {
	t     *testing.T
	dir   string
	st    *flakyStore
	reg   *registry.Registry
	ros   *rollout.Machine
	hook  *desiredCalls
	now   time.Time
	ctx   context.Context
	nodes map[string]string // node -> node token
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), ctx: context.Background(), nodes: map[string]string{}}
	f.open()
	t.Cleanup(func() { f.st.Close() })
	return f
}

// open opens the store in f.dir and a registry over it (again: a restart).
func (f *fixture) open() {
	f.t.Helper()
	bs, err := boltstore.Open(filepath.Join(f.dir, "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		f.t.Fatal(err)
	}
	f.st = &flakyStore{Store: bs}
	f.hook = &desiredCalls{seen: map[string]string{}}
	f.reg = registry.New(f.st, noBlobs{}, registry.Config{Now: func() time.Time { return f.now }, OfflineAfter: time.Hour, OnDesired: f.hook.on}, zerolog.Nop())
	f.hook.reg = f.reg
	f.ros = rollout.New(f.reg, rollout.Config{}, zerolog.Nop())
}

func (f *fixture) enrol(name string, labels map[string]string) {
	f.t.Helper()
	jt, err := f.reg.CreateJoinToken(f.ctx, "token:test", 0, "")
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: labels})
	if err != nil {
		f.t.Fatal(err)
	}
	f.nodes[name] = resp.NodeToken
}

// reenrol enrols an enrolled node again with its node token (new labels).
func (f *fixture) reenrol(name string, labels map[string]string) {
	f.t.Helper()
	if _, err := f.reg.EnrollWithNodeToken(f.ctx, api.EnrollRequest{Name: name, Labels: labels}, f.nodes[name]); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) rev() int64 {
	f.t.Helper()
	r, err := f.st.Rev(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// webWithOneNode enrols web-1 (role=web) and publishes manifest tag to it
// through a rollout; it returns the manifest's ID.
func (f *fixture) webWithOneNode(tag string) string {
	f.t.Helper()
	f.enrol("web-1", map[string]string{"role": "web"})
	m, id := registrytest.UnitManifest(f.t, tag)
	if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m}); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fixture) node(name string) api.Node {
	f.t.Helper()
	n, err := f.reg.Node(f.ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLiveness: SetLiveness stores a node's gossip liveness with since
// when, writes only on a change (the same status again leaves the store's
// revision alone and keeps since), refuses unknown nodes and statuses, is
// shown by Node and Nodes, and survives a restart and a re-enrolment.
func TestLiveness(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	f.enrol("db-1", nil)
	at := func(min int) time.Time { return f.now.Add(time.Duration(min) * time.Minute) }

	steps := []struct {
		status  string
		at      time.Time
		changed bool
		since   time.Time
	}{
		{api.LivenessAlive, at(1), true, at(1)},
		{api.LivenessAlive, at(2), false, at(1)}, // every gossip tick says alive: nothing written
		{api.LivenessSuspect, at(3), true, at(3)},
		{api.LivenessFailed, at(4), true, at(4)},
		{api.LivenessFailed, at(5), false, at(4)},
		{api.LivenessAlive, at(6), true, at(6)},
		{api.LivenessLeft, at(7), true, at(7)},
	}
	for i, s := range steps {
		before := f.rev()
		changed, err := f.reg.SetLiveness(f.ctx, "web-1", s.status, s.at)
		if err != nil || changed != s.changed {
			t.Fatalf("step %d: SetLiveness(%s) = %v, %v; want changed %v", i, s.status, changed, err, s.changed)
		}
		if wrote := f.rev() != before; wrote != s.changed {
			t.Fatalf("step %d: %s: store written %v, want %v", i, s.status, wrote, s.changed)
		}
		if n := f.node("web-1"); n.Liveness != s.status || !n.LivenessSince.Equal(s.since) {
			t.Fatalf("step %d: node shows %s since %v, want %s since %v", i, n.Liveness, n.LivenessSince, s.status, s.since)
		}
	}
	// No time given: the registry's clock.
	if _, err := f.reg.SetLiveness(f.ctx, "db-1", api.LivenessAlive, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := f.node("db-1"); !n.LivenessSince.Equal(f.now) {
		t.Errorf("db-1 since %v, want the registry's now %v", n.LivenessSince, f.now)
	}

	before := f.rev()
	if _, err := f.reg.SetLiveness(f.ctx, "stranger", api.LivenessAlive, at(8)); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("a member that is no node: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"leaving", "", "Alive"} {
		if _, err := f.reg.SetLiveness(f.ctx, "web-1", bad, at(8)); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("liveness %q: %v, want ErrInvalid", bad, err)
		}
	}
	if f.rev() != before {
		t.Error("refused liveness wrote the store")
	}
	if calls := f.hook.take(); len(calls) != 0 {
		t.Errorf("liveness announced as desired changes: %v", calls)
	}

	// Nodes lists it too; a node gossip never saw has none.
	f.enrol("new-1", nil)
	ns, err := f.reg.Nodes(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range ns {
		got[n.Name] = n.Liveness + "@" + n.LivenessSince.Format(time.TimeOnly)
	}
	want := map[string]string{"web-1": "left@12:07:00", "db-1": "alive@12:00:00", "new-1": "@00:00:00"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Nodes liveness %v, want %v", got, want)
	}

	// A re-enrolment keeps it; so does a restart.
	f.reenrol("web-1", map[string]string{"role": "web", "zone": "b"})
	must(t, f.st.Close())
	f.open()
	if n := f.node("web-1"); n.Liveness != api.LivenessLeft || !n.LivenessSince.Equal(at(7)) || n.Labels["zone"] != "b" {
		t.Errorf("after re-enrolment and restart: %s since %v, labels %v", n.Liveness, n.LivenessSince, n.Labels)
	}
}

// TestOnDesired: every committed change of desired generations (a
// release's first wave, a rollout retry, an auto-revert, a node rollback
// and retry) calls OnDesired once, after the commit (the hook already
// reads the new desired generation), with exactly the nodes changed;
// transactions that change no desired generation, fail, or conflict to the
// end never call it, and one that conflicts before it commits calls it
// once.
func TestOnDesired(t *testing.T) {
	f := newFixture(t)
	web := map[string]string{"role": "web"}
	f.enrol("web-1", web)
	f.enrol("web-2", web)
	f.enrol("db-1", map[string]string{"role": "db"})
	for _, n := range []string{"web-1", "web-2", "db-1"} {
		must(t, f.reg.Report(f.ctx, n, api.Report{State: api.AgentIdle}))
	}
	if calls := f.hook.take(); len(calls) != 0 {
		t.Fatalf("enrolments and reports announced: %v", calls)
	}
	expect := func(step string, want ...[]string) {
		t.Helper()
		got := f.hook.take()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: OnDesired calls %v, want %v", step, got, want)
		}
		for _, nodes := range want {
			for _, n := range nodes {
				d, err := f.reg.Desired(f.ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				f.hook.mu.Lock()
				seen := f.hook.seen[n]
				f.hook.mu.Unlock()
				if seen != d.ETag() {
					t.Fatalf("%s: the hook read %s's desired %q, committed is %q: it ran before the commit", step, n, seen, d.ETag())
				}
			}
		}
	}
	// report says node runs gens (number → id, the last is current),
	// which the server confirmed (as a real agent's confirm does before it
	// lists a generation as good: the server trusts only its confirms).
	report := func(node string, ids ...string) {
		t.Helper()
		if _, err := f.reg.Confirm(f.ctx, node, api.ConfirmRequest{ID: ids[len(ids)-1], Number: len(ids)}); err != nil {
			t.Fatal(err)
		}
		rep := api.Report{State: api.AgentIdle, Current: len(ids), CurrentID: ids[len(ids)-1], LastGood: len(ids)}
		for i, id := range ids {
			rep.Generations = append(rep.Generations, api.GenerationReport{Number: i + 1, ID: id, Status: "good"})
		}
		must(t, f.reg.Report(f.ctx, node, rep))
	}
	release := func(raw []byte, target string, s api.Strategy) api.Release {
		t.Helper()
		rel, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: target, Manifest: raw, Strategy: &s})
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	rolloutState := func(id string) string {
		t.Helper()
		ro, err := f.ros.Rollout(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ro.State
	}

	// Release 1 publishes to both web nodes in one transaction.
	m1, id1 := registrytest.UnitManifest(t, "v1")
	r1 := release(m1, "role=web", api.Strategy{Kind: api.StrategyAllAtOnce})
	expect("release 1", []string{"web-1", "web-2"})
	report("web-1", id1)
	report("web-2", id1)
	must(t, f.ros.Tick(f.ctx))
	if st := rolloutState(r1.Rollout); st != api.RolloutSucceeded {
		t.Fatalf("rollout 1 %s", st)
	}
	expect("rollout 1 finishing")

	// Release 2 fails on web-2 and halts (no auto_revert): nothing
	// published. A rollout retry of web-2 republishes to web-2 alone.
	m2, id2 := registrytest.UnitManifest(t, "v2")
	r2 := release(m2, "role=web", api.Strategy{Kind: api.StrategyAllAtOnce})
	expect("release 2", []string{"web-1", "web-2"})
	report("web-1", id1, id2)
	must(t, f.reg.Report(f.ctx, "web-2", api.Report{State: api.AgentFailed, Target: id2, Current: 1, CurrentID: id1, Reason: "unit failed"}))
	must(t, f.ros.Tick(f.ctx))
	if st := rolloutState(r2.Rollout); st != api.RolloutFailed {
		t.Fatalf("rollout 2 %s", st)
	}
	expect("rollout 2 halting")
	if _, err := f.ros.RolloutRetry(f.ctx, "token:test", r2.Rollout, "web-2"); err != nil {
		t.Fatal(err)
	}
	expect("rollout retry", []string{"web-2"})
	report("web-2", id1, id2)
	must(t, f.ros.Tick(f.ctx))
	expect("rollout 2 finishing")

	// Release 3 with auto_revert fails on web-1: both go back to release 2
	// in the transaction that halts it.
	m3, id3 := registrytest.UnitManifest(t, "v3")
	r3 := release(m3, "role=web", api.Strategy{Kind: api.StrategyAllAtOnce, AutoRevert: true})
	expect("release 3", []string{"web-1", "web-2"})
	must(t, f.reg.Report(f.ctx, "web-1", api.Report{State: api.AgentFailed, Target: id3, Current: 2, CurrentID: id2, Reason: "unhealthy"}))
	must(t, f.ros.Tick(f.ctx))
	if st := rolloutState(r3.Rollout); st != api.RolloutReverted {
		t.Fatalf("rollout 3 %s", st)
	}
	expect("auto-revert", []string{"web-1", "web-2"})
	if d, _ := f.reg.Desired(f.ctx, "web-2"); d.ID != id2 {
		t.Fatalf("web-2 reverted to %s, want %s", d.ID, id2)
	}
	// Its manifest is quarantined: deploying it again fails, announcing
	// nothing.
	if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m3}); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("quarantined release: %v", err)
	}
	expect("refused release")

	// Per-node rollback and retry.
	if _, err := f.reg.Rollback(f.ctx, "token:test", "web-2", 1); err != nil {
		t.Fatal(err)
	}
	expect("rollback", []string{"web-2"})
	// failOn reports that node reverted its desired generation.
	failOn := func(node string) {
		t.Helper()
		d, err := f.reg.Desired(f.ctx, node)
		must(t, err)
		must(t, f.reg.Report(f.ctx, node, api.Report{State: api.AgentFailed, Target: d.ID, Current: 1, CurrentID: id1, Reason: "unhealthy"}))
	}
	failOn("web-1")
	if _, err := f.reg.Retry(f.ctx, "token:test", "web-1"); err != nil {
		t.Fatal(err)
	}
	expect("retry", []string{"web-1"})
	if _, err := f.reg.Retry(f.ctx, "token:test", "db-1"); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("retry of a node without a desired generation: %v", err)
	}
	expect("refused retry")

	// A canary release publishes its canary wave only.
	m4, _ := registrytest.UnitManifest(t, "v4")
	r4 := release(m4, "role=web", api.Strategy{Kind: api.StrategyCanary, Canary: 1})
	ro4, err := f.ros.Rollout(f.ctx, r4.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	canary := ro4.Waves[0].Nodes[0].Name
	expect("canary release", []string{canary})

	// Writes that change no desired generation announce nothing.
	must(t, f.reg.Audit(f.ctx, "token:test", "test", "", ""))
	must(t, f.reg.Report(f.ctx, "db-1", api.Report{State: api.AgentIdle}))
	f.reenrol("db-1", map[string]string{"role": "db", "zone": "a"})
	if _, err := f.reg.SetLiveness(f.ctx, "db-1", api.LivenessAlive, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ros.RolloutAction(f.ctx, "token:test", r4.Rollout, "pause"); err != nil {
		t.Fatal(err)
	}
	expect("other writes")

	// A transaction that conflicts to the end or fails commits nothing
	// and announces nothing.
	failOn("web-1")
	before, _ := f.reg.Desired(f.ctx, "web-1")
	f.st.conflictAll.Store(true)
	if _, err := f.reg.Retry(f.ctx, "token:test", "web-1"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retry with every transaction conflicting: %v", err)
	}
	f.st.conflictAll.Store(false)
	f.st.fail.Store(true)
	if _, err := f.reg.Retry(f.ctx, "token:test", "web-1"); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("retry with a failing store: %v", err)
	}
	f.st.fail.Store(false)
	expect("failed transactions")
	if after, _ := f.reg.Desired(f.ctx, "web-1"); after.ETag() != before.ETag() {
		t.Fatalf("failed retries changed the desired generation: %s → %s", before.ETag(), after.ETag())
	}
	// One that conflicts, then commits on its retry: announced once.
	f.st.conflictNext.Store(2)
	txns := f.st.txns.Load()
	if _, err := f.reg.Retry(f.ctx, "token:test", "web-1"); err != nil {
		t.Fatal(err)
	}
	if n := f.st.txns.Load() - txns; n != 3 {
		t.Fatalf("%d transaction attempts, want 3 (2 conflicts)", n)
	}
	expect("retry after conflicts", []string{"web-1"})
}

// TestEnrollVerified: a node enrols without a join token when its caller
// vouches for it (the tailnet); no node token is issued, an earlier one is
// revoked, labels are updated; Enroll still wants a join token.
func TestEnrollVerified(t *testing.T) {
	f := newFixture(t)
	if _, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: "web-1"}); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("Enroll without a join token: %v", err)
	}
	if _, err := f.reg.EnrollVerified(f.ctx, api.EnrollRequest{Name: "web-1"}, ""); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("EnrollVerified without saying how: %v", err)
	}
	if _, err := f.reg.EnrollVerified(f.ctx, api.EnrollRequest{Name: "-bad"}, "tailnet identity"); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("EnrollVerified with a bad name: %v", err)
	}
	resp, err := f.reg.EnrollVerified(f.ctx, api.EnrollRequest{Name: "web-1", Labels: map[string]string{"role": "web"}, AgeRecipient: "age1x", AgentVersion: "1.0"}, "tailnet identity")
	if err != nil || resp.Name != "web-1" || resp.NodeToken != "" {
		t.Fatalf("EnrollVerified: %+v %v", resp, err)
	}
	n := f.node("web-1")
	if n.Labels["role"] != "web" || n.AgeRecipient != "age1x" || n.AgentVersion != "1.0" {
		t.Fatalf("node after EnrollVerified: %+v", n)
	}
	if _, err := f.reg.NodeByToken(f.ctx, ""); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("empty node token: %v", err)
	}

	// A node enrolled with a join token moves to the tailnet: its token
	// is revoked, its labels updated.
	f.enrol("web-2", map[string]string{"role": "web"})
	old := f.nodes["web-2"]
	if name, err := f.reg.NodeByToken(f.ctx, old); err != nil || name != "web-2" {
		t.Fatalf("token before: %s %v", name, err)
	}
	if _, err := f.reg.EnrollVerified(f.ctx, api.EnrollRequest{Name: "web-2", Labels: map[string]string{"role": "db"}}, "tailnet identity"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.NodeByToken(f.ctx, old); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("old node token after re-enrolment by identity: %v", err)
	}
	if n := f.node("web-2"); n.Labels["role"] != "db" || !n.EnrolledAt.Equal(f.now) {
		t.Fatalf("web-2 after re-enrolment: %+v", n)
	}
	// Again (the agent restarts): fine.
	if _, err := f.reg.EnrollVerified(f.ctx, api.EnrollRequest{Name: "web-2", Labels: map[string]string{"role": "db"}}, "tailnet identity"); err != nil {
		t.Fatal(err)
	}
	evs, err := f.reg.Events(f.ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, e := range evs {
		if e.Action == "node.enroll" {
			details = append(details, e.Actor+": "+e.Detail)
		}
	}
	want := []string{
		"node:web-1: new node by tailnet identity, without a join token",
		"node:web-2: new node",
		"node:web-2: re-enrolled by tailnet identity, without a join token; previous node token revoked",
		"node:web-2: re-enrolled by tailnet identity, without a join token",
	}
	if !slices.Equal(details, want) {
		t.Errorf("enrol events:\n%s\nwant\n%s", strings.Join(details, "\n"), strings.Join(want, "\n"))
	}
}

// TestHotKeyContention: many writers on one key (the event counter, which
// every audited action bumps) all get through; before the retries backed
// off, 100 agents reporting at once exhausted them and got HTTP 500s.
func TestHotKeyContention(t *testing.T) {
	f := newFixture(t)
	const writers, each = 100, 4
	for i := range writers {
		f.enrol(fmt.Sprintf("n%03d", i), nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for i := range writers {
		wg.Go(func() {
			name := fmt.Sprintf("n%03d", i)
			for j := range each {
				st := api.AgentSwitching
				if j%2 == 1 {
					st = api.AgentIdle
				}
				errs <- f.reg.Report(f.ctx, name, api.Report{State: st, Reason: fmt.Sprint(j)})
				errs <- f.reg.Audit(f.ctx, "node:"+name, "test.hot", name, fmt.Sprint(j))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a writer gave up: %v", err)
		}
	}
	evs, err := f.reg.Events(f.ctx, 0, 100000)
	must(t, err)
	seqs := map[int64]bool{}
	n := 0
	for _, e := range evs {
		seqs[e.Seq] = true
		if e.Action == "test.hot" {
			n++
		}
	}
	if n != writers*each || len(seqs) != len(evs) {
		t.Errorf("%d test events (want %d), %d distinct sequence numbers over %d events", n, writers*each, len(seqs), len(evs))
	}
}

// TestRetryNeedsAFailure: a node retry is refused (ErrConflict, saying
// what the node does instead, writing nothing) unless the node's desired
// generation failed there.
func TestRetryNeedsAFailure(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	m1, id1 := registrytest.UnitManifest(t, "v1")
	_, id2 := registrytest.UnitManifest(t, "v2")
	if _, err := f.reg.Retry(f.ctx, "token:test", "web-1"); !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "no desired generation") {
		t.Fatalf("retry without a desired generation: %v", err)
	}
	if _, err := f.reg.Retry(f.ctx, "token:test", "nobody"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("retry of an unknown node: %v", err)
	}
	if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1}); err != nil {
		t.Fatal(err)
	}
	good := api.GenerationReport{Number: 1, ID: id1, Status: "good"}
	for _, tc := range []struct {
		name string
		rep  *api.Report
		ok   bool
		want string // in the refusal
	}{
		{"no report yet", nil, false, "has not reported yet"},
		{"switching to it", &api.Report{State: api.AgentSwitching, Target: id1}, false, "is switching to " + id1},
		{"runs it", &api.Report{State: api.AgentIdle, Current: 1, CurrentID: id1, Generations: []api.GenerationReport{good}}, false, "runs its desired generation " + id1},
		{"idle on another", &api.Report{State: api.AgentIdle, CurrentID: id2}, false, "has not tried its desired generation"},
		{"failed on another", &api.Report{State: api.AgentFailed, Target: id2, CurrentID: "sha256-" + strings.Repeat("0", 64)}, false, "has not tried"},
		{"reverted it", &api.Report{State: api.AgentFailed, Target: id1, CurrentID: id2, Reason: "unhealthy"}, true, ""},
		{"quarantined it", &api.Report{State: api.AgentIdle, CurrentID: id2, Generations: []api.GenerationReport{{Number: 1, ID: id1, Status: "quarantined"}}}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rep != nil {
				must(t, f.reg.Report(f.ctx, "web-1", *tc.rep))
			}
			before := f.rev()
			n, err := f.reg.Retry(f.ctx, "token:test", "web-1")
			if tc.ok {
				if err != nil {
					t.Fatalf("retry: %v", err)
				}
				if n.Retry == 0 {
					t.Fatalf("retry counter not bumped: %+v", n)
				}
				return
			}
			if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "nothing failed to retry") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("retry: %v, want a conflict saying %q", err, tc.want)
			}
			if f.rev() != before {
				t.Error("a refused retry wrote the store")
			}
		})
	}
}

// TestReleaseSelectingNoNode: a release whose target selects no enrolled
// node is ErrInvalid, naming the target, and stores nothing (no manifest,
// release, rollout or event).
func TestReleaseSelectingNoNode(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	m1, id1 := registrytest.UnitManifest(t, "v1")
	before := f.rev()
	_, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=db", Manifest: m1})
	if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), `target "role=db" selects no enrolled node`) {
		t.Fatalf("release for no node: %v", err)
	}
	if f.rev() != before {
		t.Error("the refused release wrote the store")
	}
	if _, err := f.reg.Manifest(f.ctx, id1); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("manifest stored: %v", err)
	}
	if rels, _ := f.reg.Releases(f.ctx); len(rels) != 0 {
		t.Errorf("releases: %v", rels)
	}
}

// TestNodeRollbackOnlyToConfirmed: a node rollback to a generation the
// node never ran and confirmed (staged, failed before the switch,
// quarantined) is refused, writing nothing; to one it confirmed it goes.
func TestNodeRollbackOnlyToConfirmed(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	var ids []string
	for _, tag := range []string{"v1", "v2", "v3", "v4", "v5"} {
		m, id := registrytest.UnitManifest(t, tag)
		ids = append(ids, id)
		// Published, so only the node's history decides.
		if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m}); err != nil {
			t.Fatal(err)
		}
		must(t, f.reg.Report(f.ctx, "web-1", api.Report{State: api.AgentIdle}))
		must(t, f.ros.Tick(f.ctx))
		if ros, _ := f.ros.Rollouts(f.ctx); ros[0].State == api.RolloutRunning {
			if _, err := f.ros.RolloutAction(f.ctx, "token:test", ros[0].ID, "abort"); err != nil {
				t.Fatal(err)
			}
		}
	}
	must(t, f.reg.Report(f.ctx, "web-1", api.Report{State: api.AgentIdle, Current: 5, CurrentID: ids[4], LastGood: 5, Generations: []api.GenerationReport{
		{Number: 1, ID: ids[0], Status: "good"}, {Number: 2, ID: ids[1], Status: "staged"}, {Number: 3, ID: ids[2], Status: "failed"},
		{Number: 4, ID: ids[3], Status: "quarantined", Reason: "unhealthy"}, {Number: 5, ID: ids[4], Status: "good"},
	}}))
	// Listed as good by the node, but the server never saw it confirmed:
	// the node's claim alone is not enough.
	if _, err := f.reg.Rollback(f.ctx, "token:test", "web-1", 1); !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "is good on web-1: it never ran it healthy and confirmed") {
		t.Fatalf("rollback to a generation the server never saw confirmed: %v", err)
	}
	if _, err := f.reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: ids[0], Number: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		to   int
		want string // "" = accepted
	}{
		{2, "is staged on web-1: it never ran it healthy and confirmed"},
		{3, "is failed on web-1"},
		{4, "failed on web-1 (unhealthy)"},
		{1, ""},
	} {
		before := f.rev()
		n, err := f.reg.Rollback(f.ctx, "token:test", "web-1", tc.to)
		if tc.want == "" {
			if err != nil || n.Desired != ids[tc.to-1] {
				t.Errorf("rollback to %d: %v, desired %s", tc.to, err, n.Desired)
			}
			continue
		}
		if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rollback to %d: %v, want a conflict saying %q", tc.to, err, tc.want)
		}
		if f.rev() != before {
			t.Errorf("refused rollback to %d wrote the store", tc.to)
		}
	}
}

// TestAbortAnnouncesSetBack: the abort's transaction that sets desired
// generations back announces exactly those nodes (their agents are woken),
// after its commit.
func TestAbortAnnouncesSetBack(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	f.enrol("web-2", map[string]string{"role": "web"})
	m1, id1 := registrytest.UnitManifest(t, "v1")
	m2, _ := registrytest.UnitManifest(t, "v2")
	r1, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1})
	must(t, err)
	for _, n := range []string{"web-1", "web-2"} {
		_, err := f.reg.Confirm(f.ctx, n, api.ConfirmRequest{ID: id1, Number: 1})
		must(t, err)
		must(t, f.reg.Report(f.ctx, n, api.Report{State: api.AgentIdle, Current: 1, CurrentID: id1, LastGood: 1, Generations: []api.GenerationReport{{Number: 1, ID: id1, Status: "good"}}}))
	}
	must(t, f.ros.Tick(f.ctx))
	if ro, _ := f.ros.Rollout(f.ctx, r1.Rollout); ro.State != api.RolloutSucceeded {
		t.Fatalf("v1: %s", ro.State)
	}
	r2, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m2, Strategy: &api.Strategy{Kind: api.StrategyCanary, Canary: 1}})
	must(t, err)
	ro, _ := f.ros.Rollout(f.ctx, r2.Rollout)
	canary := ro.Waves[0].Nodes[0].Name
	f.hook.take()
	if _, err := f.ros.RolloutAction(f.ctx, "token:test", r2.Rollout, "abort"); err != nil {
		t.Fatal(err)
	}
	if got := f.hook.take(); fmt.Sprint(got) != fmt.Sprint([][]string{{canary}}) {
		t.Fatalf("abort announced %v, want [[%s]]", got, canary)
	}
	f.hook.mu.Lock()
	seen := f.hook.seen[canary]
	f.hook.mu.Unlock()
	if seen != id1 {
		t.Fatalf("the hook read %s's desired %q, want %s back", canary, seen, id1)
	}
}

// WatchDesired calls back for the node's own desired generation only, not
// for another node's whose name starts with it (web-1, web-10).
func TestWatchDesiredIsExact(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	f.enrol("web-10", map[string]string{"role": "canary"})
	var calls atomic.Int32
	stop := f.reg.WatchDesired("web-1", func() { calls.Add(1) })
	defer stop()
	m1, _ := registrytest.UnitManifest(t, "v1")
	if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "canary", Target: "role=canary", Manifest: m1}); err != nil {
		t.Fatal(err)
	}
	must(t, f.ros.Tick(f.ctx))
	if d, _ := f.reg.Desired(f.ctx, "web-10"); d == nil {
		t.Fatal("web-10 has no desired generation after the tick")
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("web-1's watch called %d times for web-10's desired generation", n)
	}
	m2, _ := registrytest.UnitManifest(t, "v2")
	if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m2}); err != nil {
		t.Fatal(err)
	}
	must(t, f.ros.Tick(f.ctx))
	if n := calls.Load(); n == 0 {
		t.Fatal("web-1's watch not called for its own desired generation")
	}
}
