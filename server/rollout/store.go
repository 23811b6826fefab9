package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// How rollouts are kept so that the engine's cost follows what changed:
//
//   - activerollouts/<seq> names every rollout that is not finished, with
//     its state: Tick lists it, not rollouts/, so finished rollouts cost
//     nothing per tick.
//   - An active rollout's record (rollouts/<seq>) holds its waves without
//     their nodes; each node is its own key, rolloutnode/<seq>/<wave>/<i>,
//     and a step writes the record and the nodes that changed, not the
//     fleet. The registry keeps the last record it wrote or read for every
//     active rollout, with its revision, so a step decodes nothing when no
//     one else wrote the rollout since.
//   - A finished rollout's record keeps its waves without their nodes and
//     the count of nodes per state; the per-node detail (state, reason,
//     publish time, previous generation: what `rollout show` prints and a
//     rollback needs) moves to one value, rolloutdetail/<seq>, read only
//     when that rollout is shown, listed in full, retried or rolled back.
//     A retry that resumes a failed rollout gives it per-node keys again.
//   - The engine observes a node of an active rollout again only when a
//     committed write touched its record, desired generation or confirms
//     (nodeWatch), when its deadline passed, or in a full pass: the first
//     step of a rollout in this process (a restart resumes from the store).
const (
	kActive        = "activerollouts/" // activerollouts/<seq 12 digits> -> state
	kActiveBuilt   = "activerollouts-built"
	kRolloutNode   = "rolloutnode/"   // rolloutnode/<seq>/<wave 4 digits>/<index 6 digits> -> api.RolloutNode
	kRolloutDetail = "rolloutdetail/" // rolloutdetail/<seq> -> [][]api.RolloutNode
)

// Where a rollout's nodes are (rolloutRec.NodesAt).
const (
	nodesInline = ""       // in the record (records written before the split)
	nodesKeys   = "keys"   // rolloutnode/<seq>/…: active rollouts
	nodesDetail = "detail" // rolloutdetail/<seq>: finished rollouts
)

func seqOf(k string) string { return strings.TrimPrefix(k, kRollouts) }

func nodeKey(seq string, wave, i int) string {
	return fmt.Sprintf("%s%s/%04d/%06d", kRolloutNode, seq, wave, i)
}

// copyRollout copies ro deeply enough that changing the copy's waves,
// nodes and counts leaves ro alone.
func copyRollout(ro *rolloutRec) *rolloutRec {
	c := *ro
	c.Waves = make([]api.Wave, len(ro.Waves))
	for i, w := range ro.Waves {
		w.Nodes = append([]api.RolloutNode(nil), w.Nodes...)
		c.Waves[i] = w
	}
	c.AnalysisRuns = cloneRuns(ro.AnalysisRuns)
	if ro.NodeCounts != nil {
		c.NodeCounts = make(map[string]int, len(ro.NodeCounts))
		for k, v := range ro.NodeCounts {
			c.NodeCounts[k] = v
		}
	}
	return &c
}

// head is ro as its record stores it: without its waves' nodes.
func head(ro *rolloutRec) *rolloutRec {
	c := *ro
	c.Waves = make([]api.Wave, len(ro.Waves))
	for i, w := range ro.Waves {
		w.Nodes = nil
		c.Waves[i] = w
	}
	return &c
}

// rolloutCache holds the newest version of each active rollout this
// process wrote or read, with the revision of its record.
type rolloutCache struct {
	mu sync.Mutex
	m  map[string]cachedRollout
}

type cachedRollout struct {
	rev int64
	ro  *rolloutRec
	at  string // where its nodes are stored
}

func (c *rolloutCache) get(k string, rev int64) (*rolloutRec, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok && e.rev == rev {
		return copyRollout(e.ro), e.at
	}
	return nil, ""
}

func (c *rolloutCache) put(k string, rev int64, ro *rolloutRec, at string) {
	c.keep(k, rev, copyRollout(ro), at)
}

// keep is put of a rollout no one changes afterwards: it is kept as it
// is, not copied (a step's saved rollout, at 10,000 nodes a megabyte).
func (c *rolloutCache) keep(k string, rev int64, ro *rolloutRec, at string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if terminal(ro.State) {
		delete(c.m, k)
		return
	}
	if e, ok := c.m[k]; ok && e.rev > rev {
		return
	}
	c.m[k] = cachedRollout{rev: rev, ro: ro, at: at}
}

// retain forgets the rollouts whose keys are not in keep.
func (c *rolloutCache) retain(keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if !keep[k] {
			delete(c.m, k)
		}
	}
}

// loadRollout reads the rollout at key k into ro, with its nodes.
func (sm *Machine) loadRollout(t *tx, k string, ro *rolloutRec) (bool, error) {
	if l, ok := t.rollouts[k]; ok {
		*ro = *copyRollout(l.ro)
		return true, nil
	}
	e, ok, err := t.GetEntry(k)
	if err != nil || !ok {
		return false, err
	}
	c, at := sm.roCache.get(k, e.Rev)
	if c == nil {
		c = &rolloutRec{}
		if err := json.Unmarshal(e.Value, c); err != nil {
			return true, fmt.Errorf("decode %s: %w", k, err)
		}
		at = c.NodesAt
		if err := sm.readNodes(t.Context(), k, c); err != nil {
			return true, err
		}
		sm.roCache.put(k, e.Rev, c, at)
	}
	*ro = *c
	t.noteRollout(k, ro, at)
	return true, nil
}

// txnRollout is a rollout as a transaction read or wrote it, and where
// its nodes are stored (in the store, or by the transaction's writes).
type txnRollout struct {
	ro *rolloutRec
	at string
}

// getJSON reads key into v outside a transaction and reports whether it
// exists.
func getJSON(ctx context.Context, st store.Store, key string, v any) (bool, error) {
	e, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(e.Value, v)
}

func (t *tx) noteRollout(k string, ro *rolloutRec, at string) {
	if t.rollouts == nil {
		t.rollouts = map[string]txnRollout{}
	}
	t.rollouts[k] = txnRollout{ro: copyRollout(ro), at: at}
}

// readNodes puts the nodes of the rollout record ro (at key k) into its
// waves.
func (sm *Machine) readNodes(ctx context.Context, k string, ro *rolloutRec) error {
	seq := seqOf(k)
	switch ro.NodesAt {
	case nodesInline:
		return nil
	case nodesDetail:
		var nodes [][]api.RolloutNode
		if ok, err := getJSON(ctx, sm.st, kRolloutDetail+seq, &nodes); err != nil || !ok {
			return errors.Join(err, fmt.Errorf("rollout %s: per-node detail missing", ro.ID))
		}
		if len(nodes) != len(ro.Waves) {
			return fmt.Errorf("rollout %s: detail of %d waves for %d", ro.ID, len(nodes), len(ro.Waves))
		}
		for i := range ro.Waves {
			ro.Waves[i].Nodes = nodes[i]
		}
	case nodesKeys:
		es, err := sm.st.List(ctx, kRolloutNode+seq+"/")
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := placeNode(ro, e); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("rollout %s: nodes at %q", ro.ID, ro.NodesAt)
	}
	ro.NodesAt, ro.NodeCounts = nodesInline, nil
	return nil
}

// placeNode puts the node stored in e (rolloutnode/<seq>/<w>/<i>) into ro.
func placeNode(ro *rolloutRec, e store.Entry) error {
	parts := strings.Split(e.Key, "/")
	if len(parts) != 4 {
		return fmt.Errorf("rollout node key %s", e.Key)
	}
	w, err1 := strconv.Atoi(parts[2])
	i, err2 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil || w >= len(ro.Waves) {
		return fmt.Errorf("rollout %s: node key %s", ro.ID, e.Key)
	}
	var n api.RolloutNode
	if err := json.Unmarshal(e.Value, &n); err != nil {
		return fmt.Errorf("decode %s: %w", e.Key, err)
	}
	nodes := ro.Waves[w].Nodes
	for len(nodes) <= i {
		nodes = append(nodes, api.RolloutNode{})
	}
	nodes[i] = n
	ro.Waves[w].Nodes = nodes
	return nil
}

// saveRollout writes ro at key k: an active one as its record, the nodes
// that changed since the transaction read it and its index entry; a
// finished one compacted.
func saveRollout(t *tx, k string, ro *rolloutRec) error {
	seq := seqOf(k)
	if ro.State != api.RolloutWaiting {
		ro.WindowOpensAt = time.Time{} // only while it waits
	}
	l, ok := t.rollouts[k]
	prev, prevAt := l.ro, l.at
	if !ok {
		prevAt = nodesInline
	}
	if terminal(ro.State) {
		return saveFinished(t, k, ro, prev, prevAt)
	}
	if prevAt == nodesDetail {
		t.Del(kRolloutDetail + seq)
	}
	if err := t.Put(kActive+seq, ro.State); err != nil {
		return err
	}
	for wi, w := range ro.Waves {
		for i, n := range w.Nodes {
			if prevAt == nodesKeys && wi < len(prev.Waves) && i < len(prev.Waves[wi].Nodes) && sameNode(prev.Waves[wi].Nodes[i], n) {
				continue
			}
			if err := t.Put(nodeKey(seq, wi, i), n); err != nil {
				return err
			}
		}
	}
	h := head(ro)
	h.NodesAt, h.NodeCounts = nodesKeys, nil
	if err := t.Put(k, h); err != nil {
		return err
	}
	t.noteRollout(k, ro, nodesKeys)
	return nil
}

// saveFinished writes a finished rollout: its record with node counts,
// its nodes as one detail value; no per-node keys, no index entry.
func saveFinished(t *tx, k string, ro, prev *rolloutRec, prevAt string) error {
	seq := seqOf(k)
	t.Del(kActive + seq)
	if prevAt == nodesKeys {
		for wi, w := range prev.Waves {
			for i := range w.Nodes {
				t.Del(nodeKey(seq, wi, i))
			}
		}
	}
	h := head(ro)
	h.NodesAt, h.NodeCounts = nodesDetail, map[string]int{}
	nodes := make([][]api.RolloutNode, len(ro.Waves))
	for i, w := range ro.Waves {
		nodes[i] = w.Nodes
		for _, n := range w.Nodes {
			h.NodeCounts[n.State]++
		}
	}
	if err := t.Put(kRolloutDetail+seq, nodes); err != nil {
		return err
	}
	if err := t.Put(k, h); err != nil {
		return err
	}
	t.noteRollout(k, ro, nodesDetail)
	return nil
}

// readRollout reads one rollout with its nodes, outside a transaction.
// An active rollout comes from memory when no one wrote it since.
func (sm *Machine) readRollout(ctx context.Context, k string) (*rolloutRec, bool, error) {
	e, err := sm.st.Get(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if c, _ := sm.roCache.get(k, e.Rev); c != nil {
		return c, true, nil
	}
	var ro rolloutRec
	if err := json.Unmarshal(e.Value, &ro); err != nil {
		return nil, true, fmt.Errorf("decode %s: %w", k, err)
	}
	return &ro, true, sm.readNodes(ctx, k, &ro)
}

// listRollouts lists rollouts oldest first, with their nodes when full.
func (sm *Machine) listRollouts(ctx context.Context, full bool) ([]rolloutRec, error) {
	es, err := sm.st.List(ctx, kRollouts)
	if err != nil {
		return nil, err
	}
	out := make([]rolloutRec, 0, len(es))
	for _, e := range es {
		var ro rolloutRec
		if err := json.Unmarshal(e.Value, &ro); err != nil {
			return nil, err
		}
		if full {
			if err := sm.readNodes(ctx, e.Key, &ro); err != nil {
				return nil, err
			}
		}
		out = append(out, ro)
	}
	return out, nil
}

// activeRollouts lists the IDs of the rollouts the engine steps (running,
// paused, awaiting promotion, waiting for a window), oldest first.
func (sm *Machine) activeRollouts(ctx context.Context) ([]string, error) {
	if err := sm.indexRollouts(ctx); err != nil {
		return nil, err
	}
	es, err := sm.st.List(ctx, kActive)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range es {
		var state string
		if err := json.Unmarshal(e.Value, &state); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Key, err)
		}
		switch state {
		case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting, api.RolloutWaiting:
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(e.Key, kActive), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("index key %s: %w", e.Key, err)
		}
		ids = append(ids, fmt.Sprintf("ro%d", n))
	}
	return ids, nil
}

// rolloutIndex remembers that this process checked the index exists.
type rolloutIndex struct {
	mu    sync.Mutex
	built bool
}

// indexRollouts builds the index of active rollouts once, for a store
// written before it existed.
func (sm *Machine) indexRollouts(ctx context.Context) error {
	sm.ros.mu.Lock()
	defer sm.ros.mu.Unlock()
	if sm.ros.built {
		return nil
	}
	if _, err := sm.st.Get(ctx, kActiveBuilt); err == nil {
		sm.ros.built = true
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	ros, err := sm.listRollouts(ctx, false)
	if err != nil {
		return err
	}
	err = sm.update(ctx, func(t *tx) error {
		for _, ro := range ros {
			if !terminal(ro.State) {
				k, err := rolloutKey(ro.ID)
				if err != nil {
					return err
				}
				if err := t.Put(kActive+seqOf(k), ro.State); err != nil {
					return err
				}
			}
		}
		return t.Put(kActiveBuilt, true)
	})
	if err != nil {
		return fmt.Errorf("index active rollouts: %w", err)
	}
	sm.ros.built = true
	return nil
}

// nodeWatch collects, per rollout the engine steps, the nodes whose state
// changed since its last step: the registry feeds it (OnNodesChanged:
// mark, reset).
type nodeWatch struct {
	mu   sync.Mutex
	sets map[string]map[string]struct{} // rollout ID -> node names
}

func newNodeWatch() *nodeWatch { return &nodeWatch{sets: map[string]map[string]struct{}{}} }

// mark notes that names changed (after the write committed).
func (w *nodeWatch) mark(names []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sets {
		for _, n := range names {
			s[n] = struct{}{}
		}
	}
}

// take returns the nodes of rollout id that changed since the last take,
// or full=true when the rollout is not watched yet (it is from now on).
func (w *nodeWatch) take(id string) (changed map[string]struct{}, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.sets[id]
	w.sets[id] = map[string]struct{}{}
	return s, !ok
}

// putBack undoes a take whose step did not commit.
func (w *nodeWatch) putBack(id string, changed map[string]struct{}, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if full {
		delete(w.sets, id)
		return
	}
	s, ok := w.sets[id]
	if !ok {
		return
	}
	for n := range changed {
		s[n] = struct{}{}
	}
}

// retain stops watching rollouts not in ids.
func (w *nodeWatch) retain(ids []string) {
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.sets {
		if !keep[id] {
			delete(w.sets, id)
		}
	}
}

// reset makes the next take of every rollout a full pass.
func (w *nodeWatch) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.sets)
}

// rolloutHead encodes ro without its waves' nodes.
func rolloutHead(ro *rolloutRec) []byte {
	c := *ro
	c.Waves = make([]api.Wave, len(ro.Waves))
	for i, w := range ro.Waves {
		w.Nodes = nil
		c.Waves[i] = w
	}
	b, _ := json.Marshal(c)
	return b
}

// sameRollout reports whether ro is still prev (nil: it is not).
func sameRollout(prev, ro *rolloutRec) bool {
	if prev == nil || len(prev.Waves) != len(ro.Waves) || string(rolloutHead(prev)) != string(rolloutHead(ro)) {
		return false
	}
	for i, w := range ro.Waves {
		if len(w.Nodes) != len(prev.Waves[i].Nodes) {
			return false
		}
		for j := range w.Nodes {
			if !sameNode(w.Nodes[j], prev.Waves[i].Nodes[j]) {
				return false
			}
		}
	}
	return true
}

func sameNode(a, b api.RolloutNode) bool {
	return a.Name == b.Name && a.State == b.State && a.Previous == b.Previous && a.Reason == b.Reason && a.PublishedAt.Equal(b.PublishedAt)
}
