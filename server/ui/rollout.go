package ui

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// actions are what the rollout page offers a deployer, each confirmed on a
// page of its own before it is sent; the registry decides whether the
// rollout's state allows it (a refusal is shown).
var actions = []action{
	{"pause", "Pause", "Nodes already switching finish; no new wave starts until it is resumed."},
	{"resume", "Resume", "The rollout continues from where it stopped."},
	{"resume-now", "Start next wave now", "The next wave starts at once, outside the maintenance windows: that wave only; later waves wait for their windows (audited)."},
	{"promote", "Promote", "The canaries passed: the rollout continues past them to the remaining waves."},
	{"abort", "Abort", "The rollout stops; nodes that have not confirmed the release go back to their previous desired generation."},
	{"rollback", "Roll back", "Every node of the rollout is sent back to the generation it ran before, and the group is pinned."},
	{"retry", "Retry", "The failed nodes of the current wave try the release again, and a halted rollout resumes."},
}

type action struct {
	Name, Label, Effect string
}

func findAction(name string) (action, bool) {
	i := slices.IndexFunc(actions, func(a action) bool { return a.Name == name })
	if i < 0 {
		return action{}, false
	}
	return actions[i], true
}

type rolloutsData struct {
	Rollouts []rolloutRow
}

type rolloutRow struct {
	api.Rollout
	Nodes int
}

// rolloutsPage lists rollouts, newest first.
func (h *Handler) rolloutsPage(w http.ResponseWriter, r *http.Request, v *view) {
	ros, err := h.ros.Rollouts(r.Context())
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	d := rolloutsData{}
	for i := len(ros) - 1; i >= 0; i-- {
		n := 0
		for _, wv := range ros[i].Waves {
			n += len(wv.Nodes)
		}
		d.Rollouts = append(d.Rollouts, rolloutRow{Rollout: ros[i], Nodes: n})
	}
	slices.SortStableFunc(d.Rollouts, func(a, b rolloutRow) int { return b.CreatedAt.Compare(a.CreatedAt) })
	v.Title, v.Data = "Rollouts", &d
	h.render(w, r, http.StatusOK, "rollouts", v)
}

// waveRow is one wave with its nodes counted by state.
type waveRow struct {
	api.Wave
	Index                               int
	Current                             bool
	Planned, Switching, Healthy, Failed int
	Other                               int // pending, down, skipped, reverted, aborted
	Took                                string
}

type nodeRow struct {
	Wave string
	api.RolloutNode
}

type rolloutData struct {
	Rollout api.Rollout
	Waves   []waveRow
	Nodes   []nodeRow
	Pager   tablePage
	Actions []action
	Done    string // the action just done
	Events  []api.Event
}

// rolloutPage shows a rollout: strategy and timers, its waves counted, its
// nodes a page at a time, and the actions the caller may take.
func (h *Handler) rolloutPage(w http.ResponseWriter, r *http.Request, v *view) {
	ro, err := h.ros.Rollout(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	d := rolloutData{Rollout: ro, Done: r.URL.Query().Get("done")}
	if v.CanAct {
		d.Actions = actions
	}
	var all []nodeRow
	for i, wv := range ro.Waves {
		d.Waves = append(d.Waves, countWave(i, wv, i == ro.Wave))
		for _, n := range wv.Nodes {
			all = append(all, nodeRow{Wave: wv.Name, RolloutNode: n})
		}
	}
	lo, hi, p := paginate(len(all), pageSize, pageParam(r), func(page int) string { return "?page=" + strconv.Itoa(page) })
	d.Nodes, d.Pager = all[lo:hi], p
	_ = h.sh.tail.update(r.Context(), h.reg)
	d.Events, _ = h.sh.tail.newest(eventsShown, 0, func(ev api.Event) bool { return ev.Target == ro.ID })
	v.Title, v.Nav, v.Data = "Rollout "+ro.ID, "rollouts", &d
	h.render(w, r, http.StatusOK, "rollout", v)
}

func countWave(i int, wv api.Wave, current bool) waveRow {
	row := waveRow{Wave: wv, Index: i, Current: current, Planned: len(wv.Nodes)}
	for _, n := range wv.Nodes {
		switch n.State {
		case api.RolloutNodeSwitching:
			row.Switching++
		case api.RolloutNodeHealthy:
			row.Healthy++
		case api.RolloutNodeFailed:
			row.Failed++
		default:
			row.Other++
		}
	}
	switch {
	case wv.StartedAt.IsZero():
	case wv.FinishedAt.IsZero():
		row.Took = time.Since(wv.StartedAt).Round(time.Second).String() + " so far"
	default:
		row.Took = wv.FinishedAt.Sub(wv.StartedAt).Round(time.Second).String()
	}
	return row
}

type confirmData struct {
	Rollout api.Rollout
	Action  action
	Node    string
}

// confirmPage asks a deployer to confirm an action before it is sent.
func (h *Handler) confirmPage(w http.ResponseWriter, r *http.Request, v *view) {
	a, ok := findAction(r.PathValue("action"))
	if !ok {
		h.errorPage(w, r, v, http.StatusNotFound, "no rollout action "+strconv.Quote(r.PathValue("action")))
		return
	}
	if !v.CanAct {
		h.refuse(w, r, http.StatusForbidden, v.Caller.Actor, "role "+v.Caller.Role+" may not "+a.Name+" a rollout (needs deployer)")
		return
	}
	ro, err := h.ros.Rollout(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	v.Title, v.Nav, v.Data = a.Label+" "+ro.ID+"?", "rollouts", &confirmData{Rollout: ro, Action: a, Node: r.URL.Query().Get("node")}
	h.render(w, r, http.StatusOK, "confirm", v)
}

// rolloutAction sends a confirmed action through the registry, as the
// admin API's routes for it do, and shows the rollout again.
func (h *Handler) rolloutAction(w http.ResponseWriter, r *http.Request, v *view) {
	id, name := r.PathValue("id"), r.PathValue("action")
	if _, ok := findAction(name); !ok {
		h.errorPage(w, r, v, http.StatusNotFound, "no rollout action "+strconv.Quote(name))
		return
	}
	node := strings.TrimSpace(r.PostFormValue("node"))
	if node != "" && !registry.ValidNodeName(node) {
		h.errorPage(w, r, v, http.StatusBadRequest, "node "+strconv.Quote(node)+": not a node name")
		return
	}
	var ro api.Rollout
	var err error
	switch name {
	case "rollback":
		ro, err = h.ros.RolloutRollback(r.Context(), v.Caller.Actor, id)
	case "retry":
		ro, err = h.ros.RolloutRetry(r.Context(), v.Caller.Actor, id, node)
	case "resume-now":
		ro, err = h.ros.RolloutResumeNow(r.Context(), v.Caller.Actor, id)
	default:
		ro, err = h.ros.RolloutAction(r.Context(), v.Caller.Actor, id, name)
	}
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	http.Redirect(w, r, "/ui/rollouts/"+url.PathEscape(ro.ID)+"?done="+name, http.StatusSeeOther)
}
