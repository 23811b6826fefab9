package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// Last seen, coalesced. An agent reports every minute; most reports say
// what its last one said. Such a routine report changes only when the node
// was last seen (and its report's time): the registry keeps that in memory
// and writes the changed values in one transaction every
// Config.SeenFlushEvery (RunFlusher, and once more when it stops) to
// lastseen/<name>, never to the node record. Node, Nodes and the derived
// states read the newest of the node record's LastSeen, lastseen/<name>
// and the memory. A report that changes anything else, or comes from a
// node that was offline, is written at once as before.
//
// A crash loses at most SeenFlushEvery of last-seen times: a node may then
// look seen a few seconds earlier than it was, never later.

const kSeen = "lastseen/" // lastseen/<name> -> seenRec

type seenRec struct {
	At         time.Time `json:"at"`
	ReportTime time.Time `json:"report_time,omitzero"`
}

// seenEntry is what the registry holds of one node.
type seenEntry struct {
	seenRec
	// rev is the newest store revision at which the node record was
	// written, as far as this process knows; fp is the fingerprint of
	// the report stored at fpRev. fp is valid only when fpRev == rev.
	rev   int64
	fp    [32]byte
	fpRev int64
}

type seenCache struct {
	mu      sync.Mutex
	loaded  bool
	nodes   map[string]*seenEntry
	pending map[string]seenRec
}

func newSeenCache() *seenCache {
	return &seenCache{nodes: map[string]*seenEntry{}, pending: map[string]seenRec{}}
}

// reportPrint fingerprints what a report says, but for its time.
func reportPrint(rep api.Report) [32]byte { return routinereport.Print(rep) }

// SeenPrint takes a routine report that rides on a long-poll (shared/
// routinereport): the node's report fingerprinted fp, as of at. When the
// node's stored report has that fingerprint and the node was not offline,
// the node is seen now and its report's time moves on to at (never past
// now), in memory as for a routine report, and SeenPrint reports true;
// else it changes nothing and the agent is told to post its report.
func (r *Registry) SeenPrint(ctx context.Context, name string, fp [32]byte, at time.Time) (bool, error) {
	now := r.cfg.Now().UTC()
	if at.After(now) {
		at = now
	}
	return r.seenRoutine(ctx, name, fp, seenRec{At: now, ReportTime: at.UTC()})
}

func (c *seenCache) entry(name string) *seenEntry {
	e := c.nodes[name]
	if e == nil {
		e = &seenEntry{}
		c.nodes[name] = e
	}
	return e
}

func (e *seenEntry) see(s seenRec) {
	if s.At.After(e.At) {
		e.At = s.At
	}
	if s.ReportTime.After(e.ReportTime) {
		e.ReportTime = s.ReportTime
	}
}

// load reads lastseen/ once per process.
func (c *seenCache) load(ctx context.Context, st store.Store) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded {
		return nil
	}
	es, err := st.List(ctx, kSeen)
	if err != nil {
		return fmt.Errorf("load last seen: %w", err)
	}
	for _, e := range es {
		var s seenRec
		if err := json.Unmarshal(e.Value, &s); err != nil {
			return fmt.Errorf("decode %s: %w", e.Key, err)
		}
		c.entry(strings.TrimPrefix(e.Key, kSeen)).see(s)
	}
	c.loaded = true
	return nil
}

// merged returns n with the newest last seen and report time known.
func (c *seenCache) merged(n nodeRec) nodeRec {
	c.mu.Lock()
	e := c.nodes[n.Name]
	var s seenRec
	if e != nil {
		s = e.seenRec
	}
	c.mu.Unlock()
	if s.At.After(n.LastSeen) {
		n.LastSeen = s.At
	}
	if n.Report != nil && s.ReportTime.After(n.Report.Time) {
		rep := *n.Report
		rep.Time = s.ReportTime
		n.Report = &rep
	}
	return n
}

// routine records a report with fingerprint fp from node name seen at now
// in memory and reports true, if the node's stored report says the same
// and the node was not offline (last seen within offlineAfter).
func (c *seenCache) routine(name string, fp [32]byte, s seenRec, offlineAfter time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.nodes[name]
	if e == nil || e.fpRev == 0 || e.fpRev != e.rev || e.fp != fp || s.At.Sub(e.At) >= offlineAfter {
		return false
	}
	e.see(s)
	c.pending[name] = e.seenRec
	return true
}

// knows reports whether the cache holds the fingerprint of name's report
// as stored at the newest revision it knows of the node record.
func (c *seenCache) knows(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.nodes[name]
	return e != nil && e.fpRev != 0 && e.fpRev == e.rev
}

// stored notes that the node record of name, written at rev, holds a
// report with fingerprint fp and was seen as s.
func (c *seenCache) stored(name string, fp [32]byte, rev int64, s seenRec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(name)
	e.see(s)
	if rev >= e.rev {
		e.rev, e.fp, e.fpRev = rev, fp, rev
	}
}

// forget notes that the records of names were written at rev: what the
// cache knows of their reports is stale.
func (c *seenCache) forget(names []string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		e := c.entry(n)
		e.rev = max(e.rev, rev)
	}
}

func (c *seenCache) take() map[string]seenRec {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	c.pending = map[string]seenRec{}
	return p
}

// putBack returns values a flush could not write (newer ones win).
func (c *seenCache) putBack(p map[string]seenRec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, s := range p {
		if cur, ok := c.pending[name]; !ok || s.At.After(cur.At) {
			c.pending[name] = s
		}
	}
}

// seenFlushBatch caps the keys one flush transaction writes.
const seenFlushBatch = 2000

// FlushSeen writes the last-seen times routine reports left in memory.
func (r *Registry) FlushSeen(ctx context.Context) error {
	p := r.seen.take()
	if len(p) == 0 {
		return nil
	}
	ops := make([]store.Op, 0, min(len(p), seenFlushBatch))
	done := []string{}
	for name, s := range p {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		ops = append(ops, store.Op{Key: kSeen + name, Value: b})
		done = append(done, name)
		if len(ops) < seenFlushBatch && len(done) < len(p) {
			continue
		}
		if _, err := r.st.Txn(ctx, nil, ops); err != nil {
			for _, n := range done[:len(done)-len(ops)] {
				delete(p, n)
			}
			r.seen.putBack(p)
			return fmt.Errorf("flush last seen: %w", err)
		}
		ops = ops[:0]
	}
	return nil
}

// RunFlusher flushes last-seen times every Config.SeenFlushEvery until
// ctx ends, then once more (with its own short deadline).
func (r *Registry) RunFlusher(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.SeenFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return r.FlushSeen(fctx)
		case <-tick.C:
			r.nodes.tidy()
			if err := r.FlushSeen(ctx); err != nil && ctx.Err() == nil {
				r.log.Error().Err(err).Msg("flushing last-seen times")
			}
		}
	}
}

// seenRoutine records a routine report of name in memory and reports
// true, or reports false when it must be written. It reads the node
// record once when the registry does not know its stored report yet.
func (r *Registry) seenRoutine(ctx context.Context, name string, fp [32]byte, s seenRec) (bool, error) {
	if err := r.seen.load(ctx, r.st); err != nil {
		return false, err
	}
	if r.seen.routine(name, fp, s, r.cfg.OfflineAfter) {
		return true, nil
	}
	if r.seen.knows(name) {
		// The stored report says something else (or the node was
		// offline): the report is written, and the write reads the record.
		return false, nil
	}
	var n nodeRec
	e, err := r.st.Get(ctx, kNodes+name)
	if err != nil {
		return false, nil // the write says why (not found, …)
	}
	if err := r.nodes.decode(kNodes+name, e.Rev, e.Value, &n); err != nil || n.Report == nil {
		return false, nil
	}
	r.seen.stored(name, reportPrint(*n.Report), e.Rev, seenRec{At: n.LastSeen, ReportTime: n.Report.Time})
	return r.seen.routine(name, fp, s, r.cfg.OfflineAfter), nil
}

// touch records that node name was seen at now (a repeated confirm).
func (c *seenCache) touch(name string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(name)
	e.see(seenRec{At: now})
	p := c.pending[name]
	p.At = e.At
	p.ReportTime = e.ReportTime
	c.pending[name] = p
}
