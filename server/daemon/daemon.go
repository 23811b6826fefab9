// Package daemon wires slipway-server together: config, the store (bbolt
// in state_dir, or etcd shared by several servers, one of them the
// elected leader that runs the rollout engine and the other work that runs
// once: store.go, leader.go), the blob store (shared through etcd there), the registry and the HTTP API on a TCP
// address (admin and agents) and optionally a unix socket (agents on the
// same machine or in containers it is bind-mounted into), and with [tailscale] on a tailnet
// node of its own, or (mode "host") on the tailnet addresses of the host's
// tailscaled, where agents and admins are identified by WhoIs (mesh.go). With [gossip] it is a serf member that records the nodes'
// liveness and wakes agents when their desired generation changes
// (gossip.go). With [ui] on (the default) it serves the web dashboard at
// /ui/ on every listener of the admin API (server/ui). It shuts down gracefully when its context ends. It is also
// the server's command line.
//
// Operations (ops.go): sd_notify READY/WATCHDOG/STOPPING under systemd
// (Type=notify), SIGHUP reloads admin tokens, the log level,
// tailscale.roles and the TLS certificate without dropping connections, Prometheus metrics on
// metrics_listen (an address of their own, server/metrics), and the
// shutdown sequence.
//
// HTTP limits ([limits]: timeouts, connection caps, the unauthenticated
// rate limit) are in limits.go; HTTPS on listen in tls.go; the agent
// socket's mode and group in socket.go.
//
// It never logs tokens or configuration values that hold secrets.
package daemon

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/gossip"
)

// Version is set at build time.
var Version = "dev"

// Options of Serve. See ops.go for sd_notify, reloads, metrics and the
// shutdown sequence.
type Options struct {
	Spec []byte
	// Ready, when set, is called with the API's address once every
	// listener is open.
	Ready func(addr string)
	// MetricsReady, when set, is called with the metrics address once it
	// listens (metrics_listen set).
	MetricsReady func(addr string)
	// Notify, when set, receives sd_notify states (READY=1, WATCHDOG=1,
	// RELOADING=1, STOPPING=1).
	Notify func(state string)
	// Watchdog is the sd_notify watchdog period (WatchdogSec); 0: none.
	Watchdog time.Duration
	// Reload delivers reload requests (SIGHUP); Load reads the config for
	// them (nil: reloads are refused and logged).
	Reload <-chan os.Signal
	Load   func() (config.Server, error)
	// Level is the level of log, changed by reloads (see LevelLogger);
	// nil: log_level needs a restart.
	Level *LogLevel
	// GossipIntervals are the gossip member's timers (zero: serf's LAN
	// defaults); tests shrink them (gossip.TestIntervals).
	GossipIntervals gossip.Intervals
	// GossipReady, when set, is called with the gossip member's address
	// ("ip:port", for others to join) once it runs ([gossip] enabled).
	GossipReady func(addr string)
}

// auditConfig is the registry's view of [audit].
func auditConfig(a config.Audit) registry.AuditConfig {
	return registry.AuditConfig{MaxEvents: a.MaxEvents, MaxAge: time.Duration(a.MaxAge), RefusalWindow: time.Duration(a.RefusalWindow)}
}

// startCerts loads tls_cert_file and tls_key_file (nil without them).
func startCerts(c config.Server, log zerolog.Logger) (*certs, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	tc, err := loadCerts(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	subject, notAfter, expired := validity(tc.leaf(), time.Now())
	ev := log.Info()
	if expired {
		ev = log.Warn()
	}
	ev.Str("subject", subject).Time("not_after", notAfter).Bool("expired", expired).Msg("serving HTTPS on listen")
	return tc, nil
}

// openListeners opens listen (over TLS with tc) and agent_socket, each
// counted by g's connection caps. api is listen's TCP listener (its
// address is the API's); all are the ones to serve.
func openListeners(c config.Server, g *guard, tc *certs) (api net.Listener, all []net.Listener, err error) {
	mode, err := c.SocketMode()
	if err != nil {
		return nil, nil, err
	}
	api, err = net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	served := g.listener(api)
	if tc != nil {
		served = tls.NewListener(served, tc.config())
	}
	all = []net.Listener{served}
	if c.AgentSocket != "" {
		uln, err := listenSocket(c.AgentSocket, mode, c.AgentSocketGroup)
		if err != nil {
			api.Close()
			return nil, nil, err
		}
		all = append(all, g.listener(uln))
	}
	return api, all, nil
}

func adminTokens(cs []config.AdminToken) ([]httpapi.AdminToken, error) {
	var out []httpapi.AdminToken
	for _, t := range cs {
		sum := t.SHA256
		if t.File != "" {
			b, err := os.ReadFile(t.File)
			if err != nil {
				return nil, fmt.Errorf("admin token %s: %w", t.Name, err)
			}
			tok := strings.TrimSpace(string(b))
			if len(tok) < 16 {
				return nil, fmt.Errorf("admin token %s: the token in %s is shorter than 16 characters", t.Name, t.File)
			}
			sum = httpapi.HashToken(tok)
		}
		out = append(out, httpapi.AdminToken{Name: t.Name, Role: t.Role, SHA256: sum})
	}
	return out, nil
}

// Logger builds the server's logger: JSON, or console format on a TTY
// (format "auto"). Its level is fixed; see LevelLogger for one a reload
// can change.
func Logger(w io.Writer, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	lv := &LogLevel{}
	lv.Set(lvl)
	return LevelLogger(w, lv, format)
}
