package ui

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

const (
	adminTok  = "admin-token-0123456789"
	viewerTok = "viewer-token-0123456789"
)

var tokens = []httpapi.AdminToken{
	{Name: "ops", Role: api.RoleAdmin, SHA256: httpapi.HashToken(adminTok)},
	{Name: "dash", Role: api.RoleViewer, SHA256: httpapi.HashToken(viewerTok)},
}

type fixture struct {
	t   *testing.T
	reg *registry.Registry
	ros *rollout.Machine
	sh  *Shared
	api *httpapi.Server
	srv *httptest.Server
	// over, when true, makes every address over its refusal budget.
	over bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, registry.Config{}, rollout.Config{})
}

// newFixtureWith is newFixture over a registry configured with cfg and a
// rollout machine configured with rcfg.
func newFixtureWith(t *testing.T, cfg registry.Config, rcfg rollout.Config) *fixture {
	t.Helper()
	reg, _ := registrytest.Open(t, cfg)
	f := &fixture{t: t, reg: reg, ros: rollout.New(reg, rcfg, zerolog.Nop())}
	var err error
	if f.sh, err = NewShared(time.Hour); err != nil {
		t.Fatal(err)
	}
	f.serve(tokens)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// serve (re)builds the API and dashboard with toks, as a reload does.
func (f *fixture) serve(toks []httpapi.AdminToken) {
	f.api = httpapi.New(f.reg, f.ros, nil, toks, api.Spec, zerolog.Nop())
	f.api.LimitRefusals(func(*http.Request) (time.Duration, bool) { return 3 * time.Second, f.over })
	f.api.Mount(Prefix, New(f.reg, f.ros, f.api, f.sh, zerolog.Nop()))
	if f.srv == nil {
		f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.handler().ServeHTTP(w, r) }))
	}
}

func (f *fixture) handler() http.Handler { return f.api }

// client is a browser: a cookie jar, and no redirects followed.
func (f *fixture) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (f *fixture) do(c *http.Client, method, path string, form url.Values) (int, http.Header, string) {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(page string) string {
	if m := csrfRe.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return ""
}

// login logs c in with tok and returns the status of the login POST.
func (f *fixture) login(c *http.Client, tok string) (int, http.Header, string) {
	f.t.Helper()
	_, _, form := f.do(c, "GET", "/ui/login", nil)
	return f.do(c, "POST", "/ui/login", url.Values{"csrf": {csrfOf(form)}, "token": {tok}, "next": {"/ui/rollouts"}})
}

func (f *fixture) events(action string) []api.Event {
	f.t.Helper()
	evs, err := f.reg.Events(context.Background(), 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []api.Event
	for _, ev := range evs {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

func TestLogin(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	st, h, _ := f.do(c, "GET", "/ui/fleet", nil)
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/login?next=%2Fui%2Ffleet" {
		t.Fatalf("fleet without a session: %d to %q, want 303 to the login form", st, h.Get("Location"))
	}
	if got := h.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") || strings.Contains(got, "unsafe-inline") {
		t.Errorf("CSP %q", got)
	}
	st, _, body := f.login(c, "wrong-token-0123456789")
	if st != http.StatusUnauthorized || !strings.Contains(body, "unknown admin token") {
		t.Fatalf("wrong token: %d, want 401 with the form again", st)
	}
	if evs := f.events("auth.denied"); len(evs) != 1 || !strings.Contains(evs[0].Detail, "dashboard login: unknown admin token") {
		t.Errorf("refusal audit: %+v", evs)
	}
	st, h, _ = f.login(c, adminTok)
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/rollouts" {
		t.Fatalf("login: %d to %q, want 303 to next", st, h.Get("Location"))
	}
	ck := h.Values("Set-Cookie")[0]
	for _, want := range []string{"slipway_session=", "HttpOnly", "SameSite=Strict", "Path=/ui/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q without %s", ck, want)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Errorf("session cookie %q is Secure on a plain listener", ck)
	}
	st, _, body = f.do(c, "GET", "/ui/fleet", nil)
	if st != http.StatusOK || !strings.Contains(body, "token:ops") || !strings.Contains(body, `data-events="/ui/events?since=`) {
		t.Fatalf("fleet after login: %d\n%s", st, body)
	}
	if evs := f.events("ui.login"); len(evs) != 1 || evs[0].Actor != "token:ops" {
		t.Errorf("login audit: %+v", evs)
	}
	// Logout needs the CSRF token; then the session is gone.
	if st, _, _ := f.do(c, "POST", "/ui/logout", url.Values{}); st != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d, want 403", st)
	}
	if st, _, _ := f.do(c, "POST", "/ui/logout", url.Values{"csrf": {csrfOf(body)}}); st != http.StatusSeeOther {
		t.Errorf("logout: %d, want 303", st)
	}
	if st, _, _ := f.do(c, "GET", "/ui/fleet", nil); st != http.StatusSeeOther {
		t.Errorf("fleet after logout: %d, want 303 to the login form", st)
	}
}

func TestLoginRefusals(t *testing.T) {
	tests := []struct {
		name   string
		form   func(csrf string) url.Values
		over   bool
		status int
	}{
		{"no csrf", func(string) url.Values { return url.Values{"token": {adminTok}} }, false, http.StatusForbidden},
		{"wrong csrf", func(string) url.Values { return url.Values{"csrf": {"x"}, "token": {adminTok}} }, false, http.StatusForbidden},
		{"empty token", func(c string) url.Values { return url.Values{"csrf": {c}} }, false, http.StatusUnauthorized},
		{"over the refusal budget", func(c string) url.Values { return url.Values{"csrf": {c}, "token": {"nope-nope-nope-nope"}} }, true, http.StatusTooManyRequests},
		{"the right token over the budget", func(c string) url.Values { return url.Values{"csrf": {c}, "token": {adminTok}} }, true, http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.over = tt.over
			c := f.client()
			_, _, form := f.do(c, "GET", "/ui/login", nil)
			st, h, _ := f.do(c, "POST", "/ui/login", tt.form(csrfOf(form)))
			if st != tt.status {
				t.Fatalf("status %d, want %d", st, tt.status)
			}
			if tt.status == http.StatusTooManyRequests && h.Get("Retry-After") != "3" {
				t.Errorf("Retry-After %q, want 3", h.Get("Retry-After"))
			}
			if got := strings.Contains(strings.Join(h.Values("Set-Cookie"), " "), "slipway_session="); got != (tt.status == http.StatusSeeOther) {
				t.Errorf("session set %v, cookies %q", got, h.Values("Set-Cookie"))
			}
		})
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	f := newFixture(t)
	req := httptest.NewRequest("GET", "/ui/login", nil)
	req.TLS = &tls.ConnectionState{}
	w := httptest.NewRecorder()
	f.handler().ServeHTTP(w, req)
	if ck := w.Header().Get("Set-Cookie"); !strings.Contains(ck, "; Secure") {
		t.Errorf("login cookie over TLS %q, want Secure", ck)
	}
}

// release enrols nodes web-1..n and deploys a canary release to them.
func (f *fixture) release(n int) api.Rollout {
	f.t.Helper()
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		jt, err := f.reg.CreateJoinToken(ctx, "token:ops", time.Hour, "")
		if err != nil {
			f.t.Fatal(err)
		}
		name := "web-" + string(rune('0'+i))
		if _, err := f.reg.Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: map[string]string{"role": "web", "n": name}}); err != nil {
			f.t.Fatal(err)
		}
	}
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/true\n"}}
	raw, err := m.Canonical()
	if err != nil {
		f.t.Fatal(err)
	}
	rel, err := f.ros.CreateRelease(ctx, "token:ops", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: raw,
		Strategy: &api.Strategy{Kind: api.StrategyCanary, Canary: 1}})
	if err != nil {
		f.t.Fatal(err)
	}
	ro, err := f.ros.Rollout(ctx, rel.Rollout)
	if err != nil {
		f.t.Fatal(err)
	}
	return ro
}

func TestViewerSeesNoActions(t *testing.T) {
	f := newFixture(t)
	ro := f.release(3)
	admin, viewer := f.client(), f.client()
	f.login(admin, adminTok)
	f.login(viewer, viewerTok)
	_, _, page := f.do(admin, "GET", "/ui/rollouts/"+ro.ID, nil)
	if !strings.Contains(page, `id="action-promote"`) || !strings.Contains(page, "canary") {
		t.Fatalf("admin's rollout page without the promote action:\n%s", page)
	}
	_, _, page = f.do(viewer, "GET", "/ui/rollouts/"+ro.ID, nil)
	if strings.Contains(page, `id="action-`) || !strings.Contains(page, ro.ID) {
		t.Fatalf("viewer's rollout page has actions:\n%s", page)
	}
	if st, _, _ := f.do(viewer, "GET", "/ui/rollouts/"+ro.ID+"/confirm/promote", nil); st != http.StatusForbidden {
		t.Errorf("viewer's confirm page: %d, want 403", st)
	}
	// The viewer's own CSRF token, and a forged request without one.
	for _, form := range []url.Values{{"csrf": {csrfOf(page)}}, {}} {
		if st, _, _ := f.do(viewer, "POST", "/ui/rollouts/"+ro.ID+"/promote", form); st != http.StatusForbidden {
			t.Errorf("viewer's promote (csrf %q): %d, want 403", form.Get("csrf"), st)
		}
	}
	denied := f.events("auth.denied")
	if len(denied) < 2 || denied[0].Actor != "token:dash" {
		t.Errorf("viewer's refusals not audited: %+v", denied)
	}
	if got, _ := f.ros.Rollout(context.Background(), ro.ID); got.UpdatedAt != ro.UpdatedAt && got.State != ro.State {
		t.Errorf("the viewer changed the rollout: %s", got.State)
	}
}

func TestAdminActsWithConfirmation(t *testing.T) {
	f := newFixture(t)
	ro := f.release(2)
	c := f.client()
	f.login(c, adminTok)
	st, _, confirm := f.do(c, "GET", "/ui/rollouts/"+ro.ID+"/confirm/pause", nil)
	if st != http.StatusOK || !strings.Contains(confirm, `action="/ui/rollouts/`+ro.ID+`/pause"`) {
		t.Fatalf("confirm page: %d\n%s", st, confirm)
	}
	// Without the CSRF token nothing happens.
	if st, _, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/pause", url.Values{"csrf": {"forged"}}); st != http.StatusForbidden {
		t.Fatalf("forged pause: %d, want 403", st)
	}
	st, h, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/pause", url.Values{"csrf": {csrfOf(confirm)}})
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/rollouts/"+ro.ID+"?done=pause" {
		t.Fatalf("pause: %d to %q", st, h.Get("Location"))
	}
	got, err := f.ros.Rollout(context.Background(), ro.ID)
	if err != nil || got.State != api.RolloutPaused {
		t.Fatalf("rollout after pause: %s %v, want paused", got.State, err)
	}
	if evs := f.events("rollout.pause"); len(evs) != 1 || evs[0].Actor != "token:ops" {
		t.Errorf("pause audit: %+v", evs)
	}
	// An action the rollout's state refuses is shown as the registry says.
	if st, _, body := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/pause", url.Values{"csrf": {csrfOf(confirm)}}); st != http.StatusConflict {
		t.Errorf("second pause: %d, want 409\n%s", st, body)
	}
	if st, _, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/retry", url.Values{"csrf": {csrfOf(confirm)}, "node": {"no such/node"}}); st != http.StatusBadRequest {
		t.Errorf("retry of a bad node name: %d, want 400", st)
	}
	if st, _, page := f.do(c, "GET", "/ui/rollouts/"+ro.ID+"/confirm/retry?node=web-2", nil); st != http.StatusOK || !strings.Contains(page, `name="node" value="web-2"`) {
		t.Errorf("retry confirm page for one node: %d\n%s", st, page)
	}
	if st, _, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/explode", url.Values{"csrf": {csrfOf(confirm)}}); st != http.StatusNotFound {
		t.Errorf("unknown action: %d, want 404", st)
	}
	// Start the next wave now (outside any maintenance window): resumes
	// the paused rollout with the override, audited.
	if st, h, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/resume-now", url.Values{"csrf": {csrfOf(confirm)}}); st != http.StatusSeeOther || h.Get("Location") != "/ui/rollouts/"+ro.ID+"?done=resume-now" {
		t.Fatalf("resume-now: %d to %q", st, h.Get("Location"))
	}
	if got, err := f.ros.Rollout(context.Background(), ro.ID); err != nil || got.State != api.RolloutRunning || got.WindowOverride != 2 {
		t.Fatalf("rollout after resume-now: %s override %d, %v", got.State, got.WindowOverride, err)
	}
	if evs := f.events("rollout.resume"); len(evs) != 1 || evs[0].Actor != "token:ops" || !strings.HasPrefix(evs[0].Detail, "now: wave 2") {
		t.Errorf("resume-now audit: %+v", evs)
	}
}

func TestPages(t *testing.T) {
	f := newFixture(t)
	ro := f.release(3)
	c := f.client()
	f.login(c, adminTok)
	tests := []struct {
		path   string
		status int
		want   []string
	}{
		{"/ui/fleet", 200, []string{"3 of 3 nodes match", `data-node="web-1"`, `data-node="web-3"`}},
		{"/ui/fleet?selector=n%3Dweb-2", 200, []string{"1 of 3 nodes match", `data-node="web-2"`}},
		{"/ui/fleet?state=converged", 200, []string{"0 of 3 nodes match"}},
		{"/ui/fleet?selector=%3D%3D", 400, []string{"selector:"}},
		{"/ui/nodes/web-1", 200, []string{"web-1", "role=web", "node.enroll"}},
		{"/ui/nodes/nope", 404, []string{"nope"}},
		{"/ui/rollouts", 200, []string{ro.ID, "canary"}},
		{"/ui/rollouts/" + ro.ID, 200, []string{"Waves", "analysis window none (manual promote)", `data-wave="0"`, "<td>rollout.create</td>"}},
		{"/ui/releases/" + ro.Release, 200, []string{"role=web", "nothing deployed before", `<span class="added">&#43; unit web.service</span>`}},
		{"/ui/audit?action=release.", 200, []string{"release.create"}},
		{"/ui/audit?before=x", 400, []string{"before:"}},
		{"/ui/nowhere", 404, nil},
	}
	for _, tt := range tests {
		st, _, body := f.do(c, "GET", tt.path, nil)
		if st != tt.status {
			t.Errorf("%s: %d, want %d", tt.path, st, tt.status)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: no %q in the page\n%s", tt.path, w, body)
			}
		}
	}
	if _, _, body := f.do(c, "GET", "/ui/audit?action=release.", nil); strings.Contains(body, "node.enroll") {
		t.Errorf("audit filter by action let node.enroll through")
	}
}

func TestReloadRevokesSessions(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	f.login(c, viewerTok)
	if st, _, _ := f.do(c, "GET", "/ui/fleet", nil); st != http.StatusOK {
		t.Fatalf("fleet: %d", st)
	}
	f.serve(tokens[:1]) // a reload without the viewer's token
	if st, _, _ := f.do(c, "GET", "/ui/fleet", nil); st != http.StatusSeeOther {
		t.Errorf("fleet after the token was removed: %d, want 303 to the login form", st)
	}
}

func TestSessionsExpire(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSessions(time.Minute, func() time.Time { return now })
	id, exp := s.Create("sum")
	if _, ok := s.Get(id); !ok || !exp.Equal(now.Add(time.Minute)) {
		t.Fatalf("fresh session: %v, expires %s", ok, exp)
	}
	if _, ok := s.Get(id + "x"); ok {
		t.Error("a wrong id found a session")
	}
	now = now.Add(time.Minute)
	if _, ok := s.Get(id); ok {
		t.Error("an expired session is still valid")
	}
	id2, _ := s.Create("sum")
	s.Revoke(id2)
	if _, ok := s.Get(id2); ok {
		t.Error("a revoked session is still valid")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/rollouts/ro1": "/ui/rollouts/ro1", "": "/ui/fleet", "https://evil.example/": "/ui/fleet",
		"//evil.example/ui/": "/ui/fleet", "/ui/\\evil": "/ui/fleet", "/v1/nodes": "/ui/fleet",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStatic(t *testing.T) {
	f := newFixture(t)
	for path, typ := range map[string]string{"/ui/static/app.js": "javascript", "/ui/static/style.css": "text/css"} {
		st, h, body := f.do(f.client(), "GET", path, nil)
		if st != 200 || !strings.Contains(h.Get("Content-Type"), typ) || len(body) < 100 {
			t.Errorf("%s: %d %q %d bytes", path, st, h.Get("Content-Type"), len(body))
		}
	}
}

// TestNodePage: a node's generations (with their release and when the
// node confirmed them) and units come from its report and the audit log.
func TestNodePage(t *testing.T) {
	f := newFixture(t)
	ro := f.release(2)
	ctx := context.Background()
	canary := ro.Waves[0].Nodes[0].Name
	rep := api.Report{State: api.AgentIdle, Current: 1, CurrentID: ro.Manifest, LastGood: 1, Outcome: "switched", Time: time.Now(),
		Generations: []api.GenerationReport{{Number: 1, ID: ro.Manifest, Status: "good"}},
		Units:       []api.UnitReport{{Name: "web.service", Active: "active", Sub: "running"}}}
	if err := f.reg.Report(ctx, canary, rep); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.reg.Confirm(ctx, canary, api.ConfirmRequest{ID: ro.Manifest, Number: 1}); err != nil || !ok {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	c := f.client()
	f.login(c, viewerTok)
	st, _, page := f.do(c, "GET", "/ui/nodes/"+canary, nil)
	if st != http.StatusOK {
		t.Fatalf("node page: %d", st)
	}
	for _, want := range []string{`<td><span class="badge gen-good">good</span></td><td></td><td>node.confirm 20`, `href="/ui/releases/` + ro.Release + `"`, `<td>web.service</td><td><span class="badge unit-active">active</span></td><td>running</td>`} {
		if !strings.Contains(page, want) {
			t.Errorf("node page without %q:\n%s", want, page)
		}
	}
}

func TestDiffGroupNames(t *testing.T) {
	for _, tt := range []struct{ n, shown, more int }{{0, 0, 0}, {3, 3, 0}, {20, 20, 0}, {25, 20, 5}} {
		g := diffGroup{Nodes: make([]string, tt.n)}
		if len(g.Shown()) != tt.shown || g.More() != tt.more {
			t.Errorf("%d nodes: %d shown, %d more; want %d, %d", tt.n, len(g.Shown()), g.More(), tt.shown, tt.more)
		}
	}
}

// TestLoginFormsInTwoTabs: showing the login form again (another tab, or
// a page's refresh sent to it) does not invalidate a form already shown.
func TestLoginFormsInTwoTabs(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	_, _, first := f.do(c, "GET", "/ui/login", nil)
	_, _, second := f.do(c, "GET", "/ui/login?next=%2Fui%2Faudit", nil)
	if csrfOf(first) == "" || csrfOf(first) != csrfOf(second) {
		t.Fatalf("login forms' CSRF tokens %q and %q, want one", csrfOf(first), csrfOf(second))
	}
	if st, _, _ := f.do(c, "POST", "/ui/login", url.Values{"csrf": {csrfOf(first)}, "token": {adminTok}}); st != http.StatusSeeOther {
		t.Errorf("login with the first form: %d, want 303", st)
	}
}
