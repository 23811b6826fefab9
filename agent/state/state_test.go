package state

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T) (*DB, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	return db, p
}

func snap(t *testing.T, db *DB) Snapshot {
	t.Helper()
	s, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRetrySeen(t *testing.T) {
	db, path := open(t)
	if n, ok := snap(t, db).Retry("sha256-a"); ok || n != 0 {
		t.Fatalf("empty db: Retry = %d, %v", n, ok)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		put  RetrySeen
		id   string
		want int
	}{
		{"first", RetrySeen{ID: "sha256-a", Retry: 0, At: at}, "sha256-a", 0},
		{"bumped", RetrySeen{ID: "sha256-a", Retry: 2, At: at.Add(time.Second)}, "sha256-a", 2},
		{"other id", RetrySeen{ID: "sha256-b", Retry: 7, At: at}, "sha256-b", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := db.Update(func(tx *Tx) error { return tx.PutRetrySeen(tt.put) }); err != nil {
				t.Fatal(err)
			}
			if n, ok := snap(t, db).Retry(tt.id); !ok || n != tt.want {
				t.Fatalf("Retry(%s) = %d, %v; want %d", tt.id, n, ok, tt.want)
			}
		})
	}
	// Survives a reopen (a restart of the agent).
	db2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := snap(t, db2).Retry("sha256-a"); !ok || n != 2 {
		t.Fatalf("after reopen: Retry = %d, %v; want 2", n, ok)
	}
}

func TestRetrySeenPrunesOldest(t *testing.T) {
	db, _ := open(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := db.Update(func(tx *Tx) error {
		for i := range MaxRetrySeen + 3 {
			if err := tx.PutRetrySeen(RetrySeen{ID: fmt.Sprintf("sha256-%04d", i), Retry: i, At: base.Add(time.Duration(i) * time.Second)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s := snap(t, db)
	if len(s.RetrySeen) != MaxRetrySeen {
		t.Fatalf("%d records kept, want %d", len(s.RetrySeen), MaxRetrySeen)
	}
	for i := range 3 {
		if _, ok := s.Retry(fmt.Sprintf("sha256-%04d", i)); ok {
			t.Errorf("oldest record %d kept", i)
		}
	}
	if n, ok := s.Retry(fmt.Sprintf("sha256-%04d", MaxRetrySeen+2)); !ok || n != MaxRetrySeen+2 {
		t.Errorf("newest record: %d, %v", n, ok)
	}
}

// A state.db written before the retry bucket existed still reads, and
// Open adds the bucket.
func TestSnapshotWithoutRetryBucket(t *testing.T) {
	db, path := open(t)
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bRetry) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	if _, ok := snap(t, db).Retry("sha256-a"); ok {
		t.Fatal("record without a bucket")
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutRetrySeen(RetrySeen{ID: "sha256-a", Retry: 1}) }); err != nil {
		t.Fatal(err)
	}
	if n, ok := snap(t, db).Retry("sha256-a"); !ok || n != 1 {
		t.Fatalf("Retry = %d, %v", n, ok)
	}
}

func TestSettled(t *testing.T) {
	gens := []Generation{{Number: 1, ID: "sha256-a"}, {Number: 2, ID: "sha256-b"}}
	tests := []struct {
		name string
		meta Meta
		id   string
		want int // 0: not settled
	}{
		{"current and last good", Meta{Current: 2, LastGood: 2}, "sha256-b", 2},
		{"other ID", Meta{Current: 2, LastGood: 2}, "sha256-a", 0},
		{"current is not last good", Meta{Current: 2, LastGood: 1}, "sha256-b", 0},
		{"no current", Meta{}, "sha256-a", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, ok := Snapshot{Meta: tt.meta, Generations: gens}.Settled(tt.id)
			if got := map[bool]int{true: g.Number}[ok]; got != tt.want || ok != (tt.want != 0) {
				t.Fatalf("Settled(%s) = %d, %v; want %d", tt.id, g.Number, ok, tt.want)
			}
		})
	}
}
