package boltstore

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// TestPutWakesOnlyItsWatchers: with 10,000 long-poll watchers, a write of
// one node's key wakes that node's watcher and the prefix watcher, no
// other.
func TestPutWakesOnlyItsWatchers(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := t.Context()
	chans := make([]<-chan struct{}, 10000)
	for i := range chans {
		chans[i] = s.Changes(ctx, fmt.Sprintf("desired/n%05d", i))
	}
	all := s.Changes(ctx, "desired/")
	if _, err := s.Put(ctx, "desired/n04242", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var woke []int
	for i, ch := range chans {
		if len(ch) > 0 {
			woke = append(woke, i)
		}
	}
	if !slices.Equal(woke, []int{4242}) || len(all) != 1 {
		t.Errorf("woke %v and prefix watcher %d, want [4242] and 1", woke, len(all))
	}
}
