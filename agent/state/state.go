// Package state is the agent's durable memory in bbolt (state.db): the
// generation history, the switch journal that is written before every side
// effect of a switch, the quarantine of failed generations, the outcome of
// the last operation, and the retry number of each desired generation the
// daemon acted on (so a restart never retries a quarantined generation a
// second time).
//
// The database is opened for each transaction and closed right after, so a
// read-only `slipway-agent status` works while a switch is running; the
// switch itself is serialised by the agent's lock file, not by this package.
// This package never touches anything outside state.db.
package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Generation statuses.
const (
	StatusStaged      = "staged"      // on disk, never switched to (or switch in progress)
	StatusGood        = "good"        // switched to and verified healthy
	StatusQuarantined = "quarantined" // failed after a switch and reverted; never retried implicitly
	StatusFailed      = "failed"      // failed before any change on the node (e.g. staging)
	StatusCollected   = "collected"   // its directory was garbage-collected
)

// Journal phases, in order. A journal in any phase from PhaseFlip to
// PhaseConfirm, or PhaseRevert, means the node may be between two
// generations: recovery reverts it. PhaseBoot is past the confirm:
// recovery finishes it.
const (
	PhaseStage   = "stage"   // writing generations/N; the node is untouched
	PhaseFlip    = "flip"    // about to flip current and the links
	PhaseUnits   = "units"   // units being stopped/restarted/started
	PhaseVerify  = "verify"  // health checks running
	PhaseConfirm = "confirm" // waiting for the server's confirm
	// PhaseBoot: confirmed (or verified, without a server): the NixOS
	// toplevel of To is being made the boot default before the commit. A
	// journal in this phase is finished, never reverted.
	PhaseBoot   = "boot"
	PhaseRevert = "revert" // reverting To → From
)

// ErrNotFound is returned when a generation number is not in the history.
var ErrNotFound = errors.New("generation not found")

// Generation is one entry of the history.
type Generation struct {
	Number     int       `json:"number"`
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	Source     string    `json:"source,omitempty"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason,omitempty"`
	Warnings   []string  `json:"warnings,omitempty"` // systemd-analyze verify's warnings about its units
	CreatedAt  time.Time `json:"created_at"`
	SwitchedAt time.Time `json:"switched_at,omitzero"`
}

// Journal is the in-flight switch. There is at most one.
type Journal struct {
	Op     string `json:"op"`   // switch, rollback
	From   int    `json:"from"` // last good generation before the switch (0: none)
	To     int    `json:"to"`
	Phase  string `json:"phase"`
	Reason string `json:"reason,omitempty"` // set with PhaseRevert
	// KeepTo, set with PhaseRevert, says the revert undoes a rollback a
	// crash interrupted: To ran healthy before and did not fail, so it is
	// not quarantined.
	KeepTo bool `json:"keep_to,omitempty"`
	// NixOSProfile is the system profile generation the node ran before
	// the switch (NixOS driver; 0: none or not known): where a revert to a
	// generation without a toplevel sets the profile back to.
	NixOSProfile int       `json:"nixos_profile,omitempty"`
	StartedAt    time.Time `json:"started_at"`
	PID          int       `json:"pid"`
}

// Result is the outcome of the last operation, shown by `status`.
type Result struct {
	Op       string        `json:"op"`      // switch, rollback, recover
	Outcome  string        `json:"outcome"` // switched, unchanged, reverted, revert-failed, rejected, rollback-undone
	From     int           `json:"from"`
	To       int           `json:"to"`
	Reason   string        `json:"reason,omitempty"`
	Warnings []string      `json:"warnings,omitempty"` // unit-file warnings of the generation switched to
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
}

// Meta is the node's pointer set.
type Meta struct {
	Current  int `json:"current"`   // generation `current` points at (0: none)
	LastGood int `json:"last_good"` // newest generation verified healthy and committed
}

// Quarantine records a generation ID that failed on this node.
type Quarantine struct {
	ID     string    `json:"id"`
	Number int       `json:"number"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// RetrySeen records the server's retry number (api.Desired.Retry) of a
// desired generation when the daemon last acted on it.
type RetrySeen struct {
	ID    string    `json:"id"`
	Retry int       `json:"retry"`
	At    time.Time `json:"at"`
}

// MaxRetrySeen bounds the retry records kept; PutRetrySeen drops the
// oldest beyond it. A dropped record is harmless: the daemon treats a
// quarantined generation without a record as already retried.
const MaxRetrySeen = 256

var (
	bGens       = []byte("generations")
	bMeta       = []byte("meta")
	bQuarantine = []byte("quarantine")
	bRetry      = []byte("retry")
	kMeta       = []byte("meta")
	kJournal    = []byte("journal")
	kResult     = []byte("result")
)

// DB is the agent's state database.
type DB struct {
	path    string
	timeout time.Duration
}

// Open prepares the database at path (created on first use) and checks
// that it can be opened.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	d := &DB{path: path, timeout: 10 * time.Second}
	err := d.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bGens, bMeta, bQuarantine, bRetry} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	return d, nil
}

func (d *DB) open(ro bool) (*bolt.DB, error) {
	db, err := bolt.Open(d.path, 0o600, &bolt.Options{Timeout: d.timeout, ReadOnly: ro})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.path, err)
	}
	return db, nil
}

func (d *DB) update(fn func(*bolt.Tx) error) error {
	db, err := d.open(false)
	if err != nil {
		return err
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *DB) view(fn func(*bolt.Tx) error) error {
	if _, err := os.Stat(d.path); err != nil {
		return fmt.Errorf("open %s: %w", d.path, err)
	}
	db, err := d.open(true)
	if err != nil {
		return err
	}
	err = db.View(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

func key(n int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return b[:]
}

func get[T any](b *bolt.Bucket, k []byte) (T, bool, error) {
	var v T
	raw := b.Get(k)
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, fmt.Errorf("decode %s: %w", k, err)
	}
	return v, true, nil
}

func put(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// Snapshot is a consistent read of everything status needs.
type Snapshot struct {
	Meta        Meta
	Journal     *Journal
	Result      *Result
	Generations []Generation // ascending by number
	Quarantine  []Quarantine
	RetrySeen   map[string]RetrySeen // by manifest ID
}

// Snapshot reads the whole state in one read transaction.
func (d *DB) Snapshot() (Snapshot, error) {
	var s Snapshot
	err := d.view(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		var err error
		if s.Meta, _, err = get[Meta](m, kMeta); err != nil {
			return err
		}
		if j, ok, err := get[Journal](m, kJournal); err != nil {
			return err
		} else if ok {
			s.Journal = &j
		}
		if r, ok, err := get[Result](m, kResult); err != nil {
			return err
		} else if ok {
			s.Result = &r
		}
		if err := tx.Bucket(bGens).ForEach(func(k, v []byte) error {
			var g Generation
			if err := json.Unmarshal(v, &g); err != nil {
				return fmt.Errorf("decode generation: %w", err)
			}
			s.Generations = append(s.Generations, g)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bQuarantine).ForEach(func(k, v []byte) error {
			var q Quarantine
			if err := json.Unmarshal(v, &q); err != nil {
				return fmt.Errorf("decode quarantine: %w", err)
			}
			s.Quarantine = append(s.Quarantine, q)
			return nil
		}); err != nil {
			return err
		}
		b := tx.Bucket(bRetry)
		if b == nil {
			return nil // written by an agent older than the bucket
		}
		return b.ForEach(func(k, v []byte) error {
			var r RetrySeen
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode retry: %w", err)
			}
			if s.RetrySeen == nil {
				s.RetrySeen = map[string]RetrySeen{}
			}
			s.RetrySeen[r.ID] = r
			return nil
		})
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("read state: %w", err)
	}
	return s, nil
}

// Generation returns generation n.
func (s Snapshot) Generation(n int) (Generation, error) {
	for _, g := range s.Generations {
		if g.Number == n {
			return g, nil
		}
	}
	return Generation{}, fmt.Errorf("generation %d: %w", n, ErrNotFound)
}

// Settled returns the current generation when it has manifest ID id and
// is also the last good one: a switch to id has nothing to do. Apply and
// the daemon's loop both decide "already there" by it.
func (s Snapshot) Settled(id string) (Generation, bool) {
	g, err := s.Generation(s.Meta.Current)
	if err != nil || g.ID != id || s.Meta.Current != s.Meta.LastGood {
		return Generation{}, false
	}
	return g, true
}

// Quarantined returns the quarantine record of a manifest ID, if any.
func (s Snapshot) Quarantined(id string) (Quarantine, bool) {
	for _, q := range s.Quarantine {
		if q.ID == id {
			return q, true
		}
	}
	return Quarantine{}, false
}

// Retry returns the retry number last acted on for manifest ID id, and
// whether there is a record.
func (s Snapshot) Retry(id string) (int, bool) {
	r, ok := s.RetrySeen[id]
	return r.Retry, ok
}

// ByID returns the newest generation with manifest ID id.
func (s Snapshot) ByID(id string) (Generation, bool) {
	for i := len(s.Generations) - 1; i >= 0; i-- {
		if s.Generations[i].ID == id {
			return s.Generations[i], true
		}
	}
	return Generation{}, false
}

// Tx is a write transaction over the agent state. Every method stages a
// change; all of them land together when the function given to Update
// returns nil.
type Tx struct{ tx *bolt.Tx }

// Update runs fn in one write transaction.
func (d *DB) Update(fn func(*Tx) error) error {
	if err := d.update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) }); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// NextNumber returns the number the next new generation gets.
func (t *Tx) NextNumber() int {
	k, _ := t.tx.Bucket(bGens).Cursor().Last()
	if k == nil {
		return 1
	}
	return int(binary.BigEndian.Uint64(k)) + 1
}

// PutGeneration writes g.
func (t *Tx) PutGeneration(g Generation) error { return put(t.tx.Bucket(bGens), key(g.Number), g) }

// Generation reads generation n.
func (t *Tx) Generation(n int) (Generation, error) {
	g, ok, err := get[Generation](t.tx.Bucket(bGens), key(n))
	if err != nil {
		return g, err
	}
	if !ok {
		return g, fmt.Errorf("generation %d: %w", n, ErrNotFound)
	}
	return g, nil
}

// SetGenerationStatus updates one generation's status and reason.
func (t *Tx) SetGenerationStatus(n int, status, reason string) error {
	g, err := t.Generation(n)
	if err != nil {
		return err
	}
	g.Status, g.Reason = status, reason
	return t.PutGeneration(g)
}

// Meta reads the pointers.
func (t *Tx) Meta() (Meta, error) {
	m, _, err := get[Meta](t.tx.Bucket(bMeta), kMeta)
	return m, err
}

// PutMeta writes the pointers.
func (t *Tx) PutMeta(m Meta) error { return put(t.tx.Bucket(bMeta), kMeta, m) }

// PutJournal writes the in-flight switch record.
func (t *Tx) PutJournal(j Journal) error { return put(t.tx.Bucket(bMeta), kJournal, j) }

// ClearJournal removes the in-flight switch record.
func (t *Tx) ClearJournal() error { return t.tx.Bucket(bMeta).Delete(kJournal) }

// PutResult records the outcome of the last operation.
func (t *Tx) PutResult(r Result) error { return put(t.tx.Bucket(bMeta), kResult, r) }

// Quarantine marks a manifest ID as failed on this node.
func (t *Tx) Quarantine(q Quarantine) error { return put(t.tx.Bucket(bQuarantine), []byte(q.ID), q) }

// Unquarantine lifts the quarantine of a manifest ID (operator retry).
func (t *Tx) Unquarantine(id string) error { return t.tx.Bucket(bQuarantine).Delete([]byte(id)) }

// PutRetrySeen records that the daemon acted on manifest ID r.ID at retry
// number r.Retry, dropping the oldest records beyond MaxRetrySeen.
func (t *Tx) PutRetrySeen(r RetrySeen) error {
	b := t.tx.Bucket(bRetry)
	if err := put(b, []byte(r.ID), r); err != nil {
		return err
	}
	var all []RetrySeen
	if err := b.ForEach(func(k, v []byte) error {
		var x RetrySeen
		if err := json.Unmarshal(v, &x); err != nil {
			return fmt.Errorf("decode retry: %w", err)
		}
		all = append(all, x)
		return nil
	}); err != nil {
		return err
	}
	if len(all) <= MaxRetrySeen {
		return nil
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].At.Before(all[j].At) })
	for _, x := range all[:len(all)-MaxRetrySeen] {
		if x.ID == r.ID {
			continue // the record just written stays
		}
		if err := b.Delete([]byte(x.ID)); err != nil {
			return err
		}
	}
	return nil
}
