package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

func openBolt(t *testing.T) store.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill writes a small fleet's worth of keys in an order unlike key order
// (the last written sorts first), with several keys per transaction, an
// audit log and a deleted key.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	for i := 250; i > 0; i-- {
		ops := []store.Op{
			{Key: fmt.Sprintf("nodes/n%03d", i), Value: fmt.Appendf(nil, `{"name":"n%03d"}`, i)},
			{Key: fmt.Sprintf("desired/n%03d", i), Value: []byte("sha256-x")},
			{Key: "events/", Value: fmt.Appendf(nil, "enrol %d", i), Append: true},
		}
		if _, err := s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
		// Two generations of one node, one after the other.
		for _, g := range []string{"b", "a"} {
			if _, err := s.Put(ctx, fmt.Sprintf("gens/n%03d/%s", i, g), []byte(g)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Put(ctx, "gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "binary", []byte{0, 0xff, 0}); err != nil {
		t.Fatal(err)
	}
}

func list(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	es, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// checkCopy: dst holds src's keys and values, and its revisions order the
// keys as src's do: never the other way round, equal where src's are
// equal, and strictly within a directory.
func checkCopy(t *testing.T, src, dst store.Store) {
	t.Helper()
	a, b := list(t, src), list(t, dst)
	if len(a) != len(b) {
		t.Fatalf("target has %d keys, source %d", len(b), len(a))
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			t.Fatalf("key %d: target %q=%q, source %q=%q", i, b[i].Key, b[i].Value, a[i].Key, a[i].Value)
		}
	}
	for i := range a {
		for j := range a {
			di, _ := dir(a[i].Key)
			dj, _ := dir(a[j].Key)
			strict := di == dj && !strings.HasPrefix(di, "events/")
			if (a[i].Rev < a[j].Rev && b[i].Rev > b[j].Rev) || (a[i].Rev == a[j].Rev && b[i].Rev != b[j].Rev) ||
				(strict && a[i].Rev < a[j].Rev && b[i].Rev >= b[j].Rev) {
				t.Fatalf("revision order differs: source %s@%d %s@%d, target @%d @%d", a[i].Key, a[i].Rev, a[j].Key, a[j].Rev, b[i].Rev, b[j].Rev)
			}
		}
	}
}

func TestCopy(t *testing.T) {
	src, dst := openBolt(t), openBolt(t)
	fill(t, src)
	var out bytes.Buffer
	res, err := Copy(t.Context(), src, dst, Options{Progress: &out, Batch: 64})
	if err != nil {
		t.Fatal(err)
	}
	checkCopy(t, src, dst)
	want := map[string]int{"nodes/": 250, "desired/": 250, "events/": 250, "gens/": 500, "binary": 1}
	if res.Keys != 1251 || fmt.Sprint(res.ByPrefix) != fmt.Sprint(want) {
		t.Errorf("result %+v, want 1251 keys, %v", res, want)
	}
	for _, line := range []string{"reading 1251 keys from the source", "copied 1251/1251 keys (100%)", "verifying the target"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, out.String())
		}
	}
	// An Append after the copy goes on above the numbers copied.
	rev, err := dst.Txn(t.Context(), nil, []store.Op{{Key: "events/", Value: []byte("after"), Append: true}})
	if err != nil {
		t.Fatal(err)
	}
	ev := list(t, dst)
	if i := slices.IndexFunc(ev, func(e store.Entry) bool { return e.Rev == rev }); i < 0 || ev[i].Key <= "events/"+store.SeqKey(250) {
		t.Errorf("append after the copy: %v", ev)
	}
}

func TestCopyRefusesNonEmpty(t *testing.T) {
	src, dst := openBolt(t), openBolt(t)
	fill(t, src)
	if _, err := dst.Put(t.Context(), "stale", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(t.Context(), src, dst, Options{})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "holds 1 keys (--force") {
		t.Fatalf("Copy into a non-empty store = %v, want ErrNotEmpty", err)
	}
	if es := list(t, dst); len(es) != 1 {
		t.Fatalf("refused Copy changed the target: %d keys", len(es))
	}
	res, err := Copy(t.Context(), src, dst, Options{Force: true})
	if err != nil || res.Deleted != 1 {
		t.Fatalf("Copy --force = %+v, %v; want 1 deleted", res, err)
	}
	checkCopy(t, src, dst)
}

// unreadable is a store whose pages cannot be read.
type unreadable struct{ store.Store }

func (unreadable) ListPage(context.Context, string, store.Page) ([]store.Entry, error) {
	return nil, errors.New("read failed")
}

// A source that cannot be read leaves a target that --force would have
// emptied as it was.
func TestCopyForceKeepsTargetWhenSourceFails(t *testing.T) {
	src, dst := openBolt(t), openBolt(t)
	fill(t, src)
	if _, err := dst.Put(t.Context(), "keep", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(t.Context(), unreadable{src}, dst, Options{Force: true}); err == nil || !strings.Contains(err.Error(), "read failed") {
		t.Fatalf("Copy from an unreadable source = %v, want its read error", err)
	}
	if es := list(t, dst); len(es) != 1 || es[0].Key != "keep" {
		t.Fatalf("the target after a failed read: %d keys, want its 1 key kept", len(es))
	}
}

// dropping is a store that loses one key of its writes: verify must see it.
type dropping struct {
	store.Store
	key string
}

func (d dropping) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	ops = slices.DeleteFunc(slices.Clone(ops), func(op store.Op) bool { return op.Key == d.key })
	return d.Store.Txn(ctx, conds, ops)
}

func TestCopyVerifies(t *testing.T) {
	src, dst := openBolt(t), openBolt(t)
	fill(t, src)
	_, err := Copy(t.Context(), src, dropping{dst, "nodes/n042"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "verify: the target holds 1250 keys, the source 1251") {
		t.Fatalf("Copy into a store that lost a key = %v, want a verify error", err)
	}
}

func TestCut(t *testing.T) {
	// es makes entries from "key@rev" words.
	es := func(s string) []store.Entry {
		var out []store.Entry
		for _, w := range strings.Fields(s) {
			k, r, _ := strings.Cut(w, "@")
			var rev int64
			fmt.Sscan(r, &rev)
			out = append(out, store.Entry{Key: k, Rev: rev})
		}
		return out
	}
	seq := func(n int64) string { return "events/" + store.SeqKey(n) }
	for _, tt := range []struct {
		name    string
		entries string
		batch   int
		want    int
	}{
		{"fewer than a batch", "a/1@1 b/1@2", 3, 2},
		{"between revisions", "a/1@1 b/1@2 c/1@3 d/1@4", 2, 2},
		{"not inside a revision", "a/1@1 b/1@2 c/1@2 d/1@3", 2, 1},
		{"a revision larger than a batch", "a/1@2 b/1@2 c/1@2 d/1@3", 2, 2},
		{"a directory's next revision", "a/1@1 b/1@2 a/2@3 c/1@4", 4, 2},
		{"one revision in a directory", "a/1@1 a/2@1 b/1@2", 4, 3},
		{"top level is a directory", "x@1 y@2", 4, 1},
		{"a directory's next revision inside a revision", "a/1@1 b/1@2 a/2@2", 4, 1},
		{"append logs share", seq(1) + "@1 " + seq(2) + "@2 " + seq(3) + "@3", 4, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := cut(es(tt.entries), tt.batch); got != tt.want {
				t.Errorf("cut(%s, %d) = %d, want %d", tt.entries, tt.batch, got, tt.want)
			}
		})
	}
}

// TestRoundTripEtcd: bbolt to a real etcd and back to bbolt.
func TestRoundTripEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	src := openBolt(t)
	fill(t, src)
	et, err := etcdstore.Open(t.Context(), etcdstore.Config{Endpoints: []string{srv.Endpoint}, Prefix: "/m/", RequestTimeout: 5 * time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer et.Close()
	if _, err := Copy(t.Context(), src, et, Options{}); err != nil {
		t.Fatalf("bolt to etcd: %v", err)
	}
	checkCopy(t, src, et)
	back := openBolt(t)
	if _, err := Copy(t.Context(), et, back, Options{}); err != nil {
		t.Fatalf("etcd to bolt: %v", err)
	}
	checkCopy(t, src, back)
}
