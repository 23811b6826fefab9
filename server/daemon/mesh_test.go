package daemon

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
)

// TestServeOnTailnet runs the server with [tailscale] on a loopback tailnet:
// agents on tagged nodes reach their own routes by MagicDNS name without a
// node token, not another node's; an untagged node is refused; admin bearer
// tokens work over the tailnet; refusals are audited. No t.Parallel.
func TestServeOnTailnet(t *testing.T) {
	if testing.Short() {
		t.Skip("tailnet test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	controlURL := meshtest.Control(t)

	c := config.Default()
	c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", "", t.TempDir()
	c.AdminTokens = []config.AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: httpapi.HashToken(adminToken)}}
	c.Tailscale.Enabled, c.Tailscale.ControlURL = true, controlURL
	c.Tailscale.StateDir = filepath.Join(t.TempDir(), "ts")
	ready := make(chan string, 1)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Serve(sctx, c, zerolog.Nop(), Options{Spec: api.Spec, Ready: func(a string) { ready <- a }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-ctx.Done():
		t.Fatal("server not ready")
	}
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	admin, err := api.NewClient("http://"+addr, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"agent-a", "agent-b"} {
		jt, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.WithToken("").Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, AgentVersion: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	a := meshtest.Node(t, ctx, controlURL, "agent-a", mesh.DefaultAgentTag)
	stranger := meshtest.Node(t, ctx, controlURL, "stranger")

	get := func(n *mesh.Node, path, token string) int {
		t.Helper()
		tr := &http.Transport{DialContext: n.DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://slipway"+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		t0 := time.Now()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		t.Logf("GET %s: %d in %v %s", path, resp.StatusCode, time.Since(t0), strings.TrimSpace(string(b)))
		return resp.StatusCode
	}
	for _, tt := range []struct {
		name  string
		from  *mesh.Node
		path  string
		token string
		want  int
	}{
		{"own desired", a, "/v1/agent/nodes/agent-a/desired?wait=50ms", "", http.StatusNoContent},
		{"other node's desired", a, "/v1/agent/nodes/agent-b/desired?wait=50ms", "", http.StatusForbidden},
		{"untagged node", stranger, "/v1/agent/nodes/stranger/desired?wait=50ms", "", http.StatusForbidden},
		{"admin token over the tailnet", stranger, "/v1/nodes", adminToken, http.StatusOK},
		{"admin route without token", a, "/v1/nodes", "", http.StatusUnauthorized},
	} {
		if got := get(tt.from, tt.path, tt.token); got != tt.want {
			t.Errorf("%s: status %d; want %d", tt.name, got, tt.want)
		}
	}
	evs, err := admin.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var denied []string
	for _, e := range evs {
		if e.Action == "auth.denied" {
			denied = append(denied, e.Actor+" "+e.Detail)
		}
	}
	all := strings.Join(denied, "\n")
	for _, want := range []string{"node:agent-a node agent-a may not act for node agent-b", "does not carry tag:slipway-agent"} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
}
