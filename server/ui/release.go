package ui

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/gendiff"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/humanize"
)

// diffGroup is what the release changed on a set of nodes that ran the
// same generation before it (shared/gendiff, the lines `slipway diff`
// prints).
type diffGroup struct {
	From  string // the manifest the nodes ran before; "" = nothing
	Nodes []string
	Lines []string
	Note  string // no change, or why there is no diff
}

// namesShown is how many node names a diff group lists before "and N more".
const namesShown = 20

// Shown is the group's first node names, and More how many follow.
func (g diffGroup) Shown() []string { return g.Nodes[:min(len(g.Nodes), namesShown)] }

// More is how many node names Shown leaves out.
func (g diffGroup) More() int { return max(len(g.Nodes)-namesShown, 0) }

type releaseData struct {
	Release  api.Release
	Rollout  *api.Rollout
	Strategy api.Strategy
	Diffs    []diffGroup
}

// releasePage shows a release: its target, strategy and, per node, what
// it changed from the generation the node ran before (a rollout node's
// Previous; a node of a release without a rollout compares with nothing).
func (h *Handler) releasePage(w http.ResponseWriter, r *http.Request, v *view) {
	rel, err := h.reg.Release(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	d := releaseData{Release: rel, Strategy: api.Strategy{Kind: api.StrategyAllAtOnce}}
	v.Title, v.Nav, v.Data = "Release "+rel.ID, "rollouts", &d
	from := map[string]string{} // node → previous manifest
	if rel.Rollout != "" {
		ro, err := h.ros.Rollout(r.Context(), rel.Rollout)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		d.Rollout, d.Strategy = &ro, ro.Strategy
		for _, wv := range ro.Waves {
			for _, n := range wv.Nodes {
				from[n.Name] = n.Previous
			}
		}
	}
	if d.Diffs, err = h.diffs(r, rel, from); err != nil {
		h.fail(w, r, v, err)
		return
	}
	h.render(w, r, http.StatusOK, "release", v)
}

// diffs groups the release's nodes by the manifest they ran before and
// compares each group's with the release's, reading each manifest once.
func (h *Handler) diffs(r *http.Request, rel api.Release, from map[string]string) ([]diffGroup, error) {
	to, err := h.manifest(r, rel.Manifest)
	if err != nil {
		return nil, fmt.Errorf("release manifest: %w", err)
	}
	var out []diffGroup
	index := map[string]int{}
	for _, node := range rel.Nodes {
		prev := from[node]
		i, ok := index[prev]
		if !ok {
			i = len(out)
			index[prev] = i
			out = append(out, h.diffGroup(r, prev, to, rel.Manifest))
		}
		out[i].Nodes = append(out[i].Nodes, node)
	}
	return out, nil
}

func (h *Handler) diffGroup(r *http.Request, prev string, to *generation.Manifest, toID string) diffGroup {
	g := diffGroup{From: prev}
	var old *generation.Manifest
	switch {
	case prev == toID:
		g.Note = "no change: the nodes ran this generation already"
		return g
	case prev != "":
		m, err := h.manifest(r, prev)
		if err != nil {
			g.Note = "cannot compare: " + err.Error()
			return g
		}
		old = m
	}
	d := gendiff.Compare(old, to)
	if g.Lines = d.Lines(); len(g.Lines) == 0 {
		g.Note = "no change"
	}
	return g
}

func (h *Handler) manifest(r *http.Request, id string) (*generation.Manifest, error) {
	raw, err := h.reg.Manifest(r.Context(), id)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("the server no longer has manifest %s", humanize.ShortID(id))
	}
	if err != nil {
		return nil, err
	}
	return generation.Parse(raw)
}
