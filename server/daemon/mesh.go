package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// meshEndpoint serves the API on the server's own tailnet node
// ([tailscale]): the same front (reloads, metrics, drain) as listen, with
// agent requests, enrolment without a join token and admin requests
// without a bearer token authorised by WhoIs. tailscale.roles is applied
// again on reloads (setRoles).
type meshEndpoint struct {
	lns      []net.Listener
	node     *mesh.Node // the server's tsnet node; nil with the host's tailscaled
	hostIP   netip.Addr // the host tailscaled's IPv4 (mode "host")
	srv      *http.Server
	guard    *guard
	auth     *httpapi.MeshAuth
	agentTag string
	log      zerolog.Logger
}

// startMesh brings the tailnet node up (it waits for the control server;
// ctx ends the wait) and listens on tailscale.listen.
func startMesh(ctx context.Context, c config.Server, fr *front, g *guard, log zerolog.Logger) (*meshEndpoint, error) {
	ts := c.Tailscale
	authz, err := mesh.NewAuthorizer(ts.AgentTag, ts.Roles)
	if err != nil {
		return nil, fmt.Errorf("tailscale.roles: %w", err)
	}
	var me *meshEndpoint
	var whois func(context.Context, string) (mesh.Identity, error)
	hostname := ts.Hostname
	if c.TailscaleMode() == config.TailscaleModeHost {
		h, err := mesh.NewHost(mesh.HostConfig{Socket: ts.Socket})
		if err != nil {
			return nil, fmt.Errorf("tailscale: %w", err)
		}
		self, lns, err := listenHost(ctx, h, ts.Listen, log)
		if err != nil {
			return nil, fmt.Errorf("tailscale: %w", err)
		}
		me, whois, hostname = &meshEndpoint{lns: lns, hostIP: hostIPv4(self.IPs)}, h.Whois, self.Name
	} else {
		ln, err := mesh.Listen(ctx, mesh.Config{
			Hostname: ts.Hostname, ControlURL: ts.ControlURL, AuthKeyFile: ts.AuthKeyFile,
			StateDir: c.TailscaleStateDir(), Addr: ts.Listen, Log: log,
		})
		if err != nil {
			return nil, fmt.Errorf("tailscale: %w", err)
		}
		me, whois = &meshEndpoint{lns: []net.Listener{ln.Listener}, node: ln.Node}, ln.Whois
	}
	ma := &httpapi.MeshAuth{Whois: whois, Authz: authz}
	me.srv = g.server(fr, func(net.Listener) context.Context { return httpapi.WithMesh(fr.base, ma) })
	me.guard, me.auth, me.agentTag, me.log = g, ma, ts.AgentTag, log
	addrs := make([]string, len(me.lns))
	for i, l := range me.lns {
		addrs[i] = l.Addr().String()
	}
	log.Info().Str("mode", c.TailscaleMode()).Str("hostname", hostname).Str("listen", ts.Listen).Strs("addrs", addrs).
		Str("agent_tag", authz.AgentTag()).Int("roles", len(ts.Roles)).Msg("serving the API on the tailnet")
	return me, nil
}

// setRoles applies a reloaded tailscale.roles to the requests that follow.
func (m *meshEndpoint) setRoles(roles map[string]string) error {
	authz, err := mesh.NewAuthorizer(m.agentTag, roles)
	if err != nil {
		return fmt.Errorf("tailscale.roles: %w", err)
	}
	m.auth.SetAuthz(authz)
	return nil
}

// serve serves until shutdown; nil serves nothing.
func (m *meshEndpoint) serve(errc chan<- error) {
	if m == nil {
		return
	}
	for _, l := range m.lns {
		go func() { errc <- m.srv.Serve(m.guard.listener(l)) }()
	}
}

// shutdown starts closing the listener and the node, letting requests in
// flight finish until ctx ends; the node closes once inUse (gossip over it)
// is closed too (nil: not in use). The returned func waits for it.
func (m *meshEndpoint) shutdown(ctx context.Context, inUse <-chan struct{}) (wait func()) {
	if m == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.srv.Shutdown(ctx); err != nil {
			_ = m.srv.Close()
		}
		if inUse != nil {
			<-inUse
		}
		if m.node == nil {
			return // the host's tailscaled is not ours to stop
		}
		if err := m.node.Close(); err != nil {
			m.log.Warn().Err(err).Msg("tailscale node close")
		}
	}()
	return func() { <-done }
}

// hostSelf is what listenHost needs of the host's tailscaled; *mesh.Host
// has it.
type hostSelf interface {
	Self(ctx context.Context) (mesh.Self, error)
	Socket() string
}

// hostWaitLog is the time between two logs while the server waits for the
// host's tailscaled.
var hostWaitLog = 15 * time.Second

// listenHost waits until the host's tailscaled is on the tailnet (ctx
// ends the wait) and listens on its tailnet addresses with listen's port
// (or on listen's IP alone). The host needs a tailnet interface: a
// tailscaled in userspace networking is refused.
func listenHost(ctx context.Context, h hostSelf, listen string, log zerolog.Logger) (mesh.Self, []net.Listener, error) {
	self, err := waitHost(ctx, h, log)
	if err != nil {
		return self, nil, err
	}
	if !self.TUN {
		return self, nil, fmt.Errorf("the host's tailscaled (%s) runs in userspace networking: there is no tailnet address to listen on; run it with a TUN device, or use mode = \"tsnet\"", h.Socket())
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return self, nil, fmt.Errorf("listen %q: %w", listen, err)
	}
	ips := self.IPs
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !slices.Contains(self.IPs, ip) {
			return self, nil, fmt.Errorf("listen %q: %s is not one of the host's tailnet addresses %v", listen, host, self.IPs)
		}
		ips = []netip.Addr{ip}
	}
	if len(ips) == 0 {
		return self, nil, errors.New("the host's tailscaled reports no tailnet address")
	}
	var lns []net.Listener
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), port))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			if errors.Is(err, syscall.EACCES) {
				err = fmt.Errorf("%w (a port below 1024 needs CAP_NET_BIND_SERVICE: AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or a port of 1024 or above in tailscale.listen, with the agents' server = \"http://<name>:<port>\")", err)
			}
			return self, nil, fmt.Errorf("listen on the tailnet: %w", err)
		}
		lns = append(lns, l)
	}
	return self, lns, nil
}

// waitHost asks the host's tailscaled every second until it is on the
// tailnet, logging the wait every hostWaitLog.
func waitHost(ctx context.Context, h hostSelf, log zerolog.Logger) (mesh.Self, error) {
	start, lastLog := time.Now(), time.Time{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		self, err := h.Self(ctx)
		if err == nil && self.Running() {
			return self, nil
		}
		if time.Since(lastLog) >= hostWaitLog {
			lastLog = time.Now()
			ev := log.Warn().Str("socket", h.Socket()).Dur("waited", time.Since(start).Round(time.Second))
			if err != nil {
				ev = ev.Err(err).Str("hint", "is tailscaled running, and is tailscale.socket its LocalAPI socket?")
			} else {
				ev = ev.Str("state", self.State).Str("hint", "log the host in with `tailscale up`")
			}
			ev.Msg("waiting for the host's tailscaled to be on the tailnet")
		}
		select {
		case <-ctx.Done():
			return mesh.Self{}, ctx.Err()
		case <-t.C:
		}
	}
}

// hostIPv4 is the first IPv4 of ips (invalid when none).
func hostIPv4(ips []netip.Addr) netip.Addr {
	for _, ip := range ips {
		if ip.Is4() {
			return ip
		}
	}
	return netip.Addr{}
}
