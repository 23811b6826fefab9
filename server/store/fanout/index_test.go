package fanout

import (
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
			x.signal(tt.key, 1)
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
	x.signal("a/1", 1) // nothing to signal, nothing to panic on
	if len(a.ch)+len(b.ch)+len(c.ch) != 0 {
		t.Error("a removed watcher was signalled")
	}
}
