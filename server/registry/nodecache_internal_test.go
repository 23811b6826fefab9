package registry

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
)

// cacheFixture is a registry over a real bbolt store with one enrolled
// node, web-1, and a clock the test moves.
func cacheFixture(t *testing.T) (*Registry, store.Store, *time.Time) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	reg := New(st, noBlobStore{}, Config{Now: func() time.Time { return now }, OfflineAfter: time.Hour}, zerolog.Nop())
	jt, err := reg.CreateJoinToken(context.Background(), "token:test", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	req := api.EnrollRequest{Name: "web-1", JoinToken: jt.Token, Labels: map[string]string{"role": "web"}}
	if _, err := reg.Enroll(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return reg, st, &now
}

func readNode(t *testing.T, reg *Registry, name string) nodeRec {
	t.Helper()
	var n nodeRec
	err := reg.update(context.Background(), func(tx *txn) error {
		_, err := tx.peek(kNodes+name, &n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeCacheReadsWhatWasWritten: a node record a transaction wrote is
// read back without decoding it, as stored, and a copy a reader changes
// does not change what the next reader gets.
func TestNodeCacheReadsWhatWasWritten(t *testing.T) {
	reg, _, now := cacheFixture(t)
	ctx := context.Background()
	id := "sha256-" + strings.Repeat("ab", 32)
	rep := api.Report{State: api.AgentSwitching, Phase: "confirm", Target: id, Time: *now,
		Generations: []api.GenerationReport{{Number: 1, ID: id, Status: "staged"}},
		Units:       []api.UnitReport{{Name: "web.service", Active: "active"}}}
	if err := reg.Report(ctx, "web-1", rep); err != nil {
		t.Fatal(err)
	}
	_, before := reg.nodes.stats()
	got := readNode(t, reg, "web-1")
	if _, after := reg.nodes.stats(); after != before {
		t.Errorf("reading the record just written decoded it (%d → %d decodes)", before, after)
	}
	if got.Report == nil || got.Report.Phase != "confirm" || got.Labels["role"] != "web" || len(got.Report.Units) != 1 {
		t.Fatalf("cached record %+v, want the report and labels written", got)
	}
	got.Labels["role"] = "changed"
	got.Report.Units[0].Active = "changed"
	got.Report.Phase = "changed"
	again := readNode(t, reg, "web-1")
	if again.Labels["role"] != "web" || again.Report.Units[0].Active != "active" || again.Report.Phase != "confirm" {
		t.Errorf("a reader's change reached the cache: %+v %+v", again.Labels, again.Report)
	}
}

// TestNodeCacheDecodesAnotherWritersRecord: a record written by someone
// else (another server on the same etcd: a new revision) is decoded, not
// served from the cache.
func TestNodeCacheDecodesAnotherWritersRecord(t *testing.T) {
	reg, st, _ := cacheFixture(t)
	ctx := context.Background()
	first := readNode(t, reg, "web-1")
	first.AgentVersion = "written-elsewhere"
	b, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Txn(ctx, nil, []store.Op{{Key: kNodes + "web-1", Value: b}}); err != nil {
		t.Fatal(err)
	}
	if got := readNode(t, reg, "web-1"); got.AgentVersion != "written-elsewhere" {
		t.Errorf("read %q after another writer's write, want %q", got.AgentVersion, "written-elsewhere")
	}
}

// TestNodeCacheForgetsIdleRecords: records nobody reads or writes for two
// sweeps are dropped, so an idle fleet does not keep them in memory.
func TestNodeCacheForgetsIdleRecords(t *testing.T) {
	reg, _, _ := cacheFixture(t)
	clock := time.Now()
	reg.nodes.now = func() time.Time { return clock }
	readNode(t, reg, "web-1")
	if n, _ := reg.nodes.stats(); n != 1 {
		t.Fatalf("%d records cached, want 1", n)
	}
	for range 3 {
		clock = clock.Add(nodeCacheIdle + time.Second)
		reg.nodes.tidy()
	}
	if n, _ := reg.nodes.stats(); n != 0 {
		t.Errorf("%d records cached after three sweeps with no use, want 0", n)
	}
}

type noBlobStore struct{}

func (noBlobStore) Has(string) (bool, int64, error) { return false, 0, nil }
