// Package mesh is slipway's transport and identity layer on a Tailscale (or
// Headscale) tailnet: a tsnet node that listens for the server or dials for
// an agent, WhoIs lookups that turn a peer address into an Identity, and the
// Authorizer that decides from an Identity what a caller may do. A Node's
// stream and packet listeners and its dialer (Listen, ListenPacket,
// DialContext, with IPv4 for the address to bind) also carry serf gossip
// when the node is its own tsnet node: a *Node is a gossip.Net. A Host is
// the host's own tailscaled instead, reached through its LocalAPI socket:
// the same identity and WhoIs, and a dialer onto the host's tailnet (its
// TUN interface, or tailscaled's SOCKS5 proxy in userspace networking).
//
// It must never trust anything a peer says about itself (headers, bodies,
// path names): identity comes only from the tailnet's WhoIs. It never logs an
// auth key.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tsnet"
)

// DefaultAgentTag is the tag an agent's node must carry.
const DefaultAgentTag = "tag:slipway-agent"

// ErrNoIdentity is returned by Whois when the address is not a tailnet peer
// (or the tailnet does not know it).
var ErrNoIdentity = errors.New("mesh: no tailnet identity for address")

// Config describes one tsnet node.
type Config struct {
	Hostname    string   // tailnet host name (MagicDNS label), e.g. "slipway"
	ControlURL  string   // "" = Tailscale's; Headscale's server_url otherwise
	AuthKeyFile string   // file holding the auth key; "" = TS_AUTHKEY or an already-authorised state
	StateDir    string   // persistent node state; required
	Tags        []string // tags the node advertises, e.g. ["tag:slipway-agent"]
	Ephemeral   bool     // node goes away when it disconnects
	Addr        string   // listen address on the tailnet for Listen; default ":80"

	// Store overrides the state store (tests: a mem.Store, which needs
	// Ephemeral). Nil means files under StateDir.
	Store ipn.StateStore
	// Log receives the node's user-facing messages; the zero Logger discards.
	Log zerolog.Logger
}

// Identity is what the tailnet says about a peer.
type Identity struct {
	NodeName string   // the node's computed host name (first MagicDNS label)
	Tags     []string // ACL tags; a tagged node has no user identity
	User     string   // login name of the owning user; "" for tagged nodes
}

// Tagged reports whether the identity carries tag.
func (id Identity) Tagged(tag string) bool {
	for _, t := range id.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// Node is a running tsnet node.
type Node struct {
	srv *tsnet.Server
	lc  *local.Client
}

// Up starts a tsnet node and waits until it is connected to the tailnet
// (or ctx ends).
func Up(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Hostname == "" {
		return nil, errors.New("mesh: hostname is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("mesh: state_dir is required")
	}
	for _, t := range cfg.Tags {
		if !strings.HasPrefix(t, "tag:") || len(t) == len("tag:") {
			return nil, fmt.Errorf("mesh: tag %q: must look like tag:name", t)
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("mesh: state dir: %w", err)
	}
	var key string
	if cfg.AuthKeyFile != "" {
		b, err := os.ReadFile(cfg.AuthKeyFile)
		if err != nil {
			return nil, fmt.Errorf("mesh: auth key file: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return nil, fmt.Errorf("mesh: auth key file %s is empty", cfg.AuthKeyFile)
		}
	}
	log := cfg.Log.With().Str("component", "mesh").Str("hostname", cfg.Hostname).Logger()
	srv := &tsnet.Server{
		Dir:           cfg.StateDir,
		Store:         cfg.Store,
		Hostname:      cfg.Hostname,
		ControlURL:    cfg.ControlURL,
		AuthKey:       key,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.Tags,
		Logf:          func(string, ...any) {}, // backend chatter
		UserLogf: func(format string, args ...any) {
			log.Info().Msg(strings.TrimSpace(fmt.Sprintf(format, args...)))
		},
	}
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		return nil, fmt.Errorf("mesh: up %s: %w", cfg.Hostname, err)
	}
	lc, err := srv.LocalClient()
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("mesh: local client: %w", err)
	}
	return &Node{srv: srv, lc: lc}, nil
}

// Listen opens a stream listener ("tcp", "tcp4", "tcp6") on the node's
// tailnet addresses (addr like ":80", or "ip:port" for one of them). With
// ListenPacket and DialContext it makes a Node a gossip.Net.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	ln, err := n.srv.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen %s: %w", addr, err)
	}
	return ln, nil
}

// ListenPacket opens a packet listener ("udp", "udp4", "udp6") on the
// node's tailnet. tsnet needs a concrete IP in addr ("100.64.0.1:7946", see
// IPv4); ":port" is refused.
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := n.srv.ListenPacket(network, addr)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen packet %s: %w", addr, err)
	}
	return pc, nil
}

// IPv4 is the node's tailnet IPv4 address.
func (n *Node) IPv4() (netip.Addr, error) {
	v4, _ := n.srv.TailscaleIPs()
	if !v4.IsValid() {
		return netip.Addr{}, errors.New("mesh: node has no tailnet IPv4 address")
	}
	return v4, nil
}

// ErrUnknownHost is returned by LookupIP for a name no node of the tailnet
// (as this node sees it) carries.
var ErrUnknownHost = errors.New("mesh: no tailnet node with that name")

// LookupIP resolves a tailnet host name, as MagicDNS would ("slipway" or
// "slipway.example.ts.net"), to that node's tailnet IPv4 from this node's
// network map; an IP literal comes back as is. It needs no DNS on the host
// (a tsnet node has none), so gossip can join "slipway:7946". It returns
// ErrUnknownHost for names the tailnet does not know.
func (n *Node) LookupIP(ctx context.Context, host string) (netip.Addr, error) {
	return lookupIP(ctx, n.lc, host)
}

// statusReader is the LocalAPI call lookupIP needs; *local.Client has it.
type statusReader interface {
	Status(ctx context.Context) (*ipnstate.Status, error)
}

// lookupIP resolves host from lc's view of the tailnet (see LookupIP).
func lookupIP(ctx context.Context, lc statusReader, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	want := strings.ToLower(strings.TrimSuffix(host, "."))
	st, err := lc.Status(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("mesh: lookup %s: %w", host, err)
	}
	nodes := []*ipnstate.PeerStatus{st.Self}
	for _, p := range st.Peer {
		nodes = append(nodes, p)
	}
	for _, p := range nodes {
		if p == nil {
			continue
		}
		fqdn := strings.ToLower(strings.TrimSuffix(p.DNSName, "."))
		short, _, _ := strings.Cut(fqdn, ".")
		if fqdn == "" || (want != fqdn && want != short) {
			continue
		}
		for _, ip := range p.TailscaleIPs {
			if ip.Is4() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s", ErrUnknownHost, host)
}

// DialContext dials addr ("host:port", host may be a MagicDNS name) over the
// tailnet. It fits http.Transport.DialContext.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.srv.Dial(ctx, network, addr)
}

// Whois asks the tailnet who is behind remoteAddr ("ip:port", as in
// http.Request.RemoteAddr). It returns ErrNoIdentity for unknown peers.
func (n *Node) Whois(ctx context.Context, remoteAddr string) (Identity, error) {
	return whois(ctx, n.lc, remoteAddr)
}

// whoisReader is the LocalAPI call whois needs; *local.Client has it.
type whoisReader interface {
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
}

// whois asks lc who is behind remoteAddr (see Node.Whois).
func whois(ctx context.Context, lc whoisReader, remoteAddr string) (Identity, error) {
	who, err := lc.WhoIs(ctx, remoteAddr)
	if err != nil {
		if errors.Is(err, local.ErrPeerNotFound) {
			return Identity{}, fmt.Errorf("%w %s", ErrNoIdentity, remoteAddr)
		}
		return Identity{}, fmt.Errorf("mesh: whois %s: %w", remoteAddr, err)
	}
	if who == nil || who.Node == nil {
		return Identity{}, fmt.Errorf("%w %s", ErrNoIdentity, remoteAddr)
	}
	id := Identity{NodeName: who.Node.ComputedName, Tags: append([]string(nil), who.Node.Tags...)}
	if id.NodeName == "" && who.Node.Hostinfo.Valid() {
		id.NodeName = who.Node.Hostinfo.Hostname()
	}
	// A tagged node's identity is its tags; the user who created it
	// (testcontrol keeps a login, production says "tagged-devices") must
	// not grant it that user's roles.
	if !who.Node.IsTagged() && who.UserProfile != nil {
		id.User = who.UserProfile.LoginName
	}
	return id, nil
}

// Close stops the node.
func (n *Node) Close() error { return n.srv.Close() }

// Listener is a tailnet listener that can say who is on the other end.
type Listener struct {
	net.Listener
	Node *Node
}

// Listen starts a node for cfg and listens on cfg.Addr (default ":80").
// Closing the Listener stops the node.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	n, err := Up(ctx, cfg)
	if err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = ":80"
	}
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		n.Close()
		return nil, err
	}
	return &Listener{Listener: ln, Node: n}, nil
}

// Whois is Node.Whois.
func (l *Listener) Whois(ctx context.Context, remoteAddr string) (Identity, error) {
	return l.Node.Whois(ctx, remoteAddr)
}

// Close closes the listener and stops the node.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	if cerr := l.Node.Close(); err == nil {
		err = cerr
	}
	return err
}
