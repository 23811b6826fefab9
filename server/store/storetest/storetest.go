// Package storetest is the contract every store.Store implementation must
// pass: call Run (and RunPersistence for a store kept in a file) from the
// implementation's tests. It only tests through the store.Store interface and
// never reaches into an implementation.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store"
)

const (
	// signalWait bounds the wait for a Changes signal that must come.
	signalWait = 5 * time.Second
	// quietWait is how long a Changes channel is watched for a signal that
	// must not come.
	quietWait = 100 * time.Millisecond
)

// Run runs the contract suite. open returns a fresh, empty store for one
// subtest; it should register the store's Close with t.Cleanup (Close is
// idempotent, and some subtests close the store themselves).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"ValueCopies", testValueCopies},
		{"Revisions", testRevisions},
		{"List", testList},
		{"ListPage", testListPage},
		{"Count", testCount},
		{"Append", testAppend},
		{"AppendConcurrent", testAppendConcurrent},
		{"ConcurrentTxnRevisions", testConcurrentTxnRevisions},
		{"Delete", testDelete},
		{"TxnCreate", testTxnCreate},
		{"TxnCondExisting", testTxnCondExisting},
		{"TxnConflictAppliesNothing", testTxnConflictAppliesNothing},
		{"TxnMultiOp", testTxnMultiOp},
		{"TxnNoChange", testTxnNoChange},
		{"TxnDuplicateOpKey", testTxnDuplicateOpKey},
		{"CompareAndSwapRace", testCASRace},
		{"ChangesSignal", testChangesSignal},
		{"ChangesOtherPrefix", testChangesOtherPrefix},
		{"ChangesCoalesce", testChangesCoalesce},
		{"ChangesCancel", testChangesCancel},
		{"WatchCalls", testWatchCalls},
		{"WatchStop", testWatchStop},
		{"WatchClose", testWatchClose},
		{"EmptyKey", testEmptyKey},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
		{"CloseWhileBusy", testCloseWhileBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// RunPersistence checks that a store kept in a file keeps its data and its
// revision across close and reopen. open opens (creating if needed) the store
// at path; the suite closes it.
func RunPersistence(t *testing.T, open func(t *testing.T, path string) store.Store) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")

	s := open(t, path)
	mustPut(t, s, "nodes/a", "1")
	mustPut(t, s, "nodes/b", "2")
	mustPut(t, s, "gone", "x")
	// The last write is a delete: no key carries the newest revision, so a
	// store that derived its counter from the keys would reuse it.
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	want := mustList(t, s, "")
	rev := mustRev(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for i := range 2 {
		s = open(t, path)
		if got := mustList(t, s, ""); !equalEntries(got, want) {
			t.Fatalf("reopen %d: List = %v, want %v", i, got, want)
		}
		if got := mustRev(t, s); got != rev {
			t.Fatalf("reopen %d: Rev = %d, want %d", i, got, rev)
		}
		next := mustPut(t, s, fmt.Sprintf("after/%d", i), "y")
		if next <= rev {
			t.Fatalf("reopen %d: Put rev = %d, want > %d", i, next, rev)
		}
		want = mustList(t, s, "")
		rev = next
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	persistSequence(t, open, path)
}

// persistSequence: an Append sequence goes on after a reopen, also when its
// newest entry was deleted before.
func persistSequence(t *testing.T, open func(t *testing.T, path string) store.Store, path string) {
	s := open(t, path)
	added := appendKeys(t, s, "log/", "a", "b")
	last := seqOf(t, "log/", added[1].Key)
	if err := s.Delete(t.Context(), added[1].Key); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t, path)
	defer s.Close()
	if n := seqOf(t, "log/", appendKeys(t, s, "log/", "c")[0].Key); n <= last {
		t.Errorf("after reopen: number %d, want > %d (the deleted newest)", n, last)
	}
}

func testGetMissing(t *testing.T, s store.Store) {
	_, err := s.Get(t.Context(), "missing")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("error %q does not name the key", err)
	}
}

func testPutGet(t *testing.T, s store.Store) {
	for _, tt := range []struct{ key, value string }{
		{"k", "v"},
		{"nodes/web-1", `{"name":"web-1"}`},
		{"unicode/ключ", "значение"},
		{"empty", ""},
		{"binary", "\x00\xff\x00"},
	} {
		rev := mustPut(t, s, tt.key, tt.value)
		e, err := s.Get(t.Context(), tt.key)
		if err != nil {
			t.Fatalf("Get(%q): %v", tt.key, err)
		}
		if e.Key != tt.key || string(e.Value) != tt.value || e.Rev != rev {
			t.Errorf("Get(%q) = %+v, want {%q %q %d}", tt.key, e, tt.key, tt.value, rev)
		}
	}
}

func testValueCopies(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Small values and one large enough to live outside a page of its own.
	for _, size := range []int{8, 16 << 10} {
		fill := func(c byte) []byte { return bytes.Repeat([]byte{c}, size) }
		put, txn := fmt.Sprintf("put/%d", size), fmt.Sprintf("txn/%d", size)
		buf := fill('a')
		if _, err := s.Put(ctx, put, buf); err != nil {
			t.Fatal(err)
		}
		copy(buf, fill('b'))
		if _, err := s.Txn(ctx, nil, []store.Op{{Key: txn, Value: buf}}); err != nil {
			t.Fatal(err)
		}
		copy(buf, fill('c'))
		if !bytes.Equal(mustGet(t, s, put).Value, fill('a')) {
			t.Fatalf("size %d: Put did not copy its value", size)
		}
		if !bytes.Equal(mustGet(t, s, txn).Value, fill('b')) {
			t.Fatalf("size %d: Txn did not copy its value", size)
		}

		copy(mustGet(t, s, put).Value, fill('z'))
		if !bytes.Equal(mustGet(t, s, put).Value, fill('a')) {
			t.Fatalf("size %d: Get returned a slice the store still uses", size)
		}
		for _, e := range mustList(t, s, "") {
			copy(e.Value, fill('z'))
		}
		if !bytes.Equal(mustGet(t, s, put).Value, fill('a')) {
			t.Fatalf("size %d: List returned a slice the store still uses", size)
		}
	}
}

func testRevisions(t *testing.T, s store.Store) {
	ctx := t.Context()
	r0 := mustRev(t, s)
	r1 := mustPut(t, s, "a", "1")
	if r1 <= r0 {
		t.Fatalf("first Put rev %d, want > %d", r1, r0)
	}
	if got := mustRev(t, s); got != r1 {
		t.Fatalf("Rev = %d after Put at %d", got, r1)
	}
	r2 := mustPut(t, s, "b", "1")
	r3 := mustPut(t, s, "a", "2")
	if r2 <= r1 || r3 <= r2 {
		t.Fatalf("revs %d, %d, %d are not strictly increasing", r1, r2, r3)
	}
	if got := mustGet(t, s, "a").Rev; got != r3 {
		t.Errorf("a: rev %d, want %d", got, r3)
	}
	if got := mustGet(t, s, "b").Rev; got != r2 {
		t.Errorf("b: rev %d (moved with a write to a), want %d", got, r2)
	}
	// The same value again is still a write.
	r4 := mustPut(t, s, "b", "1")
	if r4 <= r3 || mustGet(t, s, "b").Rev != r4 {
		t.Errorf("rewriting b: rev %d, mod rev %d, want %d > %d", r4, mustGet(t, s, "b").Rev, r4, r3)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	r5 := mustRev(t, s)
	if r5 <= r4 {
		t.Errorf("Rev = %d after deleting a, want > %d", r5, r4)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := mustRev(t, s); got != r5 {
		t.Errorf("Rev = %d after deleting a missing key, want unchanged %d", got, r5)
	}
}

func testList(t *testing.T, s store.Store) {
	keys := []string{"b", "a/2", "ab", "a/b/c", "a", "a/1", "a0"}
	revs := map[string]int64{}
	for _, k := range keys {
		revs[k] = mustPut(t, s, k, "v:"+k)
	}
	for _, tt := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a", "a/1", "a/2", "a/b/c", "a0", "ab", "b"}},
		{"a/", []string{"a/1", "a/2", "a/b/c"}},
		{"a", []string{"a", "a/1", "a/2", "a/b/c", "a0", "ab"}},
		{"a/b/", []string{"a/b/c"}},
		{"a/1", []string{"a/1"}},
		{"ab", []string{"ab"}},
		{"c", nil},
		{"0", nil},
	} {
		got := mustList(t, s, tt.prefix)
		var gotKeys []string
		for _, e := range got {
			gotKeys = append(gotKeys, e.Key)
			if string(e.Value) != "v:"+e.Key || e.Rev != revs[e.Key] {
				t.Errorf("List(%q): %+v, want value %q rev %d", tt.prefix, e, "v:"+e.Key, revs[e.Key])
			}
		}
		if !slices.Equal(gotKeys, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, gotKeys, tt.want)
		}
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	r1 := mustPut(t, s, "d/x", "1")
	mustPut(t, s, "d/y", "2")
	if err := s.Delete(ctx, "d/x"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "d/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if got := mustList(t, s, "d/"); len(got) != 1 || got[0].Key != "d/y" {
		t.Fatalf("List after Delete = %v, want only d/y", got)
	}
	if err := s.Delete(ctx, "d/x"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "never"); err != nil {
		t.Fatalf("Delete of a never-written key: %v", err)
	}
	if r2 := mustPut(t, s, "d/x", "3"); r2 <= r1 || mustGet(t, s, "d/x").Rev != r2 {
		t.Fatalf("re-put after Delete: rev %d, want > %d", r2, r1)
	}
}

func testTxnCreate(t *testing.T, s store.Store) {
	ctx := t.Context()
	create := func(v string) (int64, error) {
		return s.Txn(ctx, []store.Cond{{Key: "lock", Rev: 0}}, []store.Op{{Key: "lock", Value: []byte(v)}})
	}
	rev, err := create("first")
	if err != nil {
		t.Fatalf("create on a missing key: %v", err)
	}
	if e := mustGet(t, s, "lock"); string(e.Value) != "first" || e.Rev != rev {
		t.Fatalf("after create: %+v, want value first rev %d", e, rev)
	}
	if got := mustRev(t, s); got != rev {
		t.Fatalf("Rev = %d, want the Txn's %d", got, rev)
	}
	_, err = create("second")
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create on an existing key = %v, want ErrConflict", err)
	}
	if !strings.Contains(err.Error(), "lock") {
		t.Errorf("conflict %q does not name the key", err)
	}
	if e := mustGet(t, s, "lock"); string(e.Value) != "first" || e.Rev != rev {
		t.Fatalf("after failed create: %+v, want value first rev %d", e, rev)
	}
}

func testTxnCondExisting(t *testing.T, s store.Store) {
	ctx := t.Context()
	r1 := mustPut(t, s, "k", "1")
	mustPut(t, s, "other", "x") // moves the global revision, not k's
	r2, err := s.Txn(ctx, []store.Cond{{Key: "k", Rev: r1}}, []store.Op{{Key: "k", Value: []byte("2")}})
	if err != nil {
		t.Fatalf("Txn at k's current rev: %v", err)
	}
	if e := mustGet(t, s, "k"); string(e.Value) != "2" || e.Rev != r2 {
		t.Fatalf("k = %+v, want value 2 rev %d", e, r2)
	}
	for _, stale := range []int64{r1, r2 + 1, 0} {
		_, err := s.Txn(ctx, []store.Cond{{Key: "k", Rev: stale}}, []store.Op{{Key: "k", Value: []byte("3")}})
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("Txn with k at rev %d (is %d) = %v, want ErrConflict", stale, r2, err)
		}
	}
	if _, err := s.Txn(ctx, []store.Cond{{Key: "nope", Rev: r1}}, []store.Op{{Key: "nope", Value: []byte("x")}}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Txn with a missing key at rev %d = %v, want ErrConflict", r1, err)
	}
	if e := mustGet(t, s, "k"); string(e.Value) != "2" || e.Rev != r2 {
		t.Fatalf("after failed Txns: k = %+v, want value 2 rev %d", e, r2)
	}
}

func testTxnConflictAppliesNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	rx := mustPut(t, s, "x", "x0")
	ry := mustPut(t, s, "y", "y0")
	before := mustList(t, s, "")
	rev := mustRev(t, s)
	for _, conds := range [][]store.Cond{
		{{Key: "x", Rev: rx}, {Key: "y", Rev: ry + 100}}, // the last fails
		{{Key: "y", Rev: rx}, {Key: "x", Rev: rx}},       // the first fails
		{{Key: "x", Rev: rx}, {Key: "z", Rev: 1}},        // a missing key with a rev
		{{Key: "x", Rev: 0}},                             // an existing key must not exist
	} {
		_, err := s.Txn(ctx, conds, []store.Op{
			{Key: "x", Value: []byte("x1")},
			{Key: "y", Delete: true},
			{Key: "z", Value: []byte("z1")},
		})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Txn with conds %v = %v, want ErrConflict", conds, err)
		}
		if got := mustList(t, s, ""); !equalEntries(got, before) {
			t.Fatalf("failed Txn with conds %v changed the store: %v, want %v", conds, got, before)
		}
		if got := mustRev(t, s); got != rev {
			t.Fatalf("failed Txn moved Rev from %d to %d", rev, got)
		}
	}
}

func testTxnMultiOp(t *testing.T, s store.Store) {
	ctx := t.Context()
	ra := mustPut(t, s, "a", "a0")
	mustPut(t, s, "c", "c0")
	rev, err := s.Txn(ctx, []store.Cond{{Key: "a", Rev: ra}, {Key: "b", Rev: 0}}, []store.Op{
		{Key: "a", Value: []byte("a1")},
		{Key: "b", Value: []byte("b1")},
		{Key: "c", Delete: true},
		{Key: "missing", Delete: true},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	want := []store.Entry{{Key: "a", Value: []byte("a1"), Rev: rev}, {Key: "b", Value: []byte("b1"), Rev: rev}}
	if got := mustList(t, s, ""); !equalEntries(got, want) {
		t.Fatalf("after Txn: %v, want %v", got, want)
	}
	if got := mustRev(t, s); got != rev {
		t.Fatalf("Rev = %d, want the Txn's %d (one revision per Txn)", got, rev)
	}
}

func testTxnNoChange(t *testing.T, s store.Store) {
	ctx := t.Context()
	ra := mustPut(t, s, "a", "1")
	rev, err := s.Txn(ctx, []store.Cond{{Key: "a", Rev: ra}, {Key: "b", Rev: 0}}, nil)
	if err != nil || rev != ra {
		t.Fatalf("Txn without ops = %d, %v; want %d, nil", rev, err, ra)
	}
	if _, err := s.Txn(ctx, []store.Cond{{Key: "b", Rev: ra}}, nil); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn without ops and a failing cond = %v, want ErrConflict", err)
	}
	rev, err = s.Txn(ctx, nil, []store.Op{{Key: "b", Delete: true}})
	if err != nil || rev != ra {
		t.Fatalf("Txn deleting a missing key = %d, %v; want %d, nil", rev, err, ra)
	}
	if got := mustRev(t, s); got != ra {
		t.Fatalf("Rev = %d after Txns that changed nothing, want %d", got, ra)
	}
}

func testTxnDuplicateOpKey(t *testing.T, s store.Store) {
	_, err := s.Txn(t.Context(), nil, []store.Op{{Key: "k", Value: []byte("1")}, {Key: "k", Delete: true}})
	if !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("Txn with a key in two ops = %v, want ErrInvalidKey", err)
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rejected Txn wrote k: %v", err)
	}
}

// testCASRace has N goroutines increment one counter with read-modify-Txn and
// retry on conflict: no increment may be lost.
func testCASRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n, key = 20, "counter"
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if attempt == 1000 {
					errs <- errors.New("no success after 1000 attempts")
					return
				}
				var cur, rev int64
				e, err := s.Get(ctx, key)
				switch {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					errs <- err
					return
				default:
					if cur, err = strconv.ParseInt(string(e.Value), 10, 64); err != nil {
						errs <- err
						return
					}
					rev = e.Rev
				}
				next := []byte(strconv.FormatInt(cur+1, 10))
				_, err = s.Txn(ctx, []store.Cond{{Key: key, Rev: rev}}, []store.Op{{Key: key, Value: next}})
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
				}
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := string(mustGet(t, s, key).Value); got != strconv.Itoa(n) {
		t.Fatalf("counter = %s after %d increments", got, n)
	}
}

func testChangesSignal(t *testing.T, s store.Store) {
	ctx := t.Context()
	ch := s.Changes(ctx, "w/")
	if cap(ch) != 1 {
		t.Errorf("cap(Changes) = %d, want 1", cap(ch))
	}
	other := s.Changes(ctx, "w/") // every watcher is signalled
	all := s.Changes(ctx, "")
	for _, tt := range []struct {
		name  string
		write func() error
	}{
		{"Put", func() error { _, err := s.Put(ctx, "w/a", []byte("1")); return err }},
		{"Txn", func() error {
			_, err := s.Txn(ctx, nil, []store.Op{{Key: "x", Value: []byte("1")}, {Key: "w/b", Value: []byte("1")}})
			return err
		}},
		{"Delete", func() error { return s.Delete(ctx, "w/a") }},
	} {
		if err := tt.write(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for name, c := range map[string]<-chan struct{}{"w/": ch, "second w/": other, `""`: all} {
			if !waitSignal(c, signalWait) {
				t.Fatalf("no signal on the %s watcher after %s", name, tt.name)
			}
		}
	}
}

func testChangesOtherPrefix(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustPut(t, s, "w/old", "1")
	ch := s.Changes(ctx, "w/")
	mustPut(t, s, "wx", "1") // shares "w" but not "w/"
	mustPut(t, s, "w", "1")
	mustPut(t, s, "other/w/", "1")
	if err := s.Delete(ctx, "w/missing"); err != nil { // changes nothing
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, []store.Cond{{Key: "w/old", Rev: 0}}, []store.Op{{Key: "w/new", Value: []byte("1")}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn = %v, want ErrConflict", err)
	}
	if waitSignal(ch, quietWait) {
		t.Fatal("signal on w/ for writes outside it or writes that did not happen")
	}
}

func testChangesCoalesce(t *testing.T, s store.Store) {
	ctx := t.Context()
	ch := s.Changes(ctx, "c/")
	// Nobody reads ch while writing: the writes must not block.
	done := make(chan error, 1)
	go func() {
		for i := range 50 {
			if _, err := s.Put(ctx, fmt.Sprintf("c/%d", i), []byte("v")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(signalWait):
		go func() { // unblock the writer, so that the store can close
			for range ch {
			}
		}()
		t.Fatal("50 writes did not finish: a write blocks on an unread Changes channel")
	}
	if !waitSignal(ch, signalWait) {
		t.Fatal("no signal after 50 writes")
	}
	// Still usable after the backlog: drain, write, get a signal.
	drain(ch)
	mustPut(t, s, "c/last", "v")
	if !waitSignal(ch, signalWait) {
		t.Fatal("no signal for a write after draining")
	}
}

// watchCounter is a Watch function that counts its calls and signals ch.
type watchCounter struct {
	n    atomic.Int64
	ch   chan struct{}
	mu   sync.Mutex
	keys []string
}

func newWatchCounter() *watchCounter { return &watchCounter{ch: make(chan struct{}, 1)} }

func (c *watchCounter) fn(key string) {
	c.n.Add(1)
	c.mu.Lock()
	c.keys = append(c.keys, key)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func testWatchCalls(t *testing.T, s store.Store) {
	ctx := t.Context()
	w, all := newWatchCounter(), newWatchCounter()
	defer s.Watch("w/", w.fn)()
	defer s.Watch("", all.fn)()
	for _, tt := range []struct {
		name  string
		write func() error
	}{
		{"Put", func() error { _, err := s.Put(ctx, "w/a", []byte("1")); return err }},
		{"Txn", func() error {
			_, err := s.Txn(ctx, nil, []store.Op{{Key: "x", Value: []byte("1")}, {Key: "w/b", Value: []byte("1")}})
			return err
		}},
		{"Delete", func() error { return s.Delete(ctx, "w/a") }},
	} {
		if err := tt.write(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for name, c := range map[string]*watchCounter{"w/": w, `""`: all} {
			if !waitSignal(c.ch, signalWait) {
				t.Fatalf("no call of the %s Watch function after %s", name, tt.name)
			}
		}
	}
	w.mu.Lock()
	if got := strings.Join(w.keys, " "); got != "w/a w/b w/a" {
		t.Errorf("w/ Watch function called with keys %q, want \"w/a w/b w/a\"", got)
	}
	w.mu.Unlock()
	before := w.n.Load()
	mustPut(t, s, "wx", "1") // shares "w" but not "w/"
	if err := s.Delete(ctx, "w/missing"); err != nil {
		t.Fatal(err)
	}
	if waitSignal(w.ch, quietWait) || w.n.Load() != before {
		t.Fatal("w/ Watch function called for writes outside w/ or writes that did not happen")
	}
}

func testWatchStop(t *testing.T, s store.Store) {
	c := newWatchCounter()
	stop := s.Watch("k", c.fn)
	mustPut(t, s, "k", "1")
	if !waitSignal(c.ch, signalWait) {
		t.Fatal("no call before stop")
	}
	stop()
	stop() // a second stop is harmless
	n := c.n.Load()
	mustPut(t, s, "k", "2")
	if waitSignal(c.ch, quietWait) || c.n.Load() != n {
		t.Fatal("Watch function called after stop returned")
	}
}

func testWatchClose(t *testing.T, s store.Store) {
	c := newWatchCounter()
	stop := s.Watch("", c.fn)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	stop() // after Close: harmless
	late := s.Watch("", c.fn)
	late()
	if c.n.Load() != 0 {
		t.Fatalf("Watch function called %d times without a write", c.n.Load())
	}
}

func testChangesCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Changes(ctx, "")
	mustPut(t, s, "k", "v") // a pending signal must not keep it open
	cancel()
	if !waitClosed(ch, signalWait) {
		t.Fatal("channel not closed after its context ended")
	}
	mustPut(t, s, "k", "v2") // no send on the closed channel
	if ch := s.Changes(ctx, ""); !waitClosed(ch, signalWait) {
		t.Fatal("Changes with an ended context: channel not closed")
	}
}

func testEmptyKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, ""); return err }},
		{"Put", func() error { _, err := s.Put(ctx, "", []byte("v")); return err }},
		{"Delete", func() error { return s.Delete(ctx, "") }},
		{"Txn op", func() error {
			_, err := s.Txn(ctx, nil, []store.Op{{Key: "ok", Value: []byte("v")}, {Key: ""}})
			return err
		}},
		{"Txn cond", func() error {
			_, err := s.Txn(ctx, []store.Cond{{Key: ""}}, []store.Op{{Key: "ok", Value: []byte("v")}})
			return err
		}},
	} {
		if err := tt.call(); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("%s with an empty key = %v, want ErrInvalidKey", tt.name, err)
		}
	}
	if got := mustList(t, s, ""); len(got) != 0 {
		t.Errorf("rejected calls wrote %v", got)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"List", func() error { _, err := s.List(ctx, ""); return err }},
		{"Put", func() error { _, err := s.Put(ctx, "k", []byte("v")); return err }},
		{"Delete", func() error { return s.Delete(ctx, "k") }},
		{"Txn", func() error { _, err := s.Txn(ctx, nil, []store.Op{{Key: "k", Value: []byte("v")}}); return err }},
		{"Rev", func() error { _, err := s.Rev(ctx); return err }},
	} {
		if err := tt.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v, want context.Canceled", tt.name, err)
		}
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a call with a canceled context wrote k: %v", err)
	}
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustPut(t, s, "k", "v")
	ch := s.Changes(ctx, "")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !waitClosed(ch, signalWait) {
		t.Fatal("Changes channel not closed by Close")
	}
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"List", func() error { _, err := s.List(ctx, ""); return err }},
		{"Put", func() error { _, err := s.Put(ctx, "k", []byte("v")); return err }},
		{"Delete", func() error { return s.Delete(ctx, "k") }},
		{"Txn", func() error { _, err := s.Txn(ctx, nil, []store.Op{{Key: "k", Value: []byte("v")}}); return err }},
		{"Rev", func() error { _, err := s.Rev(ctx); return err }},
	} {
		if err := tt.call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", tt.name, err)
		}
	}
	if !waitClosed(s.Changes(ctx, ""), signalWait) {
		t.Error("Changes after Close: channel not closed")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// testCloseWhileBusy closes the store under concurrent calls: each must
// succeed or fail with ErrClosed, and every Changes channel must close.
func testCloseWhileBusy(t *testing.T, s store.Store) {
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("busy/%d/%d", g, i%4)
				var err error
				switch i % 4 {
				case 0:
					_, err = s.Put(ctx, key, []byte("v"))
				case 1:
					_, err = s.Get(ctx, key)
				case 2:
					_, err = s.List(ctx, "busy/")
				case 3:
					s.Changes(ctx, "busy/") // left to Close
					_, err = s.Txn(ctx, nil, []store.Op{{Key: key, Delete: true}})
				}
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					errs <- err
					return
				}
			}
		})
	}
	chans := []<-chan struct{}{}
	for range 10 {
		mustPut(t, s, "busy/x", "v")
		chans = append(chans, s.Changes(ctx, "busy/"))
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call during Close = %v, want nil or ErrClosed", err)
	}
	for i, ch := range chans {
		if !waitClosed(ch, signalWait) {
			t.Errorf("Changes channel %d not closed by Close", i)
		}
	}
}

// waitSignal reports whether ch yields a signal within d (a closed channel
// is not a signal).
func waitSignal(ch <-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case _, ok := <-ch:
		return ok
	case <-timer.C:
		return false
	}
}

// drain discards signals until none comes within quietWait.
func drain(ch <-chan struct{}) {
	for waitSignal(ch, quietWait) {
		continue
	}
}

// waitClosed reports whether ch is closed within d, discarding signals.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

func mustPut(t *testing.T, s store.Store, key, value string) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte(value))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.Entry {
	t.Helper()
	e, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return e
}

func mustList(t *testing.T, s store.Store, prefix string) []store.Entry {
	t.Helper()
	l, err := s.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return l
}

func mustRev(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Rev(t.Context())
	if err != nil {
		t.Fatalf("Rev: %v", err)
	}
	return rev
}

func equalEntries(a, b []store.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y store.Entry) bool {
		return x.Key == y.Key && x.Rev == y.Rev && bytes.Equal(x.Value, y.Value)
	})
}
