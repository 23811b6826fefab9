package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"

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
	ln       *mesh.Listener
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
	ln, err := mesh.Listen(ctx, mesh.Config{
		Hostname: ts.Hostname, ControlURL: ts.ControlURL, AuthKeyFile: ts.AuthKeyFile,
		StateDir: c.TailscaleStateDir(), Addr: ts.Listen, Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("tailscale: %w", err)
	}
	ma := &httpapi.MeshAuth{Whois: ln.Whois, Authz: authz}
	srv := g.server(fr, func(net.Listener) context.Context { return httpapi.WithMesh(fr.base, ma) })
	log.Info().Str("hostname", ts.Hostname).Str("listen", ts.Listen).Str("agent_tag", authz.AgentTag()).Int("roles", len(ts.Roles)).Msg("serving the API on the tailnet")
	return &meshEndpoint{ln: ln, srv: srv, guard: g, auth: ma, agentTag: ts.AgentTag, log: log}, nil
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
	if m != nil {
		go func() { errc <- m.srv.Serve(m.guard.listener(m.ln)) }()
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
		if err := m.ln.Node.Close(); err != nil {
			m.log.Warn().Err(err).Msg("tailscale node close")
		}
	}()
	return func() { <-done }
}
