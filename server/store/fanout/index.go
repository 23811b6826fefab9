package fanout

import (
	"slices"
)

// watcher is one Changes channel or Watch function.
type watcher struct {
	prefix string
	ch     chan struct{}
	stop   func() bool  // unregisters the context.AfterFunc
	fn     func(string) // Watch's: called instead of signalling ch
	after  int64        // writes at this revision or before are not its
}

// signal makes w.ch readable without blocking (signals coalesce), or
// calls w.fn with the written key.
func (w *watcher) signal(key string) {
	if w.fn != nil {
		w.fn(key)
		return
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// watchIndex finds the watchers of a written key without looking at the
// others: watchers are grouped by their prefix, and a key is looked up
// once per distinct prefix length no longer than it. A write costs
// O(matching watchers + distinct prefix lengths), however many long-polls
// wait on other keys.
type watchIndex struct {
	byPrefix map[string]map[*watcher]struct{}
	lenCount map[int]int // prefix length -> distinct prefixes of that length
	lens     []int       // the keys of lenCount, ascending
	n        int
}

func newWatchIndex() *watchIndex {
	return &watchIndex{byPrefix: map[string]map[*watcher]struct{}{}, lenCount: map[int]int{}}
}

func (x *watchIndex) add(w *watcher) {
	set, ok := x.byPrefix[w.prefix]
	if !ok {
		set = map[*watcher]struct{}{}
		x.byPrefix[w.prefix] = set
		l := len(w.prefix)
		if x.lenCount[l] == 0 {
			i, _ := slices.BinarySearch(x.lens, l)
			x.lens = slices.Insert(x.lens, i, l)
		}
		x.lenCount[l]++
	}
	set[w] = struct{}{}
	x.n++
}

// remove unregisters w and reports whether it was registered.
func (x *watchIndex) remove(w *watcher) bool {
	set := x.byPrefix[w.prefix]
	if _, ok := set[w]; !ok {
		return false
	}
	delete(set, w)
	x.n--
	if len(set) > 0 {
		return true
	}
	delete(x.byPrefix, w.prefix)
	l := len(w.prefix)
	if x.lenCount[l]--; x.lenCount[l] == 0 {
		delete(x.lenCount, l)
		i, _ := slices.BinarySearch(x.lens, l)
		x.lens = slices.Delete(x.lens, i, i+1)
	}
	return true
}

// signal signals every watcher whose prefix key starts with and that
// was registered before revision rev.
func (x *watchIndex) signal(key string, rev int64) {
	for _, l := range x.lens {
		if l > len(key) {
			return
		}
		for w := range x.byPrefix[key[:l]] {
			if rev > w.after {
				w.signal(key)
			}
		}
	}
}

// each calls fn for every watcher.
func (x *watchIndex) each(fn func(*watcher)) {
	for _, set := range x.byPrefix {
		for w := range set {
			fn(w)
		}
	}
}
