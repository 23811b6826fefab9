package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/api/apitest"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// fakeHost is the host's tailscaled: it answers Self from a list (the
// last answer repeats) and dials every address to the fake server's
// loopback listener, recording what it was asked to dial.
type fakeHost struct {
	mu      sync.Mutex
	selves  []mesh.Self
	errs    []error
	to      string // where every dial goes
	proxied bool
	cfg     mesh.HostConfig // what the daemon opened it with
	asked   int
	dials   []string
}

func (f *fakeHost) Self(context.Context) (mesh.Self, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := min(f.asked, len(f.selves)-1)
	f.asked++
	var err error
	if i < len(f.errs) {
		err = f.errs[i]
	}
	return f.selves[i], err
}

func (f *fakeHost) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, addr)
	f.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, f.to)
}

func (f *fakeHost) Proxied() bool  { return f.proxied }
func (f *fakeHost) Socket() string { return "/run/fake/tailscaled.sock" }

func (f *fakeHost) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("host: asked %d times, dials %v", f.asked, f.dials)
}

var tailnetIP = netip.MustParseAddr("100.64.0.9")

func runningSelf(name string, tun bool, tags ...string) mesh.Self {
	return mesh.Self{Name: name, Tags: tags, IPs: []netip.Addr{tailnetIP}, State: "Running", TUN: tun}
}

// hostNode is a node whose daemon uses the fake host's tailscaled to
// reach a fake server that knows callers by whois.
func hostNode(t *testing.T, srv *fakeServer, h *fakeHost) *node {
	t.Helper()
	n := newNode(t, srv, "http://slipway")
	n.cfg.JoinTokenFile = ""
	n.cfg.TailnetWaitLog = time.Nanosecond // every wait is logged
	n.cfg.TailscaleHost = &HostTailnet{HostConfig: mesh.HostConfig{Socket: "/run/fake/tailscaled.sock"}, Tags: []string{mesh.DefaultAgentTag}}
	n.cfg.newHost = func(c mesh.HostConfig) (hostTailnet, error) {
		h.mu.Lock()
		h.cfg = c
		h.mu.Unlock()
		return h, nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(h)
		}
	})
	return n
}

// whoisServer is a fake server behind the host's tailnet: every caller is
// id.
func whoisServer(t *testing.T, id mesh.Identity) (*fakeServer, string) {
	srv := newFakeServer(t, joinToken)
	srv.whois = func(context.Context, string) (mesh.Identity, error) { return id, nil }
	srv.noTailnetToken = true
	srv.spec = apitest.New(t, apitest.Tailnet())
	hs := httptest.NewServer(srv.handler())
	t.Cleanup(hs.Close)
	return srv, hs.Listener.Addr().String()
}

// In host mode the daemon waits for the host's tailscaled (logging the
// wait), enrols by the tailnet identity without a join token, and sends
// every request through the host's dialer: TUN (direct) and userspace
// networking with a proxy alike.
func TestHostTailnetEnrolsByIdentity(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tun     bool
		proxied bool
	}{{"tun", true, false}, {"userspace through the proxy", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			srv, addr := whoisServer(t, mesh.Identity{NodeName: "web-1", Tags: []string{mesh.DefaultAgentTag}})
			h := &fakeHost{
				selves: []mesh.Self{{}, {State: "NeedsLogin"}, runningSelf("web-1", tt.tun, mesh.DefaultAgentTag)},
				errs:   []error{errors.New("dial unix /run/fake/tailscaled.sock: connection refused")},
				to:     addr, proxied: tt.proxied,
			}
			n := hostNode(t, srv, h)
			art := srv.addBlob([]byte("web binary"))
			id1 := srv.publish(webManifest("v1", art), "r1")
			n.start()
			n.waitReport("idle on v1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
			if err := n.stop(); err != nil {
				t.Fatal(err)
			}
			srv.mu.Lock()
			enrolls := srv.enrolls
			srv.mu.Unlock()
			if len(enrolls) != 1 || enrolls[0].JoinToken != "" || enrolls[0].Name != "web-1" {
				t.Fatalf("enrolments %+v, want one by the tailnet identity", enrolls)
			}
			h.mu.Lock()
			dials, cfg := h.dials, h.cfg
			h.mu.Unlock()
			if len(dials) == 0 || cfg.Socket != "/run/fake/tailscaled.sock" {
				t.Fatalf("dials %v, config %+v", dials, cfg)
			}
			for _, d := range dials {
				if d != "slipway:80" {
					t.Fatalf("dialed %q, want slipway:80 through the host's tailnet", d)
				}
			}
			logs := n.logs.String()
			for _, want := range []string{"using the host's tailscaled", "still waiting for the host's tailscaled", "connection refused", `"state":"NeedsLogin"`, "on the tailnet", "enrolled by the tailnet identity"} {
				if !strings.Contains(logs, want) {
					t.Errorf("log lacks %q", want)
				}
			}
		})
	}
}

// A host whose tailscaled does not know it as the server will is refused
// at start, before anything is sent to the server, with an error that
// says what to change.
func TestHostTailnetRefusedAtStart(t *testing.T) {
	tests := []struct {
		name    string
		self    mesh.Self
		proxied bool
		want    []string
	}{
		{"name differs", runningSelf("web-one", true, mesh.DefaultAgentTag), false,
			[]string{`the host's tailnet name is "web-one", not node_name "web-1"`, "tailscale up --hostname=web-1"}},
		{"no agent tag", runningSelf("web-1", true, "tag:web"), false,
			[]string{"does not carry tag:slipway-agent (it has [tag:web])", "--advertise-tags=tag:slipway-agent"}},
		{"untagged and misnamed", runningSelf("laptop", true), false,
			[]string{`tailnet name is "laptop"`, "does not carry tag:slipway-agent"}},
		{"userspace networking without a proxy", runningSelf("web-1", false, mesh.DefaultAgentTag), false,
			[]string{"userspace networking", "set tailscale.proxy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, addr := whoisServer(t, mesh.Identity{NodeName: "web-1", Tags: []string{mesh.DefaultAgentTag}})
			h := &fakeHost{selves: []mesh.Self{tt.self}, to: addr, proxied: tt.proxied}
			n := hostNode(t, srv, h)
			n.start()
			err := n.runErr()
			if !errors.Is(err, ErrTailnetIdentity) {
				t.Fatalf("Run: %v, want ErrTailnetIdentity", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if e, p, _, r, _ := srv.counts(); e+p+r != 0 {
				t.Fatalf("the server got %d enrolments, %d polls, %d reports", e, p, r)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.dials) != 0 {
				t.Fatalf("dialed %v", h.dials)
			}
		})
	}
}

// SIGTERM ends the wait for the host's tailscaled at once.
func TestHostTailnetWaitBounded(t *testing.T) {
	srv, addr := whoisServer(t, mesh.Identity{})
	h := &fakeHost{selves: []mesh.Self{{State: "Starting"}}, to: addr}
	n := hostNode(t, srv, h)
	n.start()
	waitFor(t, "wait logs", func() bool { return n.logs.count("still waiting for the host's tailscaled") >= 2 })
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A tsnet node and the host's tailscaled together are refused.
func TestHostTailnetAndTsnet(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := hostNode(t, srv, &fakeHost{})
	n.cfg.Tailscale = &mesh.Config{Hostname: "web-1"}
	if _, err := New(n.cfg, nil, n.db, nil, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Fatalf("New: %v", err)
	}
}
