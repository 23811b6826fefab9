package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Every generation published to a node leaves keys of that node behind:
// nodegens/<node>/<id> (it may confirm and report it), confirmed/<node>/<id>
// (it confirmed it: a rollback target) and nodeblobs/<node>/<sha> (it may
// download the generation's blobs). Without a bound they grow by a few keys
// per node and release forever. PruneHistory keeps, per node, the
// HistoryKeep generations published to it last and every generation it
// still refers to, and deletes the rest.

// HistoryKeep is how many of the generations published to a node last keep
// their per-node records. It is above the 32 an agent lists in a report
// (a report may name only generations published to the node) and above
// any sensible `keep` of the agent's own garbage collection.
const HistoryKeep = 64

// historyPage is how many nodegens/ keys PruneHistory reads at a time.
const historyPage = 4096

// PruneHistory bounds every node's per-generation records (see above) and
// returns how many generations it pruned. Nodes are pruned one transaction
// each; a node whose records change meanwhile is retried, never pruned from
// a stale view.
func (r *Registry) PruneHistory(ctx context.Context) (int, error) {
	pruned := 0
	var node string
	var count int
	flush := func() error {
		if count <= HistoryKeep {
			return nil
		}
		n, err := r.pruneNodeHistory(ctx, node)
		pruned += n
		return err
	}
	from := kNodeGens
	for {
		es, err := r.st.ListPage(ctx, kNodeGens, store.Page{From: from, Limit: historyPage, KeysOnly: true})
		if err != nil {
			return pruned, fmt.Errorf("prune history: %w", err)
		}
		for _, e := range es {
			name, _, _ := strings.Cut(strings.TrimPrefix(e.Key, kNodeGens), "/")
			if name != node {
				if err := flush(); err != nil {
					return pruned, err
				}
				node, count = name, 0
			}
			count++
		}
		if len(es) < historyPage {
			return pruned, flush()
		}
		from = es[len(es)-1].Key + "\x00"
	}
}

// pruneNodeHistory prunes one node's records in one transaction.
func (r *Registry) pruneNodeHistory(ctx context.Context, node string) (int, error) {
	pruned := 0
	err := r.update(ctx, func(t *txn) error {
		pruned = 0
		gens, err := t.st.List(t.ctx, kNodeGens+node+"/")
		if err != nil {
			return err
		}
		keep, err := nodeRefs(t, node)
		if err != nil {
			return err
		}
		// Newest publish first: a republish (a rollback) puts the key again.
		slices.SortFunc(gens, func(a, b store.Entry) int { return cmp.Compare(b.Rev, a.Rev) })
		for i, e := range gens {
			id := strings.TrimPrefix(e.Key, kNodeGens+node+"/")
			if i < HistoryKeep || keep[id] {
				keep[id] = true
				continue
			}
			t.delAt(e.Key, e.Rev)
			if err := t.delIfExists(kConfirmed + node + "/" + id); err != nil {
				return err
			}
			pruned++
		}
		if pruned == 0 {
			return nil
		}
		return pruneNodeBlobs(t, node, keep)
	})
	return pruned, err
}

// nodeRefs is the set of generations node still refers to: its desired
// generation and the one before it, what it confirmed last, and every
// generation its last report names.
func nodeRefs(t *txn, node string) (map[string]bool, error) {
	refs := map[string]bool{}
	var n nodeRec
	if _, err := t.get(kNodes+node, &n); err != nil {
		return nil, err
	}
	refs[n.Confirmed] = true
	if rep := n.Report; rep != nil {
		refs[rep.CurrentID], refs[rep.Target] = true, true
		for _, g := range rep.Generations {
			refs[g.ID] = true
		}
	}
	var d desiredRec
	if _, err := t.get(kDesired+node, &d); err != nil {
		return nil, err
	}
	for p := &d; p != nil; p = p.Before {
		refs[p.ID] = true
	}
	delete(refs, "")
	return refs, nil
}

// pruneNodeBlobs deletes node's blob grants that no generation in keep
// needs.
func pruneNodeBlobs(t *txn, node string, keep map[string]bool) error {
	need := map[string]bool{}
	for id := range keep {
		e, err := t.st.Get(t.ctx, kManifests+id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		m, err := generation.Parse(e.Value)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", id, err)
		}
		for _, a := range m.Artifacts {
			need[a.SHA256] = true
		}
	}
	blobs, err := t.st.List(t.ctx, kNodeBlobs+node+"/")
	if err != nil {
		return err
	}
	for _, e := range blobs {
		if !need[strings.TrimPrefix(e.Key, kNodeBlobs+node+"/")] {
			if err := t.delIfExists(e.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

// RunHistoryPrune runs PruneHistory every interval (10 minutes when 0)
// until ctx ends. Errors are logged: the next round tries again.
func (r *Registry) RunHistoryPrune(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Minute
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if n, err := r.PruneHistory(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("history: pruning per-node generation records failed")
		} else if n > 0 {
			r.log.Debug().Int("generations", n).Msg("history: pruned per-node generation records")
		}
	}
}
