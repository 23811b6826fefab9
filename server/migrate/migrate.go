// Package migrate copies a coordinator's whole state from one store.Store
// to another (bbolt to etcd and back) for `slipway-server migrate`. It
// writes only to the target, and only after checking the target is empty
// (or being told to replace what it holds); it reads the source through
// the store interface and never changes it.
//
// Every key is copied with its value as is. Revisions cannot be copied
// (each store allocates its own), but their order is: keys are written in
// the order of their source revisions, several to a transaction, those
// written together in the source together in the target, and keys of one
// directory in transactions of their own, so what sorts by revision within
// a listing (which of a node's generations a history prune keeps) sorts
// the same after. Append sequences go on above the highest number copied.
package migrate

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/server/store"
)

// ErrNotEmpty is returned (wrapped, with the target's key count) by Copy
// when the target holds keys and Options.Force is not set.
var ErrNotEmpty = errors.New("target store is not empty")

// DefaultBatch is how many keys one target transaction writes: under
// etcd's default --max-txn-ops (128) with room for the store's own keys.
const DefaultBatch = 100

// pageSize is how many keys one source read returns.
const pageSize = 1000

// Options tune Copy.
type Options struct {
	// Force deletes whatever the target holds before copying.
	Force bool
	// Batch is the keys per target transaction (0: DefaultBatch).
	Batch int
	// Progress, when set, receives a line per step and every tenth of
	// the copy.
	Progress io.Writer
}

// Result is what was copied.
type Result struct {
	// Keys is the number of keys copied (and found in the target after).
	Keys int
	// ByPrefix counts them by their first path segment ("nodes/").
	ByPrefix map[string]int
	// Deleted is the number of target keys deleted first (Force).
	Deleted int
}

// Copy copies every key of src into dst and then verifies that dst holds
// exactly src's keys and values.
func Copy(ctx context.Context, src, dst store.Store, o Options) (Result, error) {
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	p := progress{w: o.Progress}
	var res Result
	n, err := dst.Count(ctx, "")
	if err != nil {
		return res, fmt.Errorf("count target: %w", err)
	}
	if n > 0 && !o.Force {
		return res, fmt.Errorf("%w: it holds %d keys (--force deletes them first)", ErrNotEmpty, n)
	}
	// The source is read whole before --force deletes anything: a source
	// that cannot be read leaves the target as it was.
	es, err := readAll(ctx, src, &p)
	if err != nil {
		return res, err
	}
	if n > 0 {
		p.printf("deleting the %d keys the target holds (--force)", n)
		if res.Deleted, err = deleteAll(ctx, dst, o.Batch); err != nil {
			return res, err
		}
	}
	if err := write(ctx, dst, es, o.Batch, &p); err != nil {
		return res, err
	}
	res.Keys, res.ByPrefix = len(es), byPrefix(es)
	p.printf("verifying the target")
	if err := verify(ctx, dst, es); err != nil {
		return res, err
	}
	return res, nil
}

// readAll reads every entry of s, in pages, sorted by revision, then key.
func readAll(ctx context.Context, s store.Store, p *progress) ([]store.Entry, error) {
	total, err := s.Count(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("count source: %w", err)
	}
	p.printf("reading %d keys from the source", total)
	var out []store.Entry
	from := ""
	for {
		page, err := s.ListPage(ctx, "", store.Page{From: from, Limit: pageSize})
		if err != nil {
			return nil, fmt.Errorf("read source: %w", err)
		}
		out = append(out, page...)
		if len(page) < pageSize {
			break
		}
		from = page[len(page)-1].Key + "\x00"
	}
	slices.SortStableFunc(out, func(a, b store.Entry) int { return cmp.Compare(a.Rev, b.Rev) })
	return out, nil
}

// write puts es into dst in order, batch keys a transaction; keys that
// share a source revision go into one transaction where they fit.
func write(ctx context.Context, dst store.Store, es []store.Entry, batch int, p *progress) error {
	done := 0
	for len(es) > 0 {
		n := cut(es, batch)
		ops := make([]store.Op, n)
		for i, e := range es[:n] {
			ops[i] = store.Op{Key: e.Key, Value: e.Value}
		}
		if _, err := dst.Txn(ctx, nil, ops); err != nil {
			return fmt.Errorf("write target (after %d keys): %w", done, err)
		}
		p.step(done, done+n, done+len(es))
		done += n
		es = es[n:]
	}
	return nil
}

// cut is how many of es (sorted by revision) the next transaction takes:
// at most batch; never two revisions of one directory (keys that sort by
// revision within a listing, as a node's generations do, keep their exact
// order), Append logs excepted (their order is in their keys); and not
// splitting a revision's keys unless they alone are more than batch.
func cut(es []store.Entry, batch int) int {
	revs := map[string]int64{} // directory -> the revision it has in the batch
	n := 0
	for ; n < len(es) && n < batch; n++ {
		d, ok := dir(es[n].Key)
		if !ok {
			continue
		}
		if r, seen := revs[d]; seen && r != es[n].Rev {
			break
		}
		revs[d] = es[n].Rev
	}
	if n == len(es) || es[n].Rev != es[n-1].Rev {
		return n
	}
	m := n
	for m > 0 && es[m].Rev == es[m-1].Rev {
		m--
	}
	if m == 0 {
		return n
	}
	return m
}

// dir is key's directory (up to its last "/"), or false for an Append
// log's key.
func dir(key string) (string, bool) {
	i := strings.LastIndexByte(key, '/') + 1
	if last := key[i:]; len(last) == store.SeqDigits {
		if _, ok := store.ParseSeq(last); ok {
			return "", false
		}
	}
	return key[:i], true
}

// deleteAll deletes every key of s and returns how many.
func deleteAll(ctx context.Context, s store.Store, batch int) (int, error) {
	deleted := 0
	for {
		page, err := s.ListPage(ctx, "", store.Page{Limit: batch, KeysOnly: true})
		if err != nil {
			return deleted, fmt.Errorf("clear target: %w", err)
		}
		if len(page) == 0 {
			return deleted, nil
		}
		ops := make([]store.Op, len(page))
		for i, e := range page {
			ops[i] = store.Op{Key: e.Key, Delete: true}
		}
		if _, err := s.Txn(ctx, nil, ops); err != nil {
			return deleted, fmt.Errorf("clear target: %w", err)
		}
		deleted += len(page)
	}
}

// verify checks that dst holds exactly the keys and values of es.
func verify(ctx context.Context, dst store.Store, es []store.Entry) error {
	want := make(map[string][]byte, len(es))
	for _, e := range es {
		want[e.Key] = e.Value
	}
	n, err := dst.Count(ctx, "")
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if n != len(es) {
		return fmt.Errorf("verify: the target holds %d keys, the source %d (another writer?)", n, len(es))
	}
	from := ""
	for {
		page, err := dst.ListPage(ctx, "", store.Page{From: from, Limit: pageSize})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		for _, e := range page {
			v, ok := want[e.Key]
			if !ok {
				return fmt.Errorf("verify: the target holds %q, the source does not", e.Key)
			}
			if !bytes.Equal(v, e.Value) {
				return fmt.Errorf("verify: %q differs between source and target", e.Key)
			}
		}
		if len(page) < pageSize {
			return nil
		}
		from = page[len(page)-1].Key + "\x00"
	}
}

func byPrefix(es []store.Entry) map[string]int {
	m := map[string]int{}
	for _, e := range es {
		p, _, found := strings.Cut(e.Key, "/")
		if found {
			p += "/"
		}
		m[p]++
	}
	return m
}

// Summary is a line per prefix of r, sorted.
func (r Result) Summary() string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(r.ByPrefix)) {
		fmt.Fprintf(&b, "  %-24s %d\n", p, r.ByPrefix[p])
	}
	fmt.Fprintf(&b, "  %-24s %d\n", "total", r.Keys)
	return b.String()
}

// progress prints steps and every tenth of the copy.
type progress struct {
	w io.Writer
}

func (p *progress) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// step reports a batch from done to now of total keys, when it crosses a
// tenth.
func (p *progress) step(done, now, total int) {
	if total == 0 || (10*done/total == 10*now/total && now != total) {
		return
	}
	p.printf("copied %d/%d keys (%d%%)", now, total, 100*now/total)
}
