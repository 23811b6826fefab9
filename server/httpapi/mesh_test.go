package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// TestMeshAgentAuth serves the same handler on a second listener whose
// requests are authorised by a fake WhoIs, as server/daemon does with the
// tailnet listener.
func TestMeshAgentAuth(t *testing.T) {
	reg, blobs := registrytest.Open(t, registry.Config{})
	h := New(reg, rollout.New(reg, rollout.Config{}, zerolog.Nop()), blobs, []AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: HashToken(adminTok)}}, api.Spec, zerolog.Nop())
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	f := &fixture{t: t}
	f.admin, _ = api.NewClient(plain.URL, adminTok)
	f.anon, _ = api.NewClient(plain.URL, "")
	ctx := context.Background()
	_, tok1 := f.enrollToken("web-1", nil)
	f.enroll("web-2", nil)

	var mu sync.Mutex
	var who mesh.Identity
	var whoErr error
	authz, err := mesh.NewAuthorizer("", nil)
	if err != nil {
		t.Fatal(err)
	}
	ma := &MeshAuth{Authz: authz, Whois: func(context.Context, string) (mesh.Identity, error) {
		mu.Lock()
		defer mu.Unlock()
		return who, whoErr
	}}
	// The same handler, reached through a mesh-marked listener.
	srv := httptest.NewUnstartedServer(h)
	srv.Config.BaseContext = func(net.Listener) context.Context { return WithMesh(context.Background(), ma) }
	srv.Start()
	t.Cleanup(srv.Close)
	client := func(tok string) *api.Client {
		c, err := api.NewClient(srv.URL, tok)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	agentTag := []string{mesh.DefaultAgentTag}
	tests := []struct {
		name  string
		id    mesh.Identity
		err   error
		token string
		node  string
		want  error // nil: allowed
	}{
		{"tagged node, own name", mesh.Identity{NodeName: "web-1", Tags: agentTag}, nil, "", "web-1", nil},
		{"tagged node, other name", mesh.Identity{NodeName: "web-1", Tags: agentTag}, nil, "", "web-2", api.ErrForbidden},
		{"untagged node", mesh.Identity{NodeName: "web-2", User: "alice@example.com"}, nil, "", "web-2", api.ErrForbidden},
		{"no identity, valid token", mesh.Identity{}, mesh.ErrNoIdentity, tok1, "web-1", api.ErrUnauthorized},
		{"whois fails", mesh.Identity{}, errors.New("local api down"), tok1, "web-1", api.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			who, whoErr = tt.id, tt.err
			mu.Unlock()
			_, _, err := client(tt.token).Desired(ctx, tt.node, "", 50*time.Millisecond) // wait=0 is a 500: registry.WaitDesired
			if tt.want == nil && err != nil {
				t.Fatalf("Desired(%s) as %+v: %v", tt.node, tt.id, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Desired(%s) as %+v: %v; want %v", tt.node, tt.id, err, tt.want)
			}
		})
	}
	// The plain listener still wants node tokens.
	if _, _, err := f.anon.Desired(ctx, "web-1", "", 50*time.Millisecond); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("plain listener without token: %v", err)
	}
	evs, err := f.admin.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var denied []string
	for _, e := range evs {
		if e.Action == "auth.denied" {
			denied = append(denied, e.Actor+": "+e.Detail)
		}
	}
	all := strings.Join(denied, "\n")
	for _, want := range []string{
		"node:web-1: node web-1 may not act for node web-2",
		"tailnet:alice@example.com: node web-2 does not carry tag:slipway-agent",
		"anonymous: no tailnet identity",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
}

// meshFixture is a registry with its handler served twice: on a plain
// listener and on a "tailnet" listener whose WhoIs answers what the test
// sets (as server/daemon serves the tailnet node).
type meshFixture struct {
	*fixture
	mu     sync.Mutex
	who    mesh.Identity
	whoErr error
	mesh   string // URL of the tailnet listener
	auth   *MeshAuth
}

// newMeshFixture builds it with roles for [tailscale.roles]; validated
// wraps the tailnet listener in the OpenAPI validator too.
func newMeshFixture(t *testing.T, roles map[string]string, validated bool) *meshFixture {
	t.Helper()
	reg, blobs := registrytest.Open(t, registry.Config{})
	h := New(reg, rollout.New(reg, rollout.Config{}, zerolog.Nop()), blobs, []AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: HashToken(adminTok)}}, api.Spec, zerolog.Nop())
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	m := &meshFixture{fixture: &fixture{t: t, reg: reg, url: plain.URL}}
	m.admin, _ = api.NewClient(plain.URL, adminTok)
	m.anon, _ = api.NewClient(plain.URL, "")
	authz, err := mesh.NewAuthorizer("", roles)
	if err != nil {
		t.Fatal(err)
	}
	ma := &MeshAuth{Authz: authz, Whois: func(context.Context, string) (mesh.Identity, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.who, m.whoErr
	}}
	m.auth = ma
	var mh http.Handler = h
	if validated {
		mh, m.spec = wrap(t, h)
	}
	srv := httptest.NewUnstartedServer(mh)
	srv.Config.BaseContext = func(net.Listener) context.Context { return WithMesh(context.Background(), ma) }
	srv.Start()
	t.Cleanup(srv.Close)
	m.mesh = srv.URL
	return m
}

// as makes the tailnet's WhoIs answer id (err: fail with it).
func (m *meshFixture) as(id mesh.Identity, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.who, m.whoErr = id, err
}

// client is a client of the tailnet listener with a bearer token ("" none).
func (m *meshFixture) client(token string) *api.Client {
	c, err := api.NewClient(m.mesh, token)
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// denials lists the audit log's auth.denied entries as "actor: detail".
func (m *meshFixture) denials() string {
	m.t.Helper()
	evs, err := m.admin.Events(context.Background(), 0, 1000)
	if err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Action == "auth.denied" {
			out = append(out, e.Actor+": "+e.Detail)
		}
	}
	return strings.Join(out, "\n")
}

// TestMeshAdminAuth: over the tailnet, an admin request without a bearer
// token gets the role [tailscale.roles] gives the caller's user or tags;
// no identity is 401, no role or too small a role 403, each audited with
// the tailnet principal as actor; a bearer token decides by itself, as on
// the plain listener, where a request without one stays 401.
func TestMeshAdminAuth(t *testing.T) {
	m := newMeshFixture(t, map[string]string{"alice@example.com": api.RoleDeployer, "tag:ci": api.RoleAdmin, "tag:dash": api.RoleViewer}, false)
	ctx := context.Background()
	agentTag := []string{mesh.DefaultAgentTag}
	alice := mesh.Identity{NodeName: "alice-laptop", User: "alice@example.com"}
	tests := []struct {
		name   string
		id     mesh.Identity
		err    error
		token  string
		call   string // "nodes" (viewer) or "jointoken" (admin)
		want   error  // nil: allowed
		status string // for the table's reader
	}{
		{"user with a role, enough", alice, nil, "", "nodes", nil, "200"},
		{"user with a role, too small", alice, nil, "", "jointoken", api.ErrForbidden, "403"},
		{"tag with a role", mesh.Identity{NodeName: "ci-1", Tags: []string{"tag:ci"}}, nil, "", "jointoken", nil, "201"},
		{"highest of several tags", mesh.Identity{NodeName: "ci-2", Tags: []string{"tag:dash", "tag:ci"}}, nil, "", "jointoken", nil, "201"},
		{"user without a role", mesh.Identity{NodeName: "bob-laptop", User: "bob@example.com"}, nil, "", "nodes", api.ErrForbidden, "403"},
		{"agent node", mesh.Identity{NodeName: "web-1", Tags: agentTag}, nil, "", "nodes", api.ErrForbidden, "403"},
		{"anonymous", mesh.Identity{}, mesh.ErrNoIdentity, "", "nodes", api.ErrUnauthorized, "401"},
		{"whois fails", mesh.Identity{}, errors.New("local api down"), "", "nodes", api.ErrUnauthorized, "401"},
		{"bearer token, no identity", mesh.Identity{}, mesh.ErrNoIdentity, adminTok, "jointoken", nil, "201"},
		{"bearer token decides, not the identity", mesh.Identity{NodeName: "ci-1", Tags: []string{"tag:ci"}}, nil, "wrong-token-0123456789", "nodes", api.ErrUnauthorized, "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.as(tt.id, tt.err)
			c := m.client(tt.token)
			var err error
			switch tt.call {
			case "nodes":
				_, err = c.Nodes(ctx)
			case "jointoken":
				_, err = c.CreateJoinToken(ctx, api.JoinTokenRequest{})
			}
			if tt.want == nil && err != nil {
				t.Fatalf("%s as %+v: %v; want %s", tt.call, tt.id, err, tt.status)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("%s as %+v: %v; want %s", tt.call, tt.id, err, tt.status)
			}
		})
	}
	// The plain listener knows no identities: no token, no access.
	if _, err := m.anon.Nodes(ctx); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("plain listener without a token: %v", err)
	}

	all := m.denials()
	for _, want := range []string{
		"tailnet:alice@example.com: role deployer may not do this (needs admin)",
		"tailnet:bob@example.com: no admin role for user bob@example.com",
		"tailnet-node:web-1: no admin role for node web-1 (tag:slipway-agent)",
		"anonymous: no tailnet identity",
		"anonymous: unknown bearer token",
		"anonymous: missing bearer token", // the plain listener
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
	// What a tailnet principal did is recorded under its name.
	evs, err := m.admin.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var created []string
	for _, e := range evs {
		if e.Action == "jointoken.create" {
			created = append(created, e.Actor)
		}
	}
	if want := []string{"tailnet:tag:ci", "tailnet:tag:ci", "token:ops"}; !slices.Equal(created, want) {
		t.Errorf("join tokens created by %v, want %v", created, want)
	}

	// A reload of the roles applies to the next request.
	authz, err := mesh.NewAuthorizer("", map[string]string{"alice@example.com": api.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	m.as(alice, nil)
	m.auth.SetAuthz(authz)
	if _, err := m.client("").CreateJoinToken(ctx, api.JoinTokenRequest{}); err != nil {
		t.Errorf("alice after her role became admin: %v", err)
	}
}

// TestMeshEnroll: over the tailnet an agent enrols without a join token
// when WhoIs says it carries the agent tag and is the node it names (no
// node token is issued; enrolling again updates its labels); a stranger,
// another node's name or no identity is refused and audited; a join token
// works there only for a caller the tailnet knows as that agent (others
// are refused before the token is used); the plain listener still wants
// one. Every answer of
// the tailnet listener matches the OpenAPI spec.
func TestMeshEnroll(t *testing.T) {
	m := newMeshFixture(t, nil, true)
	ctx := context.Background()
	agentTag := []string{mesh.DefaultAgentTag}
	web3 := mesh.Identity{NodeName: "web-3", Tags: agentTag}
	enrol := func(name, join string, labels map[string]string) (api.EnrollResponse, error) {
		return m.client("").Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: join, Labels: labels, AgeRecipient: "age1web3", AgentVersion: "1.2.3"})
	}

	m.as(web3, nil)
	resp, err := enrol("web-3", "", map[string]string{"role": "web"})
	if err != nil || resp.Name != "web-3" || resp.NodeToken != "" {
		t.Fatalf("enrol by tailnet identity: %+v %v", resp, err)
	}
	n, err := m.admin.Node(ctx, "web-3")
	if err != nil || n.Labels["role"] != "web" || n.AgeRecipient != "age1web3" || n.AgentVersion != "1.2.3" {
		t.Fatalf("web-3 after enrolment: %+v %v", n, err)
	}
	// The agent restarts with new labels and enrols again.
	if _, err := enrol("web-3", "", map[string]string{"role": "web", "zone": "b"}); err != nil {
		t.Fatalf("re-enrol: %v", err)
	}
	if n, _ := m.admin.Node(ctx, "web-3"); n.Labels["zone"] != "b" {
		t.Fatalf("labels after re-enrolment: %v", n.Labels)
	}

	for _, tt := range []struct {
		name string
		id   mesh.Identity
		err  error
		node string
		want error
	}{
		{"another node's name", web3, nil, "web-4", api.ErrForbidden},
		{"untagged node", mesh.Identity{NodeName: "web-4", User: "alice@example.com"}, nil, "web-4", api.ErrForbidden},
		{"other tag", mesh.Identity{NodeName: "web-4", Tags: []string{"tag:ci"}}, nil, "web-4", api.ErrForbidden},
		{"no identity", mesh.Identity{}, mesh.ErrNoIdentity, "web-4", api.ErrUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.as(tt.id, tt.err)
			if _, err := enrol(tt.node, "", nil); !errors.Is(err, tt.want) {
				t.Fatalf("enrol %s as %+v: %v; want %v", tt.node, tt.id, err, tt.want)
			}
		})
	}
	if _, err := m.admin.Node(ctx, "web-4"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a refused enrolment left a node: %v", err)
	}

	// A join token over the tailnet: a caller the tailnet would refuse on
	// its next request (no identity, no agent tag, another name) is
	// refused before the token is used; an agent enrolling as itself gets
	// a node token.
	jt, err := m.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		id   mesh.Identity
		err  error
		want error
	}{
		{"join token, no identity", mesh.Identity{}, mesh.ErrNoIdentity, api.ErrUnauthorized},
		{"join token, untagged node", mesh.Identity{NodeName: "web-5", User: "alice@example.com"}, nil, api.ErrForbidden},
		{"join token, another node's name", mesh.Identity{NodeName: "web-9", Tags: agentTag}, nil, api.ErrForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.as(tt.id, tt.err)
			if _, err := enrol("web-5", jt.Token, nil); !errors.Is(err, tt.want) {
				t.Fatalf("enrol web-5 with a join token as %+v: %v; want %v", tt.id, err, tt.want)
			}
		})
	}
	if _, err := m.admin.Node(ctx, "web-5"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a refused enrolment with a join token left a node: %v", err)
	}
	m.as(mesh.Identity{NodeName: "web-5", Tags: agentTag}, nil)
	if resp, err := enrol("web-5", jt.Token, nil); err != nil || resp.NodeToken == "" {
		t.Fatalf("the join token after three refusals: %+v %v (it was used up by a refused caller)", resp, err)
	}
	m.as(mesh.Identity{NodeName: "web-7", Tags: agentTag}, nil)
	if _, err := enrol("web-7", jt.Token, nil); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("the join token, used once, again: %v", err)
	}
	// The plain listener: an empty join token is refused.
	if _, err := m.anon.Enroll(ctx, api.EnrollRequest{Name: "web-6"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("plain listener without a join token: %v", err)
	}

	all := m.denials()
	for _, want := range []string{
		"node:web-3: enrol web-4 without a join token: node web-3 may not act for node web-4",
		"tailnet:alice@example.com: enrol web-4 without a join token: node web-4 does not carry tag:slipway-agent",
		"tailnet-node:web-4: enrol web-4 without a join token: node web-4 does not carry tag:slipway-agent",
		"anonymous: enrol web-4 without a join token: no tailnet identity",
		"anonymous: enrol web-5 with a join token over the tailnet (the token was not used): no tailnet identity",
		"tailnet:alice@example.com: enrol web-5 with a join token over the tailnet (the token was not used): node web-5 does not carry tag:slipway-agent",
		"node:web-9: enrol web-5 with a join token over the tailnet (the token was not used): node web-9 may not act for node web-5",
		"node:web-6: unauthorized: join token unknown or already used",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
	if ex := m.spec.Exercised()[api.RouteEnroll]; !slices.Equal(ex, []int{200, 401, 403}) {
		t.Errorf("enrol statuses validated on the tailnet listener: %v", ex)
	}
}
