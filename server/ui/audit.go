package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/slipway-dev/slipway/shared/api"
)

// auditShown is how many events the audit page lists at once.
const auditShown = 200

type auditData struct {
	Actor, Action, Target string
	Events                []api.Event
	Older                 string // link to the next older page
	Kept                  int
}

// auditPage lists the newest audit events, filtered by actor, action
// (prefix) and target (substring), newest first, older pages by seq.
func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request, v *view) {
	q := r.URL.Query()
	d := auditData{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Kept: tailSize}
	v.Title, v.Data = "Audit log", &d
	before, err := strconv.ParseInt(q.Get("before"), 10, 64)
	if q.Get("before") != "" && (err != nil || before < 0) {
		v.Error = "before: want a sequence number ≥ 0"
		h.render(w, r, http.StatusBadRequest, "audit", v)
		return
	}
	if err := h.sh.tail.update(r.Context(), h.reg); err != nil {
		h.fail(w, r, v, err)
		return
	}
	d.Events, _ = h.sh.tail.newest(auditShown, before, func(ev api.Event) bool {
		return (d.Actor == "" || ev.Actor == d.Actor) && strings.HasPrefix(ev.Action, d.Action) && strings.Contains(ev.Target, d.Target)
	})
	if len(d.Events) == auditShown {
		last := d.Events[len(d.Events)-1].Seq
		d.Older = "?" + url.Values{"actor": {d.Actor}, "action": {d.Action}, "target": {d.Target}, "before": {strconv.FormatInt(last, 10)}}.Encode()
	}
	h.render(w, r, http.StatusOK, "audit", v)
}

// events is the page's live stream: the audit log's event stream from
// ?since=, for the caller of the page.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, v *view) {
	h.auth.StreamEvents(w, r, v.Caller.Actor)
}
