package registry_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// oneByteBlobs has every blob, one byte long.
type oneByteBlobs struct{}

func (oneByteBlobs) Has(string) (bool, int64, error) { return true, 1, nil }

// TestPruneHistory: a node that ran more releases than HistoryKeep keeps
// the per-node records of the newest HistoryKeep and of every generation
// it still refers to (its desired, its last report's list), and loses the
// others: it may no longer confirm them, nor read their blobs; blobs
// shared with a kept generation stay readable. Pruning again prunes
// nothing.
func TestPruneHistory(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	reg := registry.New(f.st, oneByteBlobs{}, registry.Config{Now: func() time.Time { return f.now }, OfflineAfter: time.Hour}, zerolog.Nop())
	ros := rollout.New(reg, rollout.Config{}, zerolog.Nop())
	ctx := f.ctx
	shared := sum("shared")
	total := registry.HistoryKeep + 10
	ids := make([]string, total+1)
	var gens []api.GenerationReport
	for i := 1; i <= total; i++ {
		m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": fmt.Sprintf("[Service]\nExecStart=/bin/web %d\n", i)},
			Artifacts: []generation.Artifact{{Name: "own", SHA256: sum(fmt.Sprint(i)), Size: 1}, {Name: "shared", SHA256: shared, Size: 1}}}
		b, err := m.Canonical()
		must(t, err)
		ids[i], _ = m.ID()
		if _, err := ros.CreateRelease(ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: b}); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		must(t, ros.Tick(ctx))
		if _, err := reg.Confirm(ctx, "web-1", api.ConfirmRequest{ID: ids[i], Number: i}); err != nil {
			t.Fatalf("confirm %d: %v", i, err)
		}
		gens = append(gens, api.GenerationReport{Number: i, ID: ids[i], Status: "good"})
		gens = gens[max(0, len(gens)-32):]
		// The agent keeps generation 1 pinned in its list: still referred to.
		list := gens
		if gens[0].Number != 1 {
			list = append([]api.GenerationReport{{Number: 1, ID: ids[1], Status: "good"}}, gens...)
		}
		must(t, reg.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Current: i, CurrentID: ids[i], LastGood: i, Generations: list}))
		must(t, ros.Tick(ctx))
	}

	n, err := reg.PruneHistory(ctx)
	must(t, err)
	// Generations 2..10 are neither among the newest HistoryKeep nor named.
	if want := total - registry.HistoryKeep - 1; n != want {
		t.Errorf("pruned %d generations, want %d", n, want)
	}
	for i := 1; i <= total; i++ {
		gone := i >= 2 && i <= total-registry.HistoryKeep
		ok, err := reg.MayReadBlob(ctx, "web-1", sum(fmt.Sprint(i)))
		must(t, err)
		if ok == gone {
			t.Errorf("generation %d: its blob readable %v, want %v", i, ok, !gone)
		}
		_, err = reg.Confirm(ctx, "web-1", api.ConfirmRequest{ID: ids[i], Number: 1000 + i})
		if (err != nil) != gone {
			t.Errorf("generation %d: confirm after pruning: %v (pruned: %v)", i, err, gone)
		}
	}
	if ok, err := reg.MayReadBlob(ctx, "web-1", shared); err != nil || !ok {
		t.Errorf("a blob shared with kept generations: readable %v, %v", ok, err)
	}
	if n, err := reg.PruneHistory(ctx); err != nil || n != 0 {
		t.Errorf("pruning again: %d, %v; want 0", n, err)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
