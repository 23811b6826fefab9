package ui

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/selector"
)

// pageSize is how many rows a node table shows per page.
const pageSize = 100

// nodeStates are the node states in the order the fleet page counts them.
var nodeStates = []string{api.NodeConverged, api.NodeSwitching, api.NodePending, api.NodeFailed, api.NodeDrift, api.NodeOffline, api.NodeNew}

// livenesses are the gossip liveness values, "" (unknown) last.
var livenesses = []string{api.LivenessAlive, api.LivenessSuspect, api.LivenessFailed, api.LivenessLeft, ""}

type count struct {
	Name  string
	N     int
	Query string // the fleet page filtered to it ("" for liveness)
}

type fleetData struct {
	Total     int
	States    []count
	Liveness  []count
	Selector  string
	State     string
	AllStates []string
	Matched   int
	Rows      []api.Node
	Pager     tablePage
}

// tablePage is a table's position: page numbers from 1 and the links around.
type tablePage struct {
	Page, Pages int
	First, Last int // row numbers shown, from 1
	Prev, Next  string
}

// paginate cuts n rows into pages of size and returns the bounds of page
// (from 1, clamped) with links built by link.
func paginate(n, size, page int, link func(page int) string) (lo, hi int, p tablePage) {
	p.Pages = max((n+size-1)/size, 1)
	p.Page = min(max(page, 1), p.Pages)
	lo, hi = (p.Page-1)*size, min(p.Page*size, n)
	p.First, p.Last = lo+1, hi
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	return lo, hi, p
}

func pageParam(r *http.Request) int {
	n, _ := strconv.Atoi(r.URL.Query().Get("page"))
	return n
}

// fleetPage shows the fleet's counts and its nodes, filtered by a label
// selector and a state on the server, a page at a time.
func (h *Handler) fleetPage(w http.ResponseWriter, r *http.Request, v *view) {
	q := r.URL.Query()
	d := fleetData{Selector: q.Get("selector"), State: q.Get("state"), AllStates: nodeStates}
	v.Title, v.Data = "Fleet", &d
	sel, err := selector.Parse(d.Selector)
	if err != nil {
		v.Error = "selector: " + err.Error()
		h.render(w, r, http.StatusBadRequest, "fleet", v)
		return
	}
	nodes, err := h.reg.Nodes(r.Context())
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	d.Total = len(nodes)
	byState, byLive := map[string]int{}, map[string]int{}
	var rows []api.Node
	for _, n := range nodes {
		byState[n.State]++
		byLive[n.Liveness]++
		if sel.Matches(n.Labels) && (d.State == "" || n.State == d.State) {
			rows = append(rows, n)
		}
	}
	for _, s := range nodeStates {
		d.States = append(d.States, count{Name: s, N: byState[s], Query: "?" + url.Values{"state": {s}, "selector": {d.Selector}}.Encode()})
	}
	for _, l := range livenesses {
		if byLive[l] > 0 || l != "" {
			d.Liveness = append(d.Liveness, count{Name: orUnknown(l), N: byLive[l]})
		}
	}
	d.Matched = len(rows)
	lo, hi, p := paginate(len(rows), pageSize, pageParam(r), func(page int) string {
		return "?" + url.Values{"selector": {d.Selector}, "state": {d.State}, "page": {strconv.Itoa(page)}}.Encode()
	})
	d.Rows, d.Pager = rows[lo:hi], p
	h.render(w, r, http.StatusOK, "fleet", v)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
