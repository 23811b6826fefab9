package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/socks5"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/views"
)

// fakeLocalAPI is a host tailscaled's LocalAPI: a status and WhoIs
// answers by address. It records the calls.
type fakeLocalAPI struct {
	mu    sync.Mutex
	st    *ipnstate.Status
	err   error
	who   map[string]*apitype.WhoIsResponse
	calls []string
}

func (f *fakeLocalAPI) Status(context.Context) (*ipnstate.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "status")
	return f.st, f.err
}

func (f *fakeLocalAPI) WhoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "whois "+addr)
	if w, ok := f.who[addr]; ok {
		return w, nil
	}
	return nil, local.ErrPeerNotFound
}

func (f *fakeLocalAPI) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("calls=%v", f.calls)
}

func tags(ts ...string) *views.Slice[string] {
	v := views.SliceOf(ts)
	return &v
}

func status(self *ipnstate.PeerStatus, tun bool, peers ...*ipnstate.PeerStatus) *ipnstate.Status {
	st := &ipnstate.Status{BackendState: "Running", TUN: tun, Self: self, Peer: map[key.NodePublic]*ipnstate.PeerStatus{}}
	if self != nil {
		st.TailscaleIPs = self.TailscaleIPs
	}
	for _, p := range peers {
		st.Peer[key.NewNode().Public()] = p
	}
	return st
}

func TestHostSelf(t *testing.T) {
	ip := netip.MustParseAddr("100.64.0.7")
	tests := []struct {
		name string
		st   *ipnstate.Status
		err  error
		want Self
		fail string
	}{
		{"tagged TUN node", status(&ipnstate.PeerStatus{DNSName: "Web-1.tail1234.ts.net.", HostName: "web-1.example.org", Tags: tags("tag:slipway-agent"), TailscaleIPs: []netip.Addr{ip}}, true),
			nil, Self{Name: "web-1", Tags: []string{"tag:slipway-agent"}, IPs: []netip.Addr{ip}, State: "Running", TUN: true}, ""},
		{"userspace, untagged", status(&ipnstate.PeerStatus{DNSName: "web-2.ts.net.", TailscaleIPs: []netip.Addr{ip}}, false),
			nil, Self{Name: "web-2", IPs: []netip.Addr{ip}, State: "Running"}, ""},
		{"no MagicDNS name yet: the host name", status(&ipnstate.PeerStatus{HostName: "web-3"}, true),
			nil, Self{Name: "web-3", IPs: []netip.Addr{}, State: "Running", TUN: true}, ""},
		{"logged out", &ipnstate.Status{BackendState: "NeedsLogin"}, nil, Self{State: "NeedsLogin", IPs: []netip.Addr{}}, ""},
		{"no tailscaled", nil, errors.New("dial unix /run/ts.sock: connect: no such file or directory"), Self{}, "mesh: tailscaled at /run/ts.sock: dial unix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeLocalAPI{st: tt.st, err: tt.err}
			h := &Host{lc: f, socket: "/run/ts.sock"}
			got, err := h.Self(context.Background())
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("err %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want.Name || !slices.Equal(got.Tags, tt.want.Tags) || !slices.Equal(got.IPs, tt.want.IPs) ||
				got.State != tt.want.State || got.TUN != tt.want.TUN {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if got.Running() != (tt.want.State == "Running") {
				t.Fatalf("Running() = %v for state %q", got.Running(), got.State)
			}
		})
	}
}

func TestHostWhois(t *testing.T) {
	f := &fakeLocalAPI{who: map[string]*apitype.WhoIsResponse{
		"100.64.0.2:4000": {Node: &tailcfg.Node{ComputedName: "web-1", Tags: []string{"tag:slipway-agent"}},
			UserProfile: &tailcfg.UserProfile{LoginName: "creator@example.com"}},
		"100.64.0.3:4000": {Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"}},
	}}
	h := &Host{lc: f}
	tests := []struct {
		addr string
		want Identity
		err  error
	}{
		{"100.64.0.2:4000", Identity{NodeName: "web-1", Tags: []string{"tag:slipway-agent"}}, nil},
		{"100.64.0.3:4000", Identity{NodeName: "laptop", User: "alice@example.com"}, nil},
		{"192.0.2.1:4000", Identity{}, ErrNoIdentity},
	}
	for _, tt := range tests {
		got, err := h.Whois(context.Background(), tt.addr)
		if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Fatalf("%s: err %v, want %v", tt.addr, err, tt.err)
		}
		if got.NodeName != tt.want.NodeName || got.User != tt.want.User || !slices.Equal(got.Tags, tt.want.Tags) {
			t.Fatalf("%s: %+v, want %+v", tt.addr, got, tt.want)
		}
	}
	if want := "calls=[whois 100.64.0.2:4000 whois 100.64.0.3:4000 whois 192.0.2.1:4000]"; f.String() != want {
		t.Fatalf("%s, want %s", f, want)
	}
}

func TestParseProxy(t *testing.T) {
	tests := []struct{ in, want, fail string }{
		{"", "", ""},
		{"socks5://127.0.0.1:1055", "127.0.0.1:1055", ""},
		{"socks5://localhost:1055/", "localhost:1055", ""},
		{"http://127.0.0.1:1055", "", "want socks5://host:port"},
		{"socks5://127.0.0.1", "", "want socks5://host:port"},
		{"socks5://u:p@127.0.0.1:1055", "", "want socks5://host:port"},
		{"127.0.0.1:1055", "", "want socks5://host:port"},
	}
	for _, tt := range tests {
		got, err := ParseProxy(tt.in)
		if tt.fail != "" {
			if err == nil || !strings.Contains(err.Error(), tt.fail) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.fail)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

// echoServer answers every connection with its own address and closes.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from "+c.LocalAddr().String())
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// socksServer is tailscaled's SOCKS5 server on loopback; it records the
// addresses it was asked to dial.
func socksServer(t *testing.T) (addr string, asked func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var dialed []string
	srv := &socks5.Server{Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	go srv.Serve(ln)
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), dialed...)
	}
}

// TestHostDial: a tailnet name resolves from the network map, directly
// (TUN) and through tailscaled's SOCKS5 proxy (userspace networking); a
// name the tailnet does not know is left to the resolver or the proxy.
func TestHostDial(t *testing.T) {
	echo := echoServer(t)
	peer := &ipnstate.PeerStatus{DNSName: "slipway.mesh.test.", TailscaleIPs: []netip.Addr{netip.MustParseAddr("fd7a:115c:a1e0::1"), echo.Addr()}}
	f := &fakeLocalAPI{st: status(&ipnstate.PeerStatus{DNSName: "web-1.mesh.test."}, true, peer)}
	proxyAddr, asked := socksServer(t)
	port := fmt.Sprint(echo.Port())
	tests := []struct {
		name, proxy, addr string
		wantAsked         []string
		fail              string
	}{
		{"direct, tailnet short name", "", "slipway:" + port, nil, ""},
		{"direct, tailnet FQDN", "", "slipway.mesh.test.:" + port, nil, ""},
		{"direct, IP", "", echo.String(), nil, ""},
		{"direct, unknown name goes to the resolver", "", "localhost:" + port, nil, ""},
		{"proxy, tailnet name resolved first", "socks5://" + proxyAddr, "slipway:" + port, []string{echo.String()}, ""},
		{"proxy, unknown name left to the proxy", "socks5://" + proxyAddr, "localhost:" + port, []string{echo.String(), "localhost:" + port}, ""},
		{"proxy down", "socks5://127.0.0.1:1", "slipway:" + port, nil, "through tailscaled's proxy 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px, err := ParseProxy(tt.proxy)
			if err != nil {
				t.Fatal(err)
			}
			h := &Host{lc: f, proxy: px}
			if h.Proxied() != (tt.proxy != "") {
				t.Fatalf("Proxied() = %v", h.Proxied())
			}
			c, err := h.DialContext(context.Background(), "tcp", tt.addr)
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("err %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(c)
			c.Close()
			if want := "hello from " + echo.String(); string(b) != want {
				t.Fatalf("read %q, want %q", b, want)
			}
			if tt.wantAsked != nil && !slices.Equal(asked(), tt.wantAsked) {
				t.Fatalf("proxy dialed %v, want %v", asked(), tt.wantAsked)
			}
		})
	}
}

// TestHostDialStatusError: when the LocalAPI does not answer, a name is
// not sent anywhere else.
func TestHostDialStatusError(t *testing.T) {
	h := &Host{lc: &fakeLocalAPI{err: errors.New("connection refused")}, socket: "/run/ts.sock"}
	if _, err := h.DialContext(context.Background(), "tcp", "slipway:80"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err %v", err)
	}
}
