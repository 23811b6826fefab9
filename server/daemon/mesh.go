package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// meshEndpoint serves the API on the server's own tailnet node
// ([tailscale]): the same front (reloads, metrics, drain) as listen, with
// agent requests authorised by WhoIs.
type meshEndpoint struct {
	ln  *mesh.Listener
	srv *http.Server
	log zerolog.Logger
}

// startMesh brings the tailnet node up (it waits for the control server;
// ctx ends the wait) and listens on tailscale.listen.
func startMesh(ctx context.Context, c config.Server, fr *front, log zerolog.Logger) (*meshEndpoint, error) {
	ts := c.Tailscale
	authz, err := mesh.NewAuthorizer(ts.AgentTag, nil)
	if err != nil {
		return nil, err
	}
	ln, err := mesh.Listen(ctx, mesh.Config{
		Hostname: ts.Hostname, ControlURL: ts.ControlURL, AuthKeyFile: ts.AuthKeyFile,
		StateDir: c.TailscaleStateDir(), Addr: ts.Listen, Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("tailscale: %w", err)
	}
	ma := &httpapi.MeshAuth{Whois: ln.Whois, Authz: authz}
	srv := &http.Server{Handler: fr, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return httpapi.WithMesh(fr.base, ma) }}
	log.Info().Str("hostname", ts.Hostname).Str("listen", ts.Listen).Str("agent_tag", authz.AgentTag()).Msg("serving the API on the tailnet")
	return &meshEndpoint{ln: ln, srv: srv, log: log}, nil
}

// serve serves until shutdown; nil serves nothing.
func (m *meshEndpoint) serve(errc chan<- error) {
	if m != nil {
		go func() { errc <- m.srv.Serve(m.ln) }()
	}
}

// shutdown starts closing the listener and the node, letting requests in
// flight finish until ctx ends; the returned func waits for it.
func (m *meshEndpoint) shutdown(ctx context.Context) (wait func()) {
	if m == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.srv.Shutdown(ctx); err != nil {
			_ = m.srv.Close()
		}
		if err := m.ln.Node.Close(); err != nil {
			m.log.Warn().Err(err).Msg("tailscale node close")
		}
	}()
	return func() { <-done }
}
