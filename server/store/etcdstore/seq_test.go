package etcdstore

import (
	"errors"
	"fmt"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

// TestAppendAfterCounterLayout: a log written by the earlier layout (a
// "seq/<prefix>" counter above its highest key) is still listed, and new
// appends are numbered above the counter, listed after it, paged by
// number, fetched and deleted by their presented keys.
func TestAppendAfterCounterLayout(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openAt(t, srv.Endpoint, randomPrefix(t))
	ctx := t.Context()
	for _, kv := range [][2]string{{s.pre + "kv/ev/" + store.SeqKey(3), "old3"}, {s.pre + "kv/ev/" + store.SeqKey(7), "old7"}, {s.pre + "seq/ev/", "9"}} {
		if _, err := s.cli.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	ops := make([]store.Op, 3)
	for i := range ops {
		ops[i] = store.Op{Key: "ev/", Value: fmt.Appendf(nil, "new%d", i), Append: true}
	}
	if _, err := s.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, nil, []store.Op{{Key: "ev/", Value: []byte("new3"), Append: true}}); err != nil {
		t.Fatal(err)
	}
	es, err := s.List(ctx, "ev/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"old3", "old7", "new0", "new1", "new2", "new3"}
	if len(es) != len(want) {
		t.Fatalf("List = %d entries %v, want %q", len(es), es, want)
	}
	for i, e := range es {
		n, _ := store.ParseSeq(e.Key[len("ev/"):])
		if string(e.Value) != want[i] || i >= 2 && n <= 9 {
			t.Errorf("entry %d = %s %q, want %q numbered above the old counter 9", i, e.Key, e.Value, want[i])
		}
	}
	// Paging from a new entry's number, two at a time.
	page, err := s.ListPage(ctx, "ev/", store.Page{From: es[3].Key, Limit: 2})
	if err != nil || len(page) != 2 || page[0].Key != es[3].Key || page[1].Key != es[4].Key {
		t.Errorf("ListPage from %s limit 2 = %v, %v; want %s, %s", es[3].Key, page, err, es[3].Key, es[4].Key)
	}
	if e, err := s.Get(ctx, es[4].Key); err != nil || string(e.Value) != "new2" {
		t.Errorf("Get(%s) = %+v, %v; want new2", es[4].Key, e, err)
	}
	if err := s.Delete(ctx, es[4].Key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, es[4].Key); err == nil {
		t.Errorf("Get(%s) after Delete found it", es[4].Key)
	}
	if n, err := s.Count(ctx, "ev/"); err != nil || n != 5 {
		t.Errorf("Count = %d, %v; want 5", n, err)
	}
	// A Put numbered among the appended entries is refused.
	if _, err := s.Put(ctx, es[3].Key, []byte("x")); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("Put(%s) = %v, want ErrInvalidKey", es[3].Key, err)
	}
	// No counter key is written any more.
	resp, err := s.cli.Get(ctx, s.pre+"seq/ev/")
	if err != nil || string(resp.Kvs[0].Value) != "9" {
		t.Errorf("seq/ev/ = %v, %v; want it left at 9", resp, err)
	}
}

// TestSchemaUpgraded: a store of layout 1 (Append counters) opens and is
// marked 2, which a slipway of layout 1 refuses.
func TestSchemaUpgraded(t *testing.T) {
	srv := etcdtest.Start(t)
	pre := randomPrefix(t)
	s := openAt(t, srv.Endpoint, pre)
	if _, err := s.cli.Put(t.Context(), pre+"schema", "1"); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, srv.Endpoint, pre)
	resp, err := s2.cli.Get(t.Context(), pre+"schema")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Errorf("schema after opening a layout-1 store = %v, %v; want 2", resp, err)
	}
}
