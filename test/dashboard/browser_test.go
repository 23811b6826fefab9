package dashboard

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// TestDashboardInBrowser drives the dashboard in headless chromium against
// a real slipway-server with six simulated agents: a wrong token is
// refused; an admin logs in and sees the fleet; a canary rollout started
// through the API shows its canary wave pass without a reload; promote
// (confirmed) finishes it, live, and is in the audit log; a viewer finds
// no action buttons and its forged POSTs are refused (403, audited).
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium(t)
	ctx := context.Background()
	st := startStack(t, ctx, 6)
	s := &session{t: t, ctx: ctx, st: st, b: browser(t, exe), base: st.srv.URL + "/ui/"}
	s.wrongToken()
	s.adminSeesFleet()
	rel := canaryRelease(t, ctx, st)
	s.canaryPassesLive(rel)
	s.promoteConfirmed()
	s.otherViews(rel)
	s.viewerCannotAct(rel)
	assertDenied(t, ctx, st, "token:watcher")
}

// session is one browser on the dashboard, and the stack behind it.
type session struct {
	t    *testing.T
	ctx  context.Context
	st   *stack
	b    context.Context
	base string // http://127.0.0.1:port/ui/
}

func (s *session) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	run(s.t, s.b, what, 30*time.Second, steps...)
}

// text is the innerText of the element with id.
func (s *session) text(id string) string {
	s.t.Helper()
	return eval[string](s.t, s.b, `document.getElementById("`+id+`").innerText`)
}

func (s *session) wrongToken() {
	t := s.t
	s.run("open the dashboard", chromedp.Navigate(s.base), chromedp.WaitVisible(chromedp.ID("token")))
	screenshot(t, s.b, "login")
	login(t, s.b, "wrong-token-0123456789abcdef")
	s.run("wrong token refused", chromedp.WaitVisible(chromedp.ID("error")))
	if msg := s.text("error"); !strings.Contains(msg, "unknown admin token") {
		t.Fatalf("wrong token: %q", msg)
	}
	if loc := eval[string](t, s.b, `location.pathname`); loc != "/ui/login" {
		t.Fatalf("after a wrong token the page is %s, want the login form", loc)
	}
}

func (s *session) adminSeesFleet() {
	t := s.t
	login(t, s.b, s.st.srv.Token())
	s.run("fleet after login", chromedp.WaitVisible(chromedp.CSS(`tr[data-node="web-00006"]`)))
	if got := s.text("fleet-counts"); !strings.Contains(got, "6 nodes") || !strings.Contains(got, "6 new") {
		t.Fatalf("fleet counts: %q, want 6 nodes, 6 new", got)
	}
	// The stylesheet applies under the page's Content-Security-Policy.
	if bg := eval[string](t, s.b, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(251, 251, 250)" {
		t.Errorf("body background %s: the stylesheet did not apply", bg)
	}
}

// canaryPassesLive watches the rollout page, loaded once, show the canary
// wave pass: the page is refreshed by events, never reloaded.
func (s *session) canaryPassesLive(rel api.Release) {
	t := s.t
	s.run("rollouts list", chromedp.Navigate(s.base+"rollouts"), chromedp.WaitVisible(chromedp.CSS(`tr[data-rollout="`+rel.Rollout+`"]`)))
	screenshot(t, s.b, "rollouts")
	s.run("rollout page", chromedp.Navigate(s.base+"rollouts/"+rel.Rollout), chromedp.WaitVisible(chromedp.ID("rollout-waves")))
	eval[int](t, s.b, `window.slipwayNoReload = 1`)
	waitFor(t, s.b, "the canary wave passes, live", `document.querySelector('tr[data-wave="0"]').dataset.waveState === "passed" && document.getElementById("rollout-state").innerText === "awaiting-promotion"`, 60*time.Second)
	if eval[int](t, s.b, `window.slipwayNoReload || 0`) != 1 || eval[string](t, s.b, `document.body.dataset.refreshes || ""`) == "" {
		t.Fatal("the rollout page reloaded, or was not refreshed by events")
	}
	screenshot(t, s.b, "rollout-canary")
}

// promoteConfirmed presses promote, confirms, and watches the remaining
// waves pass without a reload; then the fleet is converged.
func (s *session) promoteConfirmed() {
	t := s.t
	s.run("promote asks for confirmation", chromedp.Click(chromedp.ID("action-promote")), chromedp.WaitVisible(chromedp.ID("confirm")))
	screenshot(t, s.b, "confirm-promote")
	s.run("promote", chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("done")))
	eval[int](t, s.b, `window.slipwayNoReload = 2`)
	waitFor(t, s.b, "the remaining waves pass, live", `document.getElementById("rollout-state").innerText === "succeeded"`, 90*time.Second)
	if eval[int](t, s.b, `window.slipwayNoReload || 0`) != 2 {
		t.Fatal("the rollout page reloaded while its waves ran")
	}
	screenshot(t, s.b, "rollout")
	s.run("fleet after the rollout", chromedp.Navigate(s.base+"fleet"), chromedp.WaitVisible(chromedp.ID("fleet-nodes")))
	waitFor(t, s.b, "every node converged", `document.getElementById("fleet-counts").innerText.includes("6 converged")`, 30*time.Second)
	screenshot(t, s.b, "fleet")
	s.run("dark", colorScheme("dark"))
	screenshot(t, s.b, "fleet-dark")
	s.run("light", colorScheme("light"))
}

// otherViews checks the release (and an update's diff), node and audit
// pages; the audit log has the promote.
func (s *session) otherViews(rel api.Release) {
	t := s.t
	s.run("release page", chromedp.Navigate(s.base+"releases/"+rel.ID), chromedp.WaitVisible(chromedp.ID("release-diff")))
	if got := s.text("release-diff"); !strings.Contains(got, "+ unit fleet-app.service") {
		t.Fatalf("release diff: %q", got)
	}
	update := deploy(t, s.ctx, s.st, "v2", &api.Strategy{Kind: api.StrategyAllAtOnce})
	waitRollout(t, s.ctx, s.st, update.Rollout, api.RolloutSucceeded)
	s.run("the update's release page", chromedp.Navigate(s.base+"releases/"+update.ID), chromedp.WaitVisible(chromedp.ID("release-diff")))
	if got := s.text("release-diff"); !strings.Contains(got, "~ unit fleet-app.service: text") || !strings.Contains(got, "web-00006") {
		t.Fatalf("the update's diff: %q", got)
	}
	screenshot(t, s.b, "release")
	s.run("node page", chromedp.Navigate(s.base+"nodes/web-00001"), chromedp.WaitVisible(chromedp.ID("node-generations")))
	waitFor(t, s.b, "the node's generation and units", `document.getElementById("node-generations").innerText.includes("fleet-app.service")`, 30*time.Second)
	screenshot(t, s.b, "node")
	s.run("audit log", chromedp.Navigate(s.base+"audit?action=rollout."), chromedp.WaitVisible(chromedp.ID("audit-events")))
	if got := s.text("audit-events"); !strings.Contains(got, "rollout.promote") || !strings.Contains(got, "token:fleetsim") {
		t.Fatalf("audit log without the promote:\n%s", got)
	}
	screenshot(t, s.b, "audit")
}

// viewerCannotAct logs out, logs in as a viewer, finds no action on the
// rollout page, and has its POSTs refused: with its own CSRF token and
// with a forged one.
func (s *session) viewerCannotAct(rel api.Release) {
	t := s.t
	s.run("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	login(t, s.b, s.st.viewer)
	s.run("viewer's rollout page", chromedp.WaitVisible(chromedp.ID("fleet-nodes")),
		chromedp.Navigate(s.base+"rollouts/"+rel.Rollout), chromedp.WaitVisible(chromedp.ID("rollout-waves")))
	if n := eval[int](t, s.b, `document.querySelectorAll('[id^="action-"], .actions').length`); n != 0 {
		t.Fatalf("the viewer sees %d action elements", n)
	}
	screenshot(t, s.b, "rollout-viewer")
	forged := func(csrf string) int {
		return eval[int](t, s.b, fmt.Sprintf(`fetch("/ui/rollouts/%s/rollback", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "csrf=%s"}).then(r => r.status)`, rel.Rollout, csrf))
	}
	own := eval[string](t, s.b, `document.querySelector('input[name="csrf"]').value`)
	if got, none := forged(own), forged("forged"); got != 403 || none != 403 {
		t.Fatalf("viewer's POSTs: %d with its CSRF token, %d with a forged one; want 403, 403", got, none)
	}
}

// login submits the login form with tok.
func login(t *testing.T, b context.Context, tok string) {
	t.Helper()
	run(t, b, "log in", 15*time.Second, chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tok), chromedp.Click(chromedp.ID("login")))
}

// canaryRelease deploys a release to the fleet through the API: one canary,
// then waves of two, manual promote.
func canaryRelease(t *testing.T, ctx context.Context, st *stack) api.Release {
	t.Helper()
	return deploy(t, ctx, st, "v1", &api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2})
}

// deploy creates a release of version to role=web through the API.
func deploy(t *testing.T, ctx context.Context, st *stack, version string, s *api.Strategy) api.Release {
	t.Helper()
	m := &generation.Manifest{Name: "web", Units: map[string]string{
		"fleet-app.service": "[Unit]\nDescription=dashboard test " + version + "\n\n[Service]\nExecStart=/bin/sleep infinity\n",
	}}
	raw, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := st.srv.Admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: raw, Strategy: s})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// waitRollout waits up to a minute for rollout id to reach state.
func waitRollout(t *testing.T, ctx context.Context, st *stack, id, state string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ro, err := st.srv.Admin.Rollout(ctx, id)
		if err == nil && ro.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s: %s %s (%v), want %s", id, ro.State, ro.Reason, err, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertDenied checks that the audit log has a refusal by actor.
func assertDenied(t *testing.T, ctx context.Context, st *stack, actor string) {
	t.Helper()
	evs, err := st.srv.Admin.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Action == "auth.denied" && ev.Actor == actor {
			return
		}
	}
	t.Errorf("no auth.denied event by %s in the audit log", actor)
}
