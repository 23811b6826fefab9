package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/metrics"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/gossip"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
)

// TestServeOnTailnet runs the server with [tailscale] on a loopback tailnet:
// agents on tagged nodes reach their own routes by MagicDNS name without a
// node token, not another node's; an untagged node is refused; admin bearer
// tokens work over the tailnet, and without one a node whose identity has
// no role is refused; refusals are audited. No t.Parallel.
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
		{"admin route without token, no role for the tag", a, "/v1/nodes", "", http.StatusForbidden},
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

// TestEnrolAndGossipOnTailnet runs the server with [tailscale] and
// [gossip] on a loopback tailnet: a tagged agent node enrols without a join
// token (no node token issued) and again with new labels; an untagged node,
// and a tagged one asking for another name, are refused and audited.
// Gossip runs over the server's tailnet node: the agent's member, on its
// own tsnet node, joins the server at its tailnet address, is recorded
// alive, and a release for the node wakes it. No t.Parallel.
func TestEnrolAndGossipOnTailnet(t *testing.T) {
	if testing.Short() {
		t.Skip("tailnet test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	controlURL := meshtest.Control(t)
	key := gossipKey(t)
	keyring := filepath.Join(t.TempDir(), "gossip.keys")
	if err := os.WriteFile(keyring, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := config.Default()
	c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", "", t.TempDir()
	c.AdminTokens = []config.AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: httpapi.HashToken(adminToken)}}
	c.Tailscale.Enabled, c.Tailscale.ControlURL = true, controlURL
	c.Tailscale.StateDir = filepath.Join(t.TempDir(), "ts")
	c.Gossip = config.Gossip{Enabled: true, Bind: "0.0.0.0:0", NodeName: "slipway-server", KeyringFile: keyring}
	ready, gossipReady := make(chan string, 1), make(chan string, 1)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Serve(sctx, c, zerolog.Nop(), Options{Spec: api.Spec, Ready: func(a string) { ready <- a },
			GossipReady: func(a string) { gossipReady <- a }, GossipIntervals: gossip.TestIntervals()})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-ctx.Done():
		t.Fatal("server not ready")
	}
	gaddr := <-gossipReady
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

	agent := meshtest.Node(t, ctx, controlURL, "web-7", mesh.DefaultAgentTag)
	stranger := meshtest.Node(t, ctx, controlURL, "stranger")
	enrol := func(n *mesh.Node, name string, labels map[string]string) (int, api.EnrollResponse) {
		t.Helper()
		body, _ := json.Marshal(api.EnrollRequest{Name: name, Labels: labels, AgentVersion: "test"})
		tr := &http.Transport{DialContext: n.DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://slipway/v1/agent/enroll", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("enrol %s: %v", name, err)
		}
		defer resp.Body.Close()
		var er api.EnrollResponse
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &er); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("enrol %s: %d %s", name, resp.StatusCode, strings.TrimSpace(string(b)))
		return resp.StatusCode, er
	}
	if code, resp := enrol(agent, "web-7", map[string]string{"role": "web"}); code != http.StatusOK || resp.Name != "web-7" || resp.NodeToken != "" {
		t.Fatalf("tagged agent enrols without a join token: %d %+v", code, resp)
	}
	if code, _ := enrol(agent, "web-7", map[string]string{"role": "web", "zone": "b"}); code != http.StatusOK {
		t.Fatalf("re-enrolment: %d", code)
	}
	if n, err := admin.Node(ctx, "web-7"); err != nil || n.Labels["zone"] != "b" {
		t.Fatalf("web-7 after re-enrolment: %+v %v", n, err)
	}
	for _, tt := range []struct {
		name string
		from *mesh.Node
		node string
	}{{"another name", agent, "web-8"}, {"untagged node", stranger, "stranger"}} {
		if code, _ := enrol(tt.from, tt.node, nil); code != http.StatusForbidden {
			t.Errorf("%s: enrol %s: %d, want 403", tt.name, tt.node, code)
		}
		if _, err := admin.Node(ctx, tt.node); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("%s: refused node %s exists: %v", tt.name, tt.node, err)
		}
	}
	evs, err := admin.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var audit []string
	for _, e := range evs {
		audit = append(audit, e.Actor+" "+e.Action+" "+e.Detail)
	}
	all := strings.Join(audit, "\n")
	for _, want := range []string{
		"node:web-7 node.enroll new node by tailnet identity, without a join token",
		"node:web-7 node.enroll re-enrolled by tailnet identity",
		"node:web-7 auth.denied enrol web-8 without a join token: node web-7 may not act for node web-8",
		"auth.denied enrol stranger without a join token: node stranger does not carry tag:slipway-agent",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}

	// Gossip over the tailnet: the server's member is on its tailnet IP.
	host, _, _ := net.SplitHostPort(gaddr)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Is4() || ip.IsLoopback() || ip.IsUnspecified() {
		t.Fatalf("server's gossip address %s is not a tailnet IPv4", gaddr)
	}
	ip, err := agent.IPv4()
	if err != nil {
		t.Fatal(err)
	}
	wl := &wakeLog{}
	m, err := gossip.Create(gossip.Config{NodeName: "web-7", BindAddr: net.JoinHostPort(ip.String(), "7946"), Net: agent,
		Keyring: []string{key}, Intervals: gossip.TestIntervals(), OnDesiredChanged: wl.on})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	if _, err := m.Join(gaddr); err != nil {
		t.Fatalf("web-7 joins the server at %s: %v", gaddr, err)
	}
	waitFor(t, "web-7 alive", func() bool {
		n, err := admin.Node(ctx, "web-7")
		return err == nil && n.Liveness == api.LivenessAlive
	})
	manifest := json.RawMessage(`{"name":"web","units":{"web.service":"[Service]\nExecStart=/bin/true\n"}}`)
	if _, err := admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifest}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-7 woken over the tailnet", func() bool { return len(wl.concerning("web-7")) > 0 })
}

// TestReloadRoles: a reload applies a changed [tailscale.roles] to the
// running tailnet endpoint; a reload with an invalid role changes nothing
// (neither roles nor tokens).
func TestReloadRoles(t *testing.T) {
	start := config.Default()
	start.StateDir = t.TempDir()
	start.Tailscale.Enabled = true
	start.Tailscale.Roles = config.Roles{"alice@example.com": api.RoleViewer}
	authz, err := mesh.NewAuthorizer(start.Tailscale.AgentTag, start.Tailscale.Roles)
	if err != nil {
		t.Fatal(err)
	}
	me := &meshEndpoint{auth: &httpapi.MeshAuth{Authz: authz}, agentTag: start.Tailscale.AgentTag}
	var ref atomic.Pointer[meshEndpoint]
	ref.Store(me)
	next := start
	var apis int
	logs := &syncLog{}
	rl := &reloader{running: start, mesh: &ref, front: newFront(context.Background(), http.NotFoundHandler(), metrics.New(nil), nil),
		load:   func() (config.Server, error) { return next, nil },
		newAPI: func([]httpapi.AdminToken) http.Handler { apis++; return http.NotFoundHandler() },
		log:    zerolog.New(logs)}
	alice := mesh.Identity{NodeName: "laptop", User: "alice@example.com"}
	role := func() string { r, _ := me.auth.Authz.Role(alice); return r }

	next.Tailscale.Roles = config.Roles{"alice@example.com": api.RoleAdmin, "tag:ci": api.RoleDeployer}
	rl.reload()
	if role() != api.RoleAdmin || apis != 1 {
		t.Fatalf("after the reload alice is %q (%d APIs built)", role(), apis)
	}
	if strings.Contains(logs.String(), "take effect only when the server restarts") {
		t.Errorf("roles reported as needing a restart:\n%s", logs)
	}
	next.Tailscale.Roles = config.Roles{"alice@example.com": "root"}
	rl.reload()
	if role() != api.RoleAdmin || apis != 1 || !strings.Contains(logs.String(), "keeping the running config") {
		t.Fatalf("an invalid role was applied: alice is %q (%d APIs built)\n%s", role(), apis, logs)
	}
}
