package ui

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// TestTailnetCallers: over the tailnet listener the caller's identity and
// [tailscale.roles] apply, with no login.
func TestTailnetCallers(t *testing.T) {
	f := newFixture(t)
	ro := f.release(2)
	authz, err := mesh.NewAuthorizer("tag:slipway-agent", map[string]string{"alice@example.com": api.RoleDeployer, "bob@example.com": api.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	var who atomic.Value
	ma := &httpapi.MeshAuth{Authz: authz, Whois: func(context.Context, string) (mesh.Identity, error) {
		return who.Load().(mesh.Identity), nil
	}}
	srv := httptest.NewUnstartedServer(f.handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return httpapi.WithMesh(context.Background(), ma) }
	srv.Start()
	defer srv.Close()
	f.srv, srv = srv, f.srv
	defer func() { f.srv = srv }()
	c := f.client()

	who.Store(mesh.Identity{NodeName: "laptop", User: "alice@example.com"})
	st, _, page := f.do(c, "GET", "/ui/rollouts/"+ro.ID, nil)
	if st != http.StatusOK || !strings.Contains(page, "tailnet:alice@example.com") || !strings.Contains(page, `id="action-pause"`) || strings.Contains(page, `id="logout"`) {
		t.Fatalf("deployer over the tailnet: %d, want the page with actions and no logout\n%s", st, page)
	}
	if st, h, _ := f.do(c, "GET", "/ui/login", nil); st != http.StatusSeeOther || h.Get("Location") != "/ui/fleet" {
		t.Errorf("login form over the tailnet: %d %q, want 303 to the fleet", st, h.Get("Location"))
	}
	if st, _, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/pause", url.Values{}); st != http.StatusForbidden {
		t.Errorf("pause without CSRF over the tailnet: %d, want 403", st)
	}
	_, _, confirm := f.do(c, "GET", "/ui/rollouts/"+ro.ID+"/confirm/pause", nil)
	if st, _, body := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/pause", url.Values{"csrf": {csrfOf(confirm)}}); st != http.StatusSeeOther {
		t.Errorf("pause over the tailnet: %d, want 303\n%s", st, body)
	}
	if evs := f.events("rollout.pause"); len(evs) != 1 || evs[0].Actor != "tailnet:alice@example.com" {
		t.Errorf("pause audit: %+v", evs)
	}

	who.Store(mesh.Identity{NodeName: "phone", User: "bob@example.com"})
	_, _, page = f.do(c, "GET", "/ui/rollouts/"+ro.ID, nil)
	if strings.Contains(page, `id="action-`) {
		t.Errorf("viewer over the tailnet sees actions")
	}
	if st, _, _ := f.do(c, "POST", "/ui/rollouts/"+ro.ID+"/resume", url.Values{"csrf": {csrfOf(confirm)}}); st != http.StatusForbidden {
		t.Errorf("viewer's resume over the tailnet: %d, want 403", st)
	}

	who.Store(mesh.Identity{NodeName: "stranger", User: "eve@example.com"})
	if st, _, _ := f.do(c, "GET", "/ui/fleet", nil); st != http.StatusForbidden {
		t.Errorf("tailnet identity without a role: %d, want 403", st)
	}
	denied := f.events("auth.denied")
	actors := map[string]bool{}
	for _, ev := range denied {
		actors[ev.Actor] = true
	}
	if !actors["tailnet:bob@example.com"] || !actors["tailnet:eve@example.com"] {
		t.Errorf("refusals over the tailnet not audited: %+v", denied)
	}
}
