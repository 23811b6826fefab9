package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"golang.org/x/net/proxy"
	"tailscale.com/client/local"
	"tailscale.com/ipn"
)

// DefaultHostSocket is where the host's tailscaled serves its LocalAPI on
// Linux (the Debian package and the NixOS module alike).
const DefaultHostSocket = "/var/run/tailscale/tailscaled.sock"

// localAPI is what a Host needs of the host tailscaled's LocalAPI;
// *local.Client has it.
type localAPI interface {
	statusReader
	whoisReader
}

// HostConfig says how to reach the host's own tailscaled.
type HostConfig struct {
	// Socket is its LocalAPI socket; "" = DefaultHostSocket.
	Socket string
	// Proxy is its SOCKS5 proxy (tailscaled --socks5-server), as
	// "socks5://host:port": connections go through it. "" = dial directly,
	// over the kernel's tailnet interface (TUN).
	Proxy string
}

// Host is the host's own tailscaled, reached through its LocalAPI: the
// node's tailnet identity, WhoIs for peers, tailnet names, and a dialer
// onto the tailnet (the host's network with a TUN device, else through
// tailscaled's SOCKS5 proxy). It holds no tailnet state of its own.
type Host struct {
	lc     localAPI
	socket string
	proxy  string // host:port of the SOCKS5 proxy; "" = direct
	direct net.Dialer
}

// NewHost returns the host tailscaled of cfg. It does not connect: the
// LocalAPI is asked on every call.
func NewHost(cfg HostConfig) (*Host, error) {
	socket := cfg.Socket
	if socket == "" {
		socket = DefaultHostSocket
	}
	px, err := ParseProxy(cfg.Proxy)
	if err != nil {
		return nil, err
	}
	return &Host{lc: &local.Client{Socket: socket, UseSocketOnly: true}, socket: socket, proxy: px}, nil
}

// ParseProxy checks a tailscaled proxy address, "socks5://host:port", and
// returns its host:port ("" for "").
func ParseProxy(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("mesh: proxy: not a valid URL; want socks5://host:port (tailscaled --socks5-server)")
	}
	if u.Scheme != "socks5" || u.Host == "" || u.Port() == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("mesh: proxy: %q, want socks5://host:port (tailscaled --socks5-server)", s)
	}
	return u.Host, nil
}

// Socket is the LocalAPI socket the Host asks.
func (h *Host) Socket() string { return h.socket }

// Proxied reports whether connections go through tailscaled's SOCKS5
// proxy.
func (h *Host) Proxied() bool { return h.proxy != "" }

// Self is what the host's tailscaled says about the node it runs.
type Self struct {
	// Name is the node's tailnet host name: the first label of its
	// MagicDNS name, which is what WhoIs tells its peers.
	Name  string
	Tags  []string
	IPs   []netip.Addr // tailnet addresses
	State string       // the backend state; "Running" once on the tailnet
	// TUN is false when tailscaled runs in userspace networking: the host
	// has no tailnet interface and reaches peers only through its proxy.
	TUN bool
}

// Running reports whether tailscaled is logged in and on the tailnet.
func (s Self) Running() bool { return s.State == ipn.Running.String() }

// Self asks the host's tailscaled about its own node.
func (h *Host) Self(ctx context.Context) (Self, error) {
	st, err := h.lc.Status(ctx)
	if err != nil {
		return Self{}, fmt.Errorf("mesh: tailscaled at %s: %w", h.socket, err)
	}
	s := Self{State: st.BackendState, TUN: st.TUN, IPs: append([]netip.Addr(nil), st.TailscaleIPs...)}
	if p := st.Self; p != nil {
		s.Name, _, _ = strings.Cut(strings.ToLower(strings.TrimSuffix(p.DNSName, ".")), ".")
		if s.Name == "" {
			s.Name = p.HostName
		}
		if p.Tags != nil {
			s.Tags = p.Tags.AsSlice()
		}
	}
	return s, nil
}

// Whois asks the host's tailscaled who is behind remoteAddr; see
// Node.Whois.
func (h *Host) Whois(ctx context.Context, remoteAddr string) (Identity, error) {
	return whois(ctx, h.lc, remoteAddr)
}

// LookupIP resolves a tailnet host name from the host's network map; see
// Node.LookupIP.
func (h *Host) LookupIP(ctx context.Context, host string) (netip.Addr, error) {
	return lookupIP(ctx, h.lc, host)
}

// DialContext dials addr ("host:port") on the tailnet. A host name the
// tailnet knows is resolved from the network map (no MagicDNS needed on
// the host); other names are left to the host's resolver, or to the
// proxy. It fits http.Transport.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mesh: dial %s: %w", addr, err)
	}
	ip, err := h.LookupIP(ctx, host)
	switch {
	case err == nil:
		addr = net.JoinHostPort(ip.String(), port)
	case !errors.Is(err, ErrUnknownHost):
		return nil, err
	}
	if h.proxy == "" {
		return h.direct.DialContext(ctx, network, addr)
	}
	d, err := proxy.SOCKS5("tcp", h.proxy, nil, &h.direct)
	if err != nil {
		return nil, fmt.Errorf("mesh: socks5 proxy %s: %w", h.proxy, err)
	}
	c, err := d.(proxy.ContextDialer).DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("mesh: dial %s through tailscaled's proxy %s: %w", addr, h.proxy, err)
	}
	return c, nil
}
