package ui

import (
	"net/http"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// eventsShown is how many events a node or rollout page lists.
const eventsShown = 50

type generationRow struct {
	api.GenerationReport
	Release string // the release that published it, if this server did
	// When is the newest audit event of the node naming the generation's
	// manifest (node.confirm, node.switched, node.failed), if the
	// dashboard still holds it (the newest tailSize events).
	When   time.Time
	WhenAs string // that event's action
}

type nodeData struct {
	Node        api.Node
	Generations []generationRow
	Events      []api.Event
}

// nodePage shows one node: its generations, the units of its last report
// and its events.
func (h *Handler) nodePage(w http.ResponseWriter, r *http.Request, v *view) {
	n, err := h.reg.Node(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	d := nodeData{Node: n}
	v.Title, v.Nav, v.Data = "Node "+n.Name, "fleet", &d
	if n.Report != nil && len(n.Report.Generations) > 0 {
		rels, err := h.reg.Releases(r.Context())
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		byManifest := map[string]string{}
		for _, rel := range rels {
			byManifest[rel.Manifest] = rel.ID // newer releases of the same manifest win
		}
		for i := len(n.Report.Generations) - 1; i >= 0; i-- {
			g := n.Report.Generations[i]
			d.Generations = append(d.Generations, generationRow{GenerationReport: g, Release: byManifest[g.ID]})
		}
	}
	_ = h.sh.tail.update(r.Context(), h.reg)
	d.Events, _ = h.sh.tail.newest(eventsShown, 0, func(ev api.Event) bool { return ev.Target == n.Name })
	for i := range d.Generations {
		g := &d.Generations[i]
		evs, _ := h.sh.tail.newest(1, 0, func(ev api.Event) bool {
			return ev.Target == n.Name && ev.Actor == "node:"+n.Name && strings.Contains(ev.Detail, g.ID)
		})
		if len(evs) == 1 {
			g.When, g.WhenAs = evs[0].Time, evs[0].Action
		}
	}
	h.render(w, r, http.StatusOK, "node", v)
}
