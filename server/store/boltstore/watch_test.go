package boltstore

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

func TestWatchIndexSignalsOnlyMatches(t *testing.T) {
	prefixes := []string{"", "desired/", "desired/web-1", "desired/web-10", "desired/web-2", "nodes/", "n", "events/"}
	for _, tt := range []struct {
		key  string
		want []string
	}{
		{"desired/web-1", []string{"", "desired/", "desired/web-1"}},
		{"desired/web-10", []string{"", "desired/", "desired/web-1", "desired/web-10"}},
		{"desired/web-3", []string{"", "desired/"}},
		{"nodes/web-1", []string{"", "nodes/", "n"}},
		{"desired", []string{""}},
		{"x", []string{""}},
	} {
		t.Run(tt.key, func(t *testing.T) {
			x := newWatchIndex()
			ws := map[string]*watcher{}
			for _, p := range prefixes {
				ws[p] = &watcher{prefix: p, ch: make(chan struct{}, 1)}
				x.add(ws[p])
			}
			x.signal(tt.key)
			var got []string
			for _, p := range prefixes {
				if len(ws[p].ch) == 1 {
					got = append(got, p)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("write of %q signalled %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestWatchIndexRemove(t *testing.T) {
	x := newWatchIndex()
	a := &watcher{prefix: "a/", ch: make(chan struct{}, 1)}
	b := &watcher{prefix: "a/", ch: make(chan struct{}, 1)}
	c := &watcher{prefix: "abc", ch: make(chan struct{}, 1)}
	for _, w := range []*watcher{a, b, c} {
		x.add(w)
	}
	if !x.remove(a) || x.remove(a) {
		t.Fatal("remove: want true once, then false")
	}
	if !slices.Equal(x.lens, []int{2, 3}) {
		t.Fatalf("lens %v with a/ still watched by b, want [2 3]", x.lens)
	}
	x.remove(b)
	x.remove(c)
	if len(x.lens) != 0 || len(x.byPrefix) != 0 || len(x.lenCount) != 0 || x.n != 0 {
		t.Fatalf("index not empty after removing every watcher: %+v", x)
	}
	x.signal("a/1") // nothing to signal, nothing to panic on
	if len(a.ch)+len(b.ch)+len(c.ch) != 0 {
		t.Error("a removed watcher was signalled")
	}
}

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
