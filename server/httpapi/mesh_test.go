package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// TestMeshAgentAuth serves the same handler on a second listener whose
// requests are authorised by a fake WhoIs, as server/daemon does with the
// tailnet listener.
func TestMeshAgentAuth(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blobstore.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, blobs, registry.Config{}, zerolog.Nop())
	h := New(reg, blobs, []AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: HashToken(adminTok)}}, api.Spec, zerolog.Nop())
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
