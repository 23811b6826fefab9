package boltstore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/storetest"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"))
	})
}

func TestPersistence(t *testing.T) {
	storetest.RunPersistence(t, func(t *testing.T, path string) store.Store {
		return open(t, path)
	})
}

func TestRevisionsCountByOne(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := t.Context()
	if rev, err := s.Rev(ctx); err != nil || rev != 0 {
		t.Fatalf("new store: Rev = %d, %v; want 0", rev, err)
	}
	for want := int64(1); want <= 3; want++ {
		if rev, err := s.Put(ctx, "k", []byte("v")); err != nil || rev != want {
			t.Fatalf("Put = %d, %v; want %d", rev, err, want)
		}
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	open(t, path)
	start := time.Now()
	s, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	t.Log(err)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "store "+path+" is in use by another process") {
		t.Fatalf("second Open = %q, want ErrLocked naming %s", err, path)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %s with a 100ms timeout", d)
	}
}

func TestBadFile(t *testing.T) {
	random := make([]byte, 64<<10)
	rand.Read(random)
	for _, tt := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"text", []byte("this is not a database\n"), "not a bbolt database, or corrupt"},
		{"random", random, "not a bbolt database, or corrupt"},
		{"zeros", make([]byte, 64<<10), "not a bbolt database, or corrupt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %q, want %q naming the path", err, tt.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, tt.content) {
				t.Error("Open changed the file")
			}
		})
	}
}

// TestForeignFile opens bbolt files that are not (or not yet) this store's.
func TestForeignFile(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(tx *bolt.Tx) error
		want  string
	}{
		{"other buckets", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("generations"))
			return err
		}, `not a slipway store (it has a bucket "generations")`},
		{"newer schema", func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucket(bucketKV); err != nil {
				return err
			}
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := meta.Put(keyRev, u64(7)); err != nil {
				return err
			}
			return meta.Put(keySchema, u64(schema+1))
		}, "schema 2 is newer than this slipway's (1): upgrade slipway"},
		{"no schema", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket(bucketMeta)
			return err
		}, "not a slipway store or corrupt (no schema)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tt.setup); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %q, want %q naming the path", err, tt.want)
			}
		})
	}
}

func TestNoDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "store.db")
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open in a missing directory succeeded")
	} else if !strings.Contains(err.Error(), path) {
		t.Fatalf("Open = %q, want the path in it", err)
	} else {
		t.Log(err)
	}
}
