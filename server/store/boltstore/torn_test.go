package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/slipway-dev/slipway/server/store"
)

// fill writes n keys of size bytes each into the store at path, in
// batches, and returns it open.
func fill(t testing.TB, path string, n, size int) *Store {
	t.Helper()
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v := []byte(strings.Repeat("x", size))
	for i := 0; i < n; i += 500 {
		var ops []store.Op
		for j := i; j < min(i+500, n); j++ {
			ops = append(ops, store.Op{Key: fmt.Sprintf("nodes/n%07d", j), Value: v})
		}
		if _, err := s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// tornCopy copies src to dst the way cp does while a writer commits: the
// first part of the file (with both meta pages) before `between` runs, the
// rest after.
func tornCopy(t testing.TB, src, dst string, split int64, between func()) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.CopyN(out, in, split); err != nil {
		t.Fatal(err)
	}
	between()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

// rewrite commits n transactions that each rewrite a third of the keys
// of a store filled by fill(keys), with values of another size: what a
// busy server does while someone copies its file.
func rewrite(t testing.TB, s *Store, keys, n int) {
	t.Helper()
	for k := range n {
		var ops []store.Op
		for j := 0; j < keys; j += 3 {
			ops = append(ops, store.Op{Key: fmt.Sprintf("nodes/n%07d", (j+k)%keys), Value: []byte(strings.Repeat("y", 150+k))})
		}
		if _, err := s.Txn(context.Background(), nil, ops); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTornCopyRefused: a copy of store.db taken while a writer commits
// (the first part copied before the commits, the rest after, as cp does
// during them) and a copy that stopped early are never used as they are:
// Open refuses them with ErrCorrupt naming the file and what is wrong and
// leaves the file as it was, or (when the commits happened not to touch
// the pages copied after them) opens a copy that holds exactly what the
// store held when the copy began. A copy taken between commits opens.
func TestTornCopyRefused(t *testing.T) {
	const keys = 5000
	for _, tc := range []struct {
		name    string
		split   float64 // part of the file copied before the writer's commits
		commits int     // commits between the two parts
		cut     float64 // keep this part of the copy (0: all)
		want    string  // in the error ("" = opens)
	}{
		{name: "copied between commits", split: 0.5},
		{name: "torn at 1/2, 20 commits", split: 0.5, commits: 20, want: "corrupt: "},
		{name: "torn at 1/4, 20 commits", split: 0.25, commits: 20, want: "corrupt: "},
		{name: "torn at 3/4, 20 commits", split: 0.75, commits: 20, want: "corrupt: "},
		{name: "torn at 1/2, 2 commits", split: 0.5, commits: 2, want: "corrupt: "},
		{name: "stopped at 1/2", split: 0.5, cut: 0.5, want: "a copy that stopped early"},
		{name: "stopped after the meta pages", split: 0.5, cut: 0.01, want: "a copy that stopped early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "store.db")
			s := fill(t, src, keys, 200)
			defer s.Close()
			fi, err := os.Stat(src)
			if err != nil {
				t.Fatal(err)
			}
			snapshot, err := s.List(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, "copy.db")
			tornCopy(t, src, dst, int64(float64(fi.Size())*tc.split), func() { rewrite(t, s, keys, tc.commits) })
			if tc.cut > 0 {
				if err := os.Truncate(dst, int64(float64(fi.Size())*tc.cut)); err != nil {
					t.Fatal(err)
				}
			}
			before, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Open(dst, Options{Timeout: -1})
			if err == nil {
				// Opened: it must be a whole copy, holding exactly what
				// the store held when the copy began.
				defer c.Close()
				got, err := c.List(context.Background(), "")
				if err != nil || !slices.EqualFunc(got, snapshot, func(a, b store.Entry) bool {
					return a.Key == b.Key && a.Rev == b.Rev && bytes.Equal(a.Value, b.Value)
				}) {
					t.Fatalf("Open used a copy that differs from the store when the copy began (%d entries, want %d; %v)", len(got), len(snapshot), err)
				}
				if tc.want != "" {
					t.Logf("the writes between the two parts left the copied pages whole: it opens and holds the store as it was")
				}
				return
			}
			if tc.want == "" {
				t.Fatalf("Open of a whole copy: %v", err)
			}
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "open store "+dst+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %q, want ErrCorrupt naming %s and %q", err, dst, tc.want)
			}
			after, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(before, after) {
				t.Errorf("Open changed the refused file (%v)", err)
			}
		})
	}
}

// BenchmarkOpenCheck measures what Open's checks of a whole file cost at
// start-up (checkLength and checkPages, with the file in the page cache)
// next to bbolt's own open, for stores filled with 2 KiB values to 16, 117
// (the 10,000-agent fleet benchmark's store.db after four deploys) and 512
// MiB of file or more: the file sizes reached are in the names.
func BenchmarkOpenCheck(b *testing.B) {
	for _, mib := range []int{16, 117, 512} {
		path := filepath.Join(b.TempDir(), "store.db")
		s := fill(b, path, mib*1024/2*9/10, 2048)
		for {
			fi, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			if fi.Size() >= int64(mib)<<20 {
				break
			}
			rewrite(b, s, 1000, 1)
			if _, err := s.Put(context.Background(), fmt.Sprintf("pad/%d", fi.Size()), make([]byte, 1<<20)); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		fi, _ := os.Stat(path)
		b.Run(fmt.Sprintf("size=%dMiB/bolt-open", fi.Size()>>20), func(b *testing.B) {
			for b.Loop() {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					b.Fatal(err)
				}
				db.Close()
			}
		})
		b.Run(fmt.Sprintf("size=%dMiB/checks", fi.Size()>>20), func(b *testing.B) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			for b.Loop() {
				if err := checkLength(path); err != nil {
					b.Fatal(err)
				}
				if err := checkPages(db); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
