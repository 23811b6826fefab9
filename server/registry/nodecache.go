package registry

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// nodeCache keeps node records decoded, each with the store revision it
// was at when read or written, so a read of a record that has not changed
// since copies it instead of decoding its JSON again. During a deploy every
// node's record is written by its reports and confirm and read again by
// the write that follows and by the rollout engine (at 10,000 agents the
// decoding was ~14% of the server's CPU). A revision names one value of a
// key (the store contract: every key a transaction writes is at the
// revision the transaction returns), so a record another server wrote has
// another revision and is decoded as before. Entries not used for one to
// two nodeCacheIdle are dropped (on use, and by RunFlusher's tidy), so an
// idle fleet does not keep them.
type nodeCache struct {
	mu      sync.Mutex
	m       map[string]*cachedNode
	epoch   uint64
	sweptAt time.Time
	now     func() time.Time // the wall clock (memory housekeeping, not the registry's Config.Now)
	decoded int              // records decoded from JSON (tests)
}

type cachedNode struct {
	rev   int64
	epoch uint64
	rec   nodeRec
}

// nodeCacheIdle: a deploy reads and writes a node's record within seconds
// (its reports, its confirm, the steps that look at it); kept longer, the
// records of a whole fleet (~12 MB at 10,000 nodes) outlive the burst and
// hold the idle server's heap up.
const nodeCacheIdle = 10 * time.Second

func newNodeCache() *nodeCache {
	return &nodeCache{m: map[string]*cachedNode{}, now: time.Now}
}

// decode sets *n to the record of key stored at rev with value b: a copy of
// the cached record when it is at rev, else b decoded (and cached).
func (c *nodeCache) decode(key string, rev int64, b []byte, n *nodeRec) error {
	c.mu.Lock()
	if e, ok := c.m[key]; ok && e.rev == rev {
		e.epoch = c.epoch
		*n = cloneNode(e.rec)
		c.mu.Unlock()
		return nil
	}
	c.decoded++
	c.mu.Unlock()
	*n = nodeRec{}
	if err := json.Unmarshal(b, n); err != nil {
		return err
	}
	c.store(key, rev, cloneNode(*n))
	return nil
}

// get sets *n to a copy of key's cached record and returns its revision;
// false when key is not cached.
func (c *nodeCache) get(key string, n *nodeRec) (int64, bool) {
	return c.getAt(key, 0, n)
}

// getAt is get for the record at rev only (rev 0: whichever is cached).
func (c *nodeCache) getAt(key string, rev int64, n *nodeRec) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || (rev != 0 && e.rev != rev) {
		return 0, false
	}
	e.epoch = c.epoch
	*n = cloneNode(e.rec)
	return e.rev, true
}

// store notes that key holds rec at rev (read, or written by a
// transaction that committed at rev). The cache owns rec from now on: the
// caller passes a copy nobody else changes.
func (c *nodeCache) store(key string, rev int64, rec nodeRec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && e.rev > rev {
		return // a newer value is cached already
	}
	c.m[key] = &cachedNode{rev: rev, epoch: c.epoch, rec: rec}
	c.sweep()
}

// drop forgets key (deleted, or written with a value not known here).
func (c *nodeCache) drop(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

// tidy sweeps when it is time (RunFlusher calls it: an idle fleet reads
// and writes no node record that would).
func (c *nodeCache) tidy() {
	c.mu.Lock()
	c.sweep()
	c.mu.Unlock()
}

// sweep drops, every nodeCacheIdle, the entries not used since the sweep
// before. Called with mu held.
func (c *nodeCache) sweep() {
	now := c.now()
	if now.Sub(c.sweptAt) < nodeCacheIdle {
		return
	}
	for k, e := range c.m {
		if e.epoch < c.epoch {
			delete(c.m, k)
		}
	}
	c.epoch++
	c.sweptAt = now
}

// stats are the number of cached records and of records decoded (tests).
func (c *nodeCache) stats() (cached, decoded int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m), c.decoded
}

// cloneNode copies n so that neither copy's maps, slices or report can
// change the other's.
func cloneNode(n nodeRec) nodeRec {
	n.Labels = maps.Clone(n.Labels)
	if n.Report != nil {
		rep := *n.Report
		rep.Generations = slices.Clone(rep.Generations)
		rep.Units = slices.Clone(rep.Units)
		rep.Warnings = slices.Clone(rep.Warnings)
		n.Report = &rep
	}
	return n
}

// isNodeKey reports whether key is a node record's.
func isNodeKey(key string) bool {
	rest, ok := strings.CutPrefix(key, kNodes)
	return ok && rest != "" && !strings.Contains(rest, "/")
}
