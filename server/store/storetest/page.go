package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
)

func testListPage(t *testing.T, s store.Store) {
	for _, k := range []string{"a", "a/1", "a/2", "a/3", "a/b/c", "ab", "b"} {
		mustPut(t, s, k, "v:"+k)
	}
	for _, tt := range []struct {
		name   string
		prefix string
		page   store.Page
		want   []string
	}{
		{"all", "a/", store.Page{}, []string{"a/1", "a/2", "a/3", "a/b/c"}},
		{"from inclusive", "a/", store.Page{From: "a/2"}, []string{"a/2", "a/3", "a/b/c"}},
		{"from between keys", "a/", store.Page{From: "a/25"}, []string{"a/3", "a/b/c"}},
		{"limit", "a/", store.Page{From: "a/2", Limit: 2}, []string{"a/2", "a/3"}},
		{"limit over the end", "a/", store.Page{Limit: 10}, []string{"a/1", "a/2", "a/3", "a/b/c"}},
		{"from before the prefix", "a/", store.Page{From: "0", Limit: 1}, []string{"a/1"}},
		{"from after the prefix", "a/", store.Page{From: "b"}, nil},
		{"prefix is not a directory", "a", store.Page{From: "a/3"}, []string{"a/3", "a/b/c", "ab"}},
		{"empty prefix", "", store.Page{From: "ab"}, []string{"ab", "b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListPage(t.Context(), tt.prefix, tt.page)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, e := range got {
				keys = append(keys, e.Key)
				if string(e.Value) != "v:"+e.Key || e.Rev != mustGet(t, s, e.Key).Rev {
					t.Errorf("entry %+v: wrong value or rev", e)
				}
			}
			if !slices.Equal(keys, tt.want) {
				t.Errorf("ListPage(%q, %+v) = %q, want %q", tt.prefix, tt.page, keys, tt.want)
			}
		})
	}
	got, err := s.ListPage(t.Context(), "a/", store.Page{KeysOnly: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "a/1" || got[0].Value != nil || got[0].Rev != mustGet(t, s, "a/1").Rev {
		t.Errorf("KeysOnly: %+v, want a/1 and a/2 with their revs and no values", got)
	}
}

func testCount(t *testing.T, s store.Store) {
	for _, k := range []string{"a", "a/1", "a/2", "ab", "b"} {
		mustPut(t, s, k, "v")
	}
	if err := s.Delete(t.Context(), "a/2"); err != nil {
		t.Fatal(err)
	}
	for prefix, want := range map[string]int{"": 4, "a": 3, "a/": 1, "c": 0} {
		if got, err := s.Count(t.Context(), prefix); err != nil || got != want {
			t.Errorf("Count(%q) = %d, %v; want %d", prefix, got, err, want)
		}
	}
}

// appendKeys appends values under prefix in one Txn and returns the new
// entries (what is new under prefix), in key order.
func appendKeys(t *testing.T, s store.Store, prefix string, values ...string) []store.Entry {
	t.Helper()
	before := mustList(t, s, prefix)
	ops := make([]store.Op, len(values))
	for i, v := range values {
		ops[i] = store.Op{Key: prefix, Value: []byte(v), Append: true}
	}
	rev, err := s.Txn(t.Context(), nil, ops)
	if err != nil {
		t.Fatalf("append %q: %v", values, err)
	}
	after := mustList(t, s, prefix)
	if len(after) != len(before)+len(values) {
		t.Fatalf("append %d: %d entries before, %d after", len(values), len(before), len(after))
	}
	old := map[string]bool{}
	for _, e := range before {
		old[e.Key] = true
	}
	var added []store.Entry
	for _, e := range after {
		if !old[e.Key] {
			added = append(added, e)
		}
	}
	for i, e := range added {
		if string(e.Value) != values[i] || e.Rev != rev {
			t.Errorf("appended %+v, want value %q at rev %d (op order)", e, values[i], rev)
		}
	}
	return added
}

func seqOf(t *testing.T, prefix, key string) int64 {
	t.Helper()
	n, ok := store.ParseSeq(key[len(prefix):])
	if !ok || key != prefix+store.SeqKey(n) {
		t.Fatalf("appended key %q is not %q + %d digits", key, prefix, store.SeqDigits)
	}
	return n
}

func testAppend(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustPut(t, s, "log/zz", "not a sequence key")
	first := appendKeys(t, s, "log/", "a")
	more := appendKeys(t, s, "log/", "b", "c", "d")
	last := seqOf(t, "log/", first[0].Key)
	for _, e := range more {
		n := seqOf(t, "log/", e.Key)
		if n <= last {
			t.Fatalf("sequence %d after %d: not increasing", n, last)
		}
		last = n
	}
	// The newest deleted: its number is not given again.
	if err := s.Delete(ctx, more[2].Key); err != nil {
		t.Fatal(err)
	}
	if n := seqOf(t, "log/", appendKeys(t, s, "log/", "e")[0].Key); n <= last {
		t.Errorf("after deleting the newest (%d), the next number is %d", last, n)
	}
	// Keys of the sequence's form written before (a log from before
	// Append existed): numbers go on above them.
	mustPut(t, s, "old/"+store.SeqKey(41), "legacy")
	if n := seqOf(t, "old/", appendKeys(t, s, "old/", "new")[0].Key); n <= 41 {
		t.Errorf("after an existing old/%s the next number is %d", store.SeqKey(41), n)
	}
	// Another prefix has its own sequence; a prefix of it is not confused.
	other := appendKeys(t, s, "log/x/", "x")
	if seqOf(t, "log/x/", other[0].Key) <= 0 {
		t.Errorf("first number of a new sequence: %q", other[0].Key)
	}
	// Append with a condition that fails appends nothing.
	_, err := s.Txn(ctx, []store.Cond{{Key: "log/zz", Rev: 0}}, []store.Op{{Key: "log/", Value: []byte("no"), Append: true}})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("append with a failing condition = %v, want ErrConflict", err)
	}
	_, err = s.Txn(ctx, nil, []store.Op{{Key: "log/", Append: true, Delete: true}})
	if !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("append and delete in one op = %v, want ErrInvalidKey", err)
	}
	ch := s.Changes(ctx, "log/0")
	appendKeys(t, s, "log/", "f")
	if !waitSignal(ch, signalWait) {
		t.Error("no Changes signal for an appended key")
	}
}

// testAppendConcurrent: appends from many writers at once get distinct
// numbers, and key order is commit order (the revisions rise along the
// keys), so a reader paging by number misses nothing.
func testAppendConcurrent(t *testing.T, s store.Store) {
	const writers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ops := []store.Op{
					{Key: "ev/", Value: fmt.Appendf(nil, "%d/%d", w, i), Append: true},
					{Key: fmt.Sprintf("node/%d", w), Value: []byte("x")},
				}
				if _, err := s.Txn(t.Context(), nil, ops); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	es := mustList(t, s, "ev/")
	if len(es) != writers*each {
		t.Fatalf("%d entries, want %d", len(es), writers*each)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Rev <= es[i-1].Rev {
			t.Fatalf("%s at rev %d after %s at rev %d: key order is not commit order", es[i].Key, es[i].Rev, es[i-1].Key, es[i-1].Rev)
		}
	}
}

// testConcurrentTxnRevisions: concurrent transactions (committed together
// or not) each get a revision of their own, and what they wrote carries it.
func testConcurrentTxnRevisions(t *testing.T, s store.Store) {
	const writers, each = 16, 25
	var mu sync.Mutex
	revs := map[int64]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("k/%d", w)
			var rev int64
			for range each {
				r, err := s.Txn(t.Context(), []store.Cond{{Key: key, Rev: rev}}, []store.Op{{Key: key, Value: []byte("v")}})
				if err != nil {
					t.Error(err)
					return
				}
				if got := mustGet(t, s, key).Rev; got != r {
					t.Errorf("%s: mod rev %d, Txn returned %d", key, got, r)
				}
				mu.Lock()
				if other, dup := revs[r]; dup {
					t.Errorf("rev %d given to %s and %s", r, other, key)
				}
				revs[r] = key
				mu.Unlock()
				rev = r
			}
		})
	}
	wg.Wait()
	if len(revs) != writers*each {
		t.Errorf("%d distinct revisions, want %d", len(revs), writers*each)
	}
	if got, want := mustRev(t, s), slices.Max(slices.Collect(mapKeys(revs))); got != want {
		t.Errorf("Rev = %d, want the newest Txn's %d", got, want)
	}
}

func mapKeys[V any](m map[int64]V) func(func(int64) bool) {
	return func(yield func(int64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
