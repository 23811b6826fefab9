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
	b := browser(t, exe)
	base := st.srv.URL + "/ui/"

	run(t, b, "open the dashboard", 30*time.Second, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("token")))
	screenshot(t, b, "login")
	login(t, b, "wrong-token-0123456789abcdef")
	run(t, b, "wrong token refused", 10*time.Second, chromedp.WaitVisible(chromedp.ID("error")))
	if msg := eval[string](t, b, `document.getElementById("error").innerText`); !strings.Contains(msg, "unknown admin token") {
		t.Fatalf("wrong token: %q", msg)
	}
	if loc := eval[string](t, b, `location.pathname`); loc != "/ui/login" {
		t.Fatalf("after a wrong token the page is %s, want the login form", loc)
	}

	login(t, b, st.srv.Token())
	run(t, b, "fleet after login", 15*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="web-00006"]`)))
	if got := eval[string](t, b, `document.getElementById("fleet-counts").innerText`); !strings.Contains(got, "6 nodes") || !strings.Contains(got, "6 new") {
		t.Fatalf("fleet counts: %q, want 6 nodes, 6 new", got)
	}
	// The stylesheet applies under the page's Content-Security-Policy.
	if bg := eval[string](t, b, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(251, 251, 250)" {
		t.Errorf("body background %s: the stylesheet did not apply", bg)
	}

	rel := canaryRelease(t, ctx, st)
	run(t, b, "rollouts list", 15*time.Second, chromedp.Navigate(base+"rollouts"), chromedp.WaitVisible(chromedp.CSS(`tr[data-rollout="`+rel.Rollout+`"]`)))
	screenshot(t, b, "rollouts")
	run(t, b, "rollout page", 15*time.Second, chromedp.Navigate(base+"rollouts/"+rel.Rollout), chromedp.WaitVisible(chromedp.ID("rollout-waves")))
	eval[int](t, b, `window.slipwayNoReload = 1`)
	waitFor(t, b, "the canary wave passes, live", `document.querySelector('tr[data-wave="0"]').dataset.waveState === "passed" && document.getElementById("rollout-state").innerText === "awaiting-promotion"`, 60*time.Second)
	if eval[int](t, b, `window.slipwayNoReload || 0`) != 1 || eval[string](t, b, `document.body.dataset.refreshes || ""`) == "" {
		t.Fatal("the rollout page reloaded, or was not refreshed by events")
	}
	screenshot(t, b, "rollout-canary")

	run(t, b, "promote asks for confirmation", 15*time.Second, chromedp.Click(chromedp.ID("action-promote")), chromedp.WaitVisible(chromedp.ID("confirm")))
	screenshot(t, b, "confirm-promote")
	run(t, b, "promote", 15*time.Second, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("done")))
	eval[int](t, b, `window.slipwayNoReload = 2`)
	waitFor(t, b, "the remaining waves pass, live", `document.getElementById("rollout-state").innerText === "succeeded"`, 90*time.Second)
	if eval[int](t, b, `window.slipwayNoReload || 0`) != 2 {
		t.Fatal("the rollout page reloaded while its waves ran")
	}
	screenshot(t, b, "rollout")
	run(t, b, "fleet after the rollout", 15*time.Second, chromedp.Navigate(base+"fleet"), chromedp.WaitVisible(chromedp.ID("fleet-nodes")))
	waitFor(t, b, "every node converged", `document.getElementById("fleet-counts").innerText.includes("6 converged")`, 30*time.Second)
	screenshot(t, b, "fleet")
	run(t, b, "dark", 10*time.Second, colorScheme("dark"))
	screenshot(t, b, "fleet-dark")
	run(t, b, "light", 10*time.Second, colorScheme("light"))

	run(t, b, "release page", 15*time.Second, chromedp.Navigate(base+"releases/"+rel.ID), chromedp.WaitVisible(chromedp.ID("release-diff")))
	if got := eval[string](t, b, `document.getElementById("release-diff").innerText`); !strings.Contains(got, "+ unit fleet-app.service") {
		t.Fatalf("release diff: %q", got)
	}
	update := deploy(t, ctx, st, "v2", &api.Strategy{Kind: api.StrategyAllAtOnce})
	waitRollout(t, ctx, st, update.Rollout, api.RolloutSucceeded)
	run(t, b, "the update's release page", 15*time.Second, chromedp.Navigate(base+"releases/"+update.ID), chromedp.WaitVisible(chromedp.ID("release-diff")))
	if got := eval[string](t, b, `document.getElementById("release-diff").innerText`); !strings.Contains(got, "~ unit fleet-app.service: text") || !strings.Contains(got, "web-00006") {
		t.Fatalf("the update's diff: %q", got)
	}
	screenshot(t, b, "release")
	run(t, b, "node page", 15*time.Second, chromedp.Navigate(base+"nodes/web-00001"), chromedp.WaitVisible(chromedp.ID("node-generations")))
	waitFor(t, b, "the node's generation and units", `document.getElementById("node-generations").innerText.includes("fleet-app.service")`, 30*time.Second)
	screenshot(t, b, "node")
	run(t, b, "audit log", 15*time.Second, chromedp.Navigate(base+"audit?action=rollout."), chromedp.WaitVisible(chromedp.ID("audit-events")))
	if got := eval[string](t, b, `document.getElementById("audit-events").innerText`); !strings.Contains(got, "rollout.promote") || !strings.Contains(got, "token:fleetsim") {
		t.Fatalf("audit log without the promote:\n%s", got)
	}
	screenshot(t, b, "audit")

	run(t, b, "log out", 15*time.Second, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	login(t, b, st.viewer)
	run(t, b, "viewer's rollout page", 15*time.Second, chromedp.WaitVisible(chromedp.ID("fleet-nodes")),
		chromedp.Navigate(base+"rollouts/"+rel.Rollout), chromedp.WaitVisible(chromedp.ID("rollout-waves")))
	if n := eval[int](t, b, `document.querySelectorAll('[id^="action-"], .actions').length`); n != 0 {
		t.Fatalf("the viewer sees %d action elements", n)
	}
	screenshot(t, b, "rollout-viewer")
	forged := func(csrf string) int {
		return eval[int](t, b, fmt.Sprintf(`fetch("/ui/rollouts/%s/rollback", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "csrf=%s"}).then(r => r.status)`, rel.Rollout, csrf))
	}
	own := eval[string](t, b, `document.querySelector('input[name="csrf"]').value`)
	if got, none := forged(own), forged("forged"); got != 403 || none != 403 {
		t.Fatalf("viewer's POSTs: %d with its CSRF token, %d with a forged one; want 403, 403", got, none)
	}
	assertDenied(t, ctx, st, "token:watcher")
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
