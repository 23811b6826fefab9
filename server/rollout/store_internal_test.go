package rollout

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

type noBlobStore struct{}

func (noBlobStore) Has(string) (bool, int64, error) { return false, 0, nil }

// TestRolloutWrittenBeforeTheSplit: a store written before the index of
// active rollouts and per-node keys (a running rollout with its nodes in
// its record, no index) is indexed on the first Tick, resumed, and
// compacted when it finishes; it shows the same nodes throughout.
func TestRolloutWrittenBeforeTheSplit(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	cfg := registry.Config{Now: func() time.Time { return now }, OfflineAfter: time.Hour}
	reg := registry.New(st, noBlobStore{}, cfg, zerolog.Nop())
	sm := New(reg, Config{}, zerolog.Nop())
	nodes := []string{"web-1", "web-2"}
	for _, n := range nodes {
		jt, err := reg.CreateJoinToken(ctx, "token:test", 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Enroll(ctx, api.EnrollRequest{Name: n, JoinToken: jt.Token, Labels: map[string]string{"role": "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web\n"}}
	raw, _ := m.Canonical()
	id, _ := m.ID()
	rel, err := sm.CreateRelease(ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: raw})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := rolloutKey(rel.Rollout)
	legacy(t, st, k)

	reg = registry.New(st, noBlobStore{}, cfg, zerolog.Nop()) // the upgraded server
	sm = New(reg, Config{}, zerolog.Nop())
	for _, n := range nodes {
		if _, err := reg.Confirm(ctx, n, api.ConfirmRequest{ID: id, Number: 1}); err != nil {
			t.Fatal(err)
		}
		if err := reg.Report(ctx, n, api.Report{State: api.AgentIdle, Current: 1, CurrentID: id, LastGood: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sm.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ro, err := sm.Rollout(ctx, rel.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	if ro.State != api.RolloutSucceeded || len(ro.Waves[0].Nodes) != 2 || ro.Waves[0].Nodes[1].State != api.RolloutNodeHealthy {
		t.Fatalf("legacy rollout after a tick: %s %+v", ro.State, ro.Waves)
	}
	var rec rolloutRec
	if e, err := st.Get(ctx, k); err != nil || json.Unmarshal(e.Value, &rec) != nil || rec.NodesAt != nodesDetail || rec.NodeCounts[api.RolloutNodeHealthy] != 2 {
		t.Errorf("finished legacy rollout stored as %+v (%v)", rec, err)
	}
}

// legacy rewrites the rollout at k as a store before the split held it.
func legacy(t *testing.T, st store.Store, k string) {
	t.Helper()
	ctx := context.Background()
	sm := New(registry.New(st, noBlobStore{}, registry.Config{}, zerolog.Nop()), Config{}, zerolog.Nop())
	ro, ok, err := sm.readRollout(ctx, k)
	if err != nil || !ok || len(ro.Waves[0].Nodes) != 2 {
		t.Fatalf("read rollout: %v %v %+v", ok, err, ro)
	}
	ro.NodesAt = nodesInline
	b, _ := json.Marshal(ro)
	ops := []store.Op{{Key: k, Value: b}, {Key: kActiveBuilt, Delete: true}, {Key: kActive + seqOf(k), Delete: true}}
	for i := range ro.Waves[0].Nodes {
		ops = append(ops, store.Op{Key: nodeKey(seqOf(k), 0, i), Delete: true})
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	if es, _ := st.List(ctx, kRolloutNode); len(es) != 0 {
		t.Fatalf("%d node keys left", len(es))
	}
}
