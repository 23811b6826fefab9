// Package store is the coordinator's storage contract: a small revisioned
// key-value store that every piece of server state (nodes, generations,
// releases, rollouts, the audit log) is kept in. Implementations live in
// subpackages (boltstore: embedded, one file, the default; etcd for HA) and
// must all pass the contract suite in storetest.
//
// Keys are non-empty strings, UTF-8 by convention, with "/" separating the
// levels of a hierarchy ("nodes/web-1") so that List and Changes can select a
// subtree by prefix.
// Values are opaque bytes: a store never interprets, validates or logs them.
//
// Revisions: one global counter, incremented once per committed write
// transaction that changes at least one key (a Put, a Delete of an existing
// key, a Txn whose ops change something). Every key written in that
// transaction gets the new counter as its mod revision. Revisions are strictly
// increasing and never reused, also across a restart, so a key's Rev is a
// compare-and-swap token for Txn.
//
// Sequences: an Append op writes its value under Key followed by a number of
// SeqDigits decimal digits that the store allocates when the transaction
// commits, so that writers appending to one log (the audit log) never
// contend on a counter key of their own. The numbers under one Key are
// strictly increasing in commit order and never reused (also after the
// newest is deleted, and across a restart); they may have gaps. A reader
// that has seen number n will never later see a new entry under that Key
// with a number ≤ n, so paging with ListPage from the last number seen
// misses nothing.
//
// Values are copied in both directions: callers may reuse the buffers they
// pass in, and the slices they get back are theirs.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

var (
	// ErrNotFound is returned (wrapped) by Get for a missing key.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned (wrapped, naming the key) by Txn when a
	// condition fails; nothing was written.
	ErrConflict = errors.New("conflict")
	// ErrClosed is returned (wrapped) by every call on a closed store.
	ErrClosed = errors.New("store closed")
	// ErrInvalidKey is returned (wrapped) for an empty key, or for a key
	// that appears in more than one op of a Txn.
	ErrInvalidKey = errors.New("invalid key")
	// ErrUnavailable is returned (wrapped) by a store that cannot reach
	// its backend in time (etcd unreachable, or without a leader or
	// quorum). A write that fails so may or may not have been committed;
	// callers retry later.
	ErrUnavailable = errors.New("store unavailable")
)

// Entry is one key with its value and mod revision (the revision of the
// transaction that last wrote it).
type Entry struct {
	Key   string
	Value []byte
	Rev   int64
}

// Cond is a Txn condition: the key's mod revision must equal Rev. Rev 0 means
// the key must not exist.
type Cond struct {
	Key string
	Rev int64
}

// Op is a Txn operation: put Value at Key, or delete Key if Delete is set
// (deleting a missing key is not an error). With Append set, Key is a
// prefix: the value is put under Key + SeqKey(n) for the next number n of
// that prefix's sequence (see the package doc). Several Append ops of one
// Txn may share a Key; they get increasing numbers in op order. Delete and
// Append cannot be combined.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	Append bool
}

// SeqDigits is the length of a sequence number in an Append op's key.
const SeqDigits = 20

// SeqKey formats a sequence number as an Append op's key suffix.
func SeqKey(n int64) string { return fmt.Sprintf("%0*d", SeqDigits, n) }

// ParseSeq returns the sequence number at the start of suffix (the part of
// a key after an Append op's Key), or false if it does not start with
// SeqDigits digits.
func ParseSeq(suffix string) (int64, bool) {
	if len(suffix) < SeqDigits {
		return 0, false
	}
	n, err := strconv.ParseUint(suffix[:SeqDigits], 10, 63)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

// Page selects part of the entries under a prefix, for ListPage.
type Page struct {
	// From is the first key to return (inclusive); "" or a key before the
	// prefix starts at the prefix.
	From string
	// Limit caps the number of entries returned; 0 or less returns them
	// all.
	Limit int
	// KeysOnly leaves every Entry's Value nil (Rev is still set).
	KeysOnly bool
}

// Store is a revisioned key-value store. It is safe for concurrent use.
// Every method but Close, Changes and Watch checks ctx before it starts.
type Store interface {
	// Get returns the entry at key, or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// List returns the entries whose key starts with prefix, sorted by key;
	// prefix "" lists everything. Prefixes are plain strings: "a/" does not
	// list "ab".
	List(ctx context.Context, prefix string) ([]Entry, error)
	// ListPage is List restricted to keys ≥ p.From, at most p.Limit of
	// them: a range read that costs what it returns, not the size of the
	// prefix.
	ListPage(ctx context.Context, prefix string, p Page) ([]Entry, error)
	// Count returns the number of keys that start with prefix.
	Count(ctx context.Context, prefix string) (int, error)
	// Put writes key and returns the new revision, which is its mod revision.
	Put(ctx context.Context, key string, value []byte) (rev int64, err error)
	// Delete removes key; a missing key is not an error and does not change
	// the revision.
	Delete(ctx context.Context, key string) error
	// Txn checks every condition, against the state before the transaction,
	// and then applies every op, all or nothing. If a condition fails it
	// returns an error wrapping ErrConflict that names the key. A key may
	// appear in at most one op (Append ops excepted: their Key is a
	// prefix). It returns the new revision, or the current one if the ops
	// changed nothing (no ops, or only deletes of missing keys).
	Txn(ctx context.Context, conds []Cond, ops []Op) (rev int64, err error)
	// Changes returns a channel that becomes readable after every committed
	// write that changes a key under prefix ("" for all), from the call on.
	// Signals coalesce (the channel has capacity 1 and the store never
	// blocks on it), so several writes may give one signal: callers re-read
	// after each. The channel is closed when ctx ends or the store closes.
	Changes(ctx context.Context, prefix string) <-chan struct{}
	// Watch calls fn with the key after every committed write that changes
	// a key under prefix, from the call on, until stop is called or the
	// store closes:
	// Changes without a channel, for a waiter that holds no goroutine (a
	// held long-poll). fn runs in the writer's goroutine with the store's
	// watcher lock held: it must return at once and must not call the
	// store. Several writes may give one call or several; fn may run once
	// more while stop is being called, never after stop returns.
	Watch(prefix string, fn func(key string)) (stop func())
	// Rev returns the current global revision.
	Rev(ctx context.Context) (int64, error)
	// Close releases the store and closes every Changes channel. Later
	// calls return ErrClosed; Close itself may be called again and then
	// returns nil.
	Close() error
}
