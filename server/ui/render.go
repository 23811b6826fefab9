package ui

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/humanize"
)

// pageNames are the templates under templates/ besides layout.html.
var pageNames = []string{"login", "error", "fleet", "node", "rollouts", "rollout", "confirm", "release", "audit"}

var funcs = template.FuncMap{
	"ago":      ago,
	"when":     when,
	"short":    humanize.ShortID,
	"labels":   humanize.Labels,
	"why":      why,
	"diffKind": diffKind,
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("ui templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(files, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes page with v, after the audit tail is brought up to date
// (v.Since is where the page's live updates start).
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, page string, v *view) {
	if v.Caller.Actor != "" {
		if err := h.sh.tail.update(r.Context(), h.reg); err != nil {
			h.log.Warn().Err(err).Msg("reading the audit log")
		}
		_, v.Since = h.sh.tail.newest(0, 0, nil)
	}
	if v.Nav == "" {
		v.Nav = page
	}
	var b bytes.Buffer
	if err := h.sh.pages[page].ExecuteTemplate(&b, "layout.html", v); err != nil {
		h.log.Error().Err(err).Str("page", page).Msg("render")
		http.Error(w, "internal error rendering the page; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// errorPage answers status with msg; v is the caller's view, if known.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, v *view, status int, msg string) {
	if v == nil {
		v = &view{}
	}
	v.Title, v.Error = http.StatusText(status), msg
	v.Data = status
	h.render(w, r, status, "error", v)
}

// fail answers a registry error.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v *view, err error) {
	st := status(err)
	msg := err.Error()
	if st == http.StatusInternalServerError {
		h.log.Error().Err(err).Str("path", r.URL.Path).Msg("internal error")
		msg = "internal error; see the server log"
	}
	h.errorPage(w, r, v, st, msg)
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// ago is how long ago t was.
func ago(t time.Time) string { return humanize.Ago(time.Now(), t) }

// why says in words why a node is in its state.
func why(n api.Node) string {
	switch n.State {
	case api.NodeOffline:
		return "not seen since " + ago(n.LastSeen)
	case api.NodeFailed:
		return "reverted its desired generation"
	case api.NodeDrift:
		return "runs another generation than its desired one, and no switch is running"
	case api.NodePending:
		return "has not switched to its desired generation yet"
	case api.NodeSwitching:
		return "switching"
	case api.NodeNew:
		return "nothing deployed yet"
	case api.NodeConverged:
		return "runs its desired generation"
	}
	return ""
}

// diffKind is the CSS class of a diff line: added, changed or removed.
func diffKind(line string) string {
	switch {
	case strings.HasPrefix(line, "+"):
		return "added"
	case strings.HasPrefix(line, "-"):
		return "removed"
	}
	return "changed"
}
