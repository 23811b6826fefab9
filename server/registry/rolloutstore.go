package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// How rollouts are kept so that the engine's cost follows what changed:
//
//   - activerollouts/<seq> names every rollout that is not finished, with
//     its state: Tick lists it, not rollouts/, so finished rollouts cost
//     nothing per tick.
//   - A finished rollout's record (rollouts/<seq>) keeps its waves without
//     their nodes and the count of nodes per state; the per-node detail
//     (state, reason, publish time, previous generation: what `rollout
//     show` prints and a rollback needs) moves to rolloutnodes/<seq>, read
//     only when that rollout is shown, listed in full, retried or rolled
//     back. A retry that resumes a failed rollout puts the detail back.
//   - The engine observes a node of an active rollout again only when a
//     committed write touched its record, desired generation or confirms
//     (nodeWatch), when its deadline passed, or in a full pass: the first
//     step of a rollout in this process (a restart resumes from the store).
const (
	kActive       = "activerollouts/" // activerollouts/<seq 12 digits> -> state
	kActiveBuilt  = "activerollouts-built"
	kRolloutNodes = "rolloutnodes/" // rolloutnodes/<seq 12 digits> -> [][]api.RolloutNode
)

func seqOf(k string) string { return strings.TrimPrefix(k, kRollouts) }

// loadRollout reads the rollout at key k into ro, with its nodes.
func loadRollout(t *txn, k string, ro *rolloutRec) (bool, error) {
	ok, err := t.get(k, ro)
	if err != nil || !ok || !ro.Compacted {
		return ok, err
	}
	var nodes [][]api.RolloutNode
	if ok, err := t.get(kRolloutNodes+seqOf(k), &nodes); err != nil {
		return true, err
	} else if !ok {
		return true, fmt.Errorf("rollout %s: per-node detail missing", ro.ID)
	}
	return true, expand(ro, nodes)
}

func expand(ro *rolloutRec, nodes [][]api.RolloutNode) error {
	if len(nodes) != len(ro.Waves) {
		return fmt.Errorf("rollout %s: detail of %d waves for %d", ro.ID, len(nodes), len(ro.Waves))
	}
	for i := range ro.Waves {
		ro.Waves[i].Nodes = nodes[i]
	}
	ro.Compacted, ro.NodeCounts = false, nil
	return nil
}

// saveRollout writes ro at key k: a finished rollout compacted, an active
// one in full and in the index of active rollouts.
func saveRollout(t *txn, k string, ro *rolloutRec) error {
	seq := seqOf(k)
	if !terminal(ro.State) {
		t.del(kRolloutNodes + seq)
		if err := t.put(kActive+seq, ro.State); err != nil {
			return err
		}
		return t.put(k, ro)
	}
	t.del(kActive + seq)
	c := *ro
	c.Waves = make([]api.Wave, len(ro.Waves))
	nodes := make([][]api.RolloutNode, len(ro.Waves))
	c.NodeCounts = map[string]int{}
	for i, w := range ro.Waves {
		nodes[i] = w.Nodes
		w.Nodes = nil
		c.Waves[i] = w
		for _, n := range nodes[i] {
			c.NodeCounts[n.State]++
		}
	}
	c.Compacted = true
	if err := t.put(kRolloutNodes+seq, nodes); err != nil {
		return err
	}
	return t.put(k, c)
}

// listRollouts lists rollouts oldest first, with their nodes when full.
func (r *Registry) listRollouts(ctx context.Context, full bool) ([]rolloutRec, error) {
	es, err := r.st.List(ctx, kRollouts)
	if err != nil {
		return nil, err
	}
	var details map[string][]byte
	out := make([]rolloutRec, 0, len(es))
	for _, e := range es {
		var ro rolloutRec
		if err := json.Unmarshal(e.Value, &ro); err != nil {
			return nil, err
		}
		if full && ro.Compacted {
			if details == nil {
				if details, err = r.rolloutDetails(ctx); err != nil {
					return nil, err
				}
			}
			var nodes [][]api.RolloutNode
			if err := json.Unmarshal(details[seqOf(e.Key)], &nodes); err != nil {
				return nil, fmt.Errorf("rollout %s: per-node detail: %w", ro.ID, err)
			}
			if err := expand(&ro, nodes); err != nil {
				return nil, err
			}
		}
		out = append(out, ro)
	}
	return out, nil
}

func (r *Registry) rolloutDetails(ctx context.Context) (map[string][]byte, error) {
	es, err := r.st.List(ctx, kRolloutNodes)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]byte, len(es))
	for _, e := range es {
		m[strings.TrimPrefix(e.Key, kRolloutNodes)] = e.Value
	}
	return m, nil
}

// activeRollouts lists the IDs of the rollouts the engine steps (running,
// paused, awaiting promotion), oldest first.
func (r *Registry) activeRollouts(ctx context.Context) ([]string, error) {
	if err := r.indexRollouts(ctx); err != nil {
		return nil, err
	}
	es, err := r.st.List(ctx, kActive)
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
		case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting:
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
func (r *Registry) indexRollouts(ctx context.Context) error {
	r.ros.mu.Lock()
	defer r.ros.mu.Unlock()
	if r.ros.built {
		return nil
	}
	if _, err := r.st.Get(ctx, kActiveBuilt); err == nil {
		r.ros.built = true
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	ros, err := r.listRollouts(ctx, false)
	if err != nil {
		return err
	}
	err = r.update(ctx, func(t *txn) error {
		for _, ro := range ros {
			if !terminal(ro.State) {
				k, err := rolloutKey(ro.ID)
				if err != nil {
					return err
				}
				if err := t.put(kActive+seqOf(k), ro.State); err != nil {
					return err
				}
			}
		}
		return t.put(kActiveBuilt, true)
	})
	if err != nil {
		return fmt.Errorf("index active rollouts: %w", err)
	}
	r.ros.built = true
	return nil
}

// nodeWatch collects, per rollout the engine steps, the nodes whose state
// changed since its last step.
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

// rolloutSnap is what sameRollout compares: the record without its nodes
// (as JSON) and a copy of every wave's nodes.
type rolloutSnap struct {
	head  []byte
	nodes [][]api.RolloutNode
}

func snapshotRollout(ro *rolloutRec) rolloutSnap {
	var s rolloutSnap
	s.nodes = make([][]api.RolloutNode, len(ro.Waves))
	for i, w := range ro.Waves {
		s.nodes[i] = append([]api.RolloutNode(nil), w.Nodes...)
	}
	s.head = rolloutHead(ro)
	return s
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

// sameRollout reports whether ro is still what s saw.
func sameRollout(s rolloutSnap, ro *rolloutRec) bool {
	if len(s.nodes) != len(ro.Waves) || string(s.head) != string(rolloutHead(ro)) {
		return false
	}
	for i, w := range ro.Waves {
		if len(w.Nodes) != len(s.nodes[i]) {
			return false
		}
		for j := range w.Nodes {
			if !sameNode(w.Nodes[j], s.nodes[i][j]) {
				return false
			}
		}
	}
	return true
}

func sameNode(a, b api.RolloutNode) bool {
	return a.Name == b.Name && a.State == b.State && a.Previous == b.Previous && a.Reason == b.Reason && a.PublishedAt.Equal(b.PublishedAt)
}
