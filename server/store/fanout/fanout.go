// Package fanout delivers a store's committed writes to its Changes
// channels and Watch functions (the store.Store contract): watchers are
// indexed by prefix so that a write costs what matches it, not the number
// of waiters. Every store.Store implementation keeps one Hub; the Hub never
// blocks a writer on a slow reader and never reads the store.
package fanout

import (
	"context"
	"math"
	"sync"
)

// Hub holds the watchers of one store. It is safe for concurrent use.
type Hub struct {
	mu     sync.Mutex
	closed bool
	idx    *watchIndex
}

// New returns an empty Hub.
func New() *Hub { return &Hub{idx: newWatchIndex()} }

// Changes implements store.Store.Changes.
func (h *Hub) Changes(ctx context.Context, prefix string) <-chan struct{} {
	return h.ChangesAfter(ctx, prefix, 0)
}

// ChangesAfter is Changes for a store whose writes reach the Hub after
// they return (an etcd watch): writes at revision after or before it are
// not signalled, although they may arrive after the call.
func (h *Hub) ChangesAfter(ctx context.Context, prefix string, after int64) <-chan struct{} {
	w := &watcher{prefix: prefix, ch: make(chan struct{}, 1), after: after}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(w.ch)
		return w.ch
	}
	h.idx.add(w)
	w.stop = context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.idx.remove(w) {
			close(w.ch)
		}
	})
	return w.ch
}

// Watch implements store.Store.Watch: fn runs with the Hub's lock held.
func (h *Hub) Watch(prefix string, fn func(key string)) (stop func()) {
	return h.WatchAfter(prefix, 0, fn)
}

// WatchAfter is Watch as ChangesAfter is Changes.
func (h *Hub) WatchAfter(prefix string, after int64, fn func(key string)) (stop func()) {
	w := &watcher{prefix: prefix, fn: fn, after: after}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return func() {}
	}
	h.idx.add(w)
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.idx.remove(w)
	}
}

// Signal signals the watchers of every written key, without blocking.
func (h *Hub) Signal(keys ...string) { h.SignalAt(math.MaxInt64, keys...) }

// SignalAt signals the watchers of keys written at revision rev that were
// registered before it (see ChangesAfter).
func (h *Hub) SignalAt(rev int64, keys ...string) {
	if len(keys) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		h.idx.signal(k, rev)
	}
}

// SignalAll signals every watcher, as if a key under each one's prefix had
// been written: for a store that may have missed writes (a watch resumed
// after its history was compacted). A Watch function gets its own prefix
// as the key.
func (h *Hub) SignalAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.idx.each(func(w *watcher) { w.signal(w.prefix) })
}

// Close closes every Changes channel and drops every Watch function; later
// Changes channels are closed at once and later Watch calls do nothing.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.idx.each(func(w *watcher) {
		if w.fn != nil {
			return
		}
		w.stop()
		close(w.ch)
	})
	h.idx = newWatchIndex()
}
