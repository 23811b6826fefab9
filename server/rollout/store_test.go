package rollout_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// keyLog records the keys (or prefixes) a store wrapper was asked for,
// until taken.
type keyLog struct {
	mu   sync.Mutex
	keys []string
}

func (l *keyLog) note(key string) {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.mu.Unlock()
}

func (l *keyLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys
	l.keys = nil
	return k
}

// listLog is a store that records the prefixes listed.
type listLog struct {
	store.Store
	keyLog
}

func (s *listLog) List(ctx context.Context, prefix string) ([]store.Entry, error) {
	s.note(prefix)
	return s.Store.List(ctx, prefix)
}

// TestFinishedRolloutsLeaveHotPath: a finished rollout leaves the index
// Tick lists and keeps only a summary in its record (its per-node detail
// apart), yet shows every node as before and can still be rolled back to
// each node's previous confirmed generation; Tick lists only the active
// rollouts, and a step reads only the nodes that changed.
func TestFinishedRolloutsLeaveHotPath(t *testing.T) {
	f := newFixture(t)
	nodes := []string{"web-1", "web-2", "web-3"}
	for _, n := range nodes {
		f.enrol(n, map[string]string{"role": "web"})
	}
	ll := &listLog{Store: f.st}
	reg, ros := f.open(ll)
	ctx := f.ctx
	var gens []api.GenerationReport
	runs := func(node, id string, num int) {
		t.Helper()
		if _, err := reg.Confirm(ctx, node, api.ConfirmRequest{ID: id, Number: num}); err != nil {
			t.Fatal(err)
		}
		g := append(slices.Clone(gens), api.GenerationReport{Number: num, ID: id, Status: "good"})
		must(t, reg.Report(ctx, node, api.Report{State: api.AgentIdle, Current: num, CurrentID: id, LastGood: num, Generations: g}))
	}
	deploy := func(tag string, num int) (string, string) {
		t.Helper()
		m, id := registrytest.UnitManifest(t, tag)
		rel, err := ros.CreateRelease(ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m})
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range nodes {
			runs(n, id, num)
			ll.take()
			must(t, ros.Tick(ctx))
			if ro, _ := ros.Rollout(ctx, rel.Rollout); i < len(nodes)-1 && ro.State != api.RolloutRunning {
				t.Fatalf("rollout %s after %d of %d nodes", ro.State, i+1, len(nodes))
			}
		}
		gens = append(gens, api.GenerationReport{Number: num, ID: id, Status: "good"})
		return rel.Rollout, id
	}
	ro1, v1 := deploy("v1", 1)
	ro2, _ := deploy("v2", 2)

	for _, id := range []string{ro1, ro2} {
		ro, err := ros.Rollout(ctx, id)
		must(t, err)
		if ro.State != api.RolloutSucceeded || len(ro.Waves) != 1 || len(ro.Waves[0].Nodes) != len(nodes) {
			t.Fatalf("%s: %s, %+v", id, ro.State, ro.Waves)
		}
		for i, n := range ro.Waves[0].Nodes {
			if n.Name != nodes[i] || n.State != api.RolloutNodeHealthy || n.PublishedAt.IsZero() {
				t.Errorf("%s: node %d shown as %+v", id, i, n)
			}
			if id == ro2 && n.Previous != v1 {
				t.Errorf("%s: %s previous %q, want %s", id, n.Name, n.Previous, v1)
			}
		}
	}
	// The records of finished rollouts name no node; nothing is indexed.
	recs, err := f.st.List(ctx, "rollouts/")
	must(t, err)
	for _, e := range recs {
		if strings.Contains(string(e.Value), "web-1") {
			t.Errorf("finished rollout record %s holds per-node detail: %s", e.Key, e.Value)
		}
	}
	for _, prefix := range []string{"activerollouts/", "rolloutnode/"} {
		if es, _ := f.st.List(ctx, prefix); len(es) != 0 {
			t.Errorf("%d keys under %s with no rollout active", len(es), prefix)
		}
	}
	// Tick lists the active rollouts only.
	ll.take()
	must(t, ros.Tick(ctx))
	if got := ll.take(); !slices.Equal(got, []string{"activerollouts/"}) {
		t.Errorf("an idle Tick listed %q, want only the active rollouts", got)
	}
	counts, err := ros.RolloutCounts(ctx)
	must(t, err)
	if counts[api.RolloutSucceeded] != 2 {
		t.Errorf("rollout counts %v", counts)
	}
	rb, err := ros.RolloutRollback(ctx, "token:test", ro2)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if d, _ := reg.Desired(ctx, n); d == nil || d.ID != v1 {
			t.Errorf("rollback %s: %s desired %v, want %s", rb.ID, n, d, v1)
		}
	}
}

// TestStepReadsChangedNodes: once a rollout's first step in a process has
// looked at every node, a later step reads the record of a node only when
// it changed (or its deadline passed).
func TestStepReadsChangedNodes(t *testing.T) {
	f := newFixture(t)
	var nodes []string
	for i := range 20 {
		nodes = append(nodes, fmt.Sprintf("web-%02d", i))
		f.enrol(nodes[i], map[string]string{"role": "web"})
	}
	gets := &getLog{Store: f.st}
	reg, ros := f.open(gets)
	m, id := registrytest.UnitManifest(t, "v1")
	if _, err := ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m}); err != nil {
		t.Fatal(err)
	}
	must(t, ros.Tick(f.ctx))
	if _, err := reg.Confirm(f.ctx, "web-03", api.ConfirmRequest{ID: id, Number: 1}); err != nil {
		t.Fatal(err)
	}
	gets.take()
	must(t, ros.Tick(f.ctx))
	var read []string
	for _, k := range gets.take() {
		if name, ok := strings.CutPrefix(k, "nodes/"); ok {
			read = append(read, name)
		}
	}
	if !slices.Equal(read, []string{"web-03"}) {
		t.Errorf("the step after one confirm read the node records %q, want only web-03's", read)
	}
}

// getLog is a store that records the keys read one by one.
type getLog struct {
	store.Store
	keyLog
}

func (s *getLog) Get(ctx context.Context, key string) (store.Entry, error) {
	s.note(key)
	return s.Store.Get(ctx, key)
}

// racingStore rewrites a key, as a concurrent writer would, the first
// time it is read after arm.
type racingStore struct {
	store.Store
	mu    sync.Mutex
	key   string
	armed bool
	reads int
}

func (s *racingStore) arm(key string) {
	s.mu.Lock()
	s.key, s.armed, s.reads = key, true, 0
	s.mu.Unlock()
}

func (s *racingStore) Get(ctx context.Context, key string) (store.Entry, error) {
	e, err := s.Store.Get(ctx, key)
	s.mu.Lock()
	race := key == s.key && s.armed
	if key == s.key {
		s.reads++
	}
	s.armed = s.armed && !race
	s.mu.Unlock()
	if race && err == nil {
		if _, terr := s.Store.Txn(ctx, nil, []store.Op{{Key: key, Value: e.Value}}); terr != nil {
			return e, terr
		}
	}
	return e, err
}

// TestStepDoesNotRetryForNodeWrites: an agent writing its node's record
// while a step looks at that node does not make the step retry (at
// 10,000 agents steps retried for tens of seconds, rereading every node);
// the node is looked at again by the next step instead.
func TestStepDoesNotRetryForNodeWrites(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		f.enrol(fmt.Sprintf("web-%d", i), map[string]string{"role": "web"})
	}
	rs := &racingStore{Store: f.st}
	reg, ros := f.open(rs)
	m, id := registrytest.UnitManifest(t, "v1")
	rel, err := ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m})
	if err != nil {
		t.Fatal(err)
	}
	must(t, ros.Tick(f.ctx))
	if _, err := reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: id, Number: 1}); err != nil {
		t.Fatal(err)
	}
	must(t, reg.Report(f.ctx, "web-1", api.Report{State: api.AgentIdle, Current: 1, CurrentID: id, LastGood: 1,
		Generations: []api.GenerationReport{{Number: 1, ID: id, Status: "good"}}}))
	rs.arm("nodes/web-1")
	must(t, ros.Tick(f.ctx))
	rs.mu.Lock()
	reads := rs.reads
	rs.mu.Unlock()
	if reads != 1 {
		t.Errorf("the step read nodes/web-1 %d times with a write racing it, want 1 (no retry)", reads)
	}
	ro, err := ros.Rollout(f.ctx, rel.Rollout)
	must(t, err)
	if st := ro.Waves[0].Nodes[1].State; st != api.RolloutNodeHealthy {
		t.Errorf("web-1 is %s in the rollout after its confirm, want healthy", st)
	}
}
