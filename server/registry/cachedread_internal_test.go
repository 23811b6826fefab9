package registry

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
)

// putBehind writes node name's record straight into the store, as another
// server sharing it would: the registry's node cache does not see it.
func putBehind(t *testing.T, st store.Store, name string, change func(*nodeRec)) {
	t.Helper()
	ctx := context.Background()
	e, err := st.Get(ctx, kNodes+name)
	if err != nil {
		t.Fatal(err)
	}
	var n nodeRec
	if err := json.Unmarshal(e.Value, &n); err != nil {
		t.Fatal(err)
	}
	change(&n)
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, kNodes+name, b); err != nil {
		t.Fatal(err)
	}
}

// TestCachedReadWrittenBehindConflicts: a transaction's first attempt
// takes node records from the cache with the cached revision as its
// condition; a record written behind the cache's back makes that attempt
// conflict, and the next reads the store: nothing written behind is lost.
func TestCachedReadWrittenBehindConflicts(t *testing.T) {
	reg, st, _ := cacheFixture(t)
	readNode(t, reg, "web-1") // cached
	putBehind(t, st, "web-1", func(n *nodeRec) { n.Labels["role"] = "db" })
	attempts, err := setAgentVersion(reg, "web-1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	got := readNode(t, reg, "web-1")
	if got.Labels["role"] != "db" || got.AgentVersion != "v2" {
		t.Errorf("stored labels %v, agent version %q: want role=db (written behind) and v2", got.Labels, got.AgentVersion)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2 (the cached read conflicts once)", attempts)
	}
	// The cache now holds what was written: one attempt.
	if attempts, err := setAgentVersion(reg, "web-1", "v3"); err != nil || attempts != 1 {
		t.Errorf("after the retry: %d attempts, err %v; want 1, nil", attempts, err)
	}
}

// setAgentVersion writes node name's agent version in a transaction that
// reads the record first, and returns the attempts it took.
func setAgentVersion(reg *Registry, name, v string) (attempts int, err error) {
	err = reg.update(context.Background(), func(tx *txn) error {
		attempts++
		var n nodeRec
		if _, err := tx.get(kNodes+name, &n); err != nil {
			return err
		}
		n.AgentVersion = v
		return tx.put(kNodes+name, n)
	})
	return attempts, err
}

// TestCachedReadAnswerRechecked: an attempt that read a record from the
// cache and then failed, or wrote nothing, has had no commit check its
// reads: it runs again on the store's records, so a stale cache never
// decides a refusal or an answer.
func TestCachedReadAnswerRechecked(t *testing.T) {
	reg, st, _ := cacheFixture(t)
	ctx := context.Background()
	errStale := errors.New("not confirmed")
	for _, refuse := range []bool{false, true} {
		was := readNode(t, reg, "web-1").Confirmed // cached
		now := was + "+"
		putBehind(t, st, "web-1", func(n *nodeRec) { n.Confirmed = now })
		var saw []string
		err := reg.update(ctx, func(tx *txn) error {
			var n nodeRec
			if _, err := tx.get(kNodes+"web-1", &n); err != nil {
				return err
			}
			saw = append(saw, n.Confirmed)
			if refuse && n.Confirmed != now {
				return errStale
			}
			return nil // writes nothing
		})
		if err != nil {
			t.Errorf("refusing: %v, want the store's record to decide (it says confirmed)", err)
		}
		if len(saw) != 2 || saw[0] != was || saw[1] != now {
			t.Errorf("refusing %v: attempts saw confirmed %q, want the cache's %q, then the store's %q", refuse, saw, was, now)
		}
	}
}
