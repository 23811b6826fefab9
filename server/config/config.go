// Package config holds slipway-server's configuration: defaults, the TOML
// file (/etc/slipway/server.toml), and validation. Unknown keys are errors.
// metrics_listen is the Prometheus endpoint's own address (default
// 127.0.0.1:9431, "" disables it). On SIGHUP the server re-reads the file
// and applies admin_token and log_level (see server/daemon).
// Admin tokens are configured by their sha256 or by a file holding the
// token; the token itself is never logged. [tailscale] (default off) also
// serves the API on a tailnet node of its own.
package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"time"

	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// DefaultPath is where slipway-server looks for its config.
const DefaultPath = "/etc/slipway/server.toml"

// DefaultListen is the default address of the API (loopback: production
// exposes the server over the tailnet, not on a public interface).
const DefaultListen = "127.0.0.1:7420"

// AdminToken configures one admin bearer token.
type AdminToken struct {
	Name   string `toml:"name"`
	Role   string `toml:"role"`   // viewer, deployer, admin
	SHA256 string `toml:"sha256"` // hex sha256 of the token (slipway-server hash-token)
	File   string `toml:"file"`   // or: a file holding the token (0600)
}

// Server is the configuration.
type Server struct {
	Listen       string       `toml:"listen"`
	AgentSocket  string       `toml:"agent_socket"`
	StateDir     string       `toml:"state_dir"`
	OfflineAfter Duration     `toml:"offline_after"`
	DriftAfter   Duration     `toml:"drift_after"`
	LogLevel     string       `toml:"log_level"`
	AdminTokens  []AdminToken `toml:"admin_token"`

	// MetricsListen is the address of the Prometheus endpoint, /metrics
	// (host:port; "" disables it). It is a listener of its own so that
	// metrics never share the admin API's authentication: keep it on
	// loopback or a monitoring network.
	MetricsListen string `toml:"metrics_listen"`

	// Tailscale serves the API on a tailnet node of its own as well
	// (default off; see shared/mesh).
	Tailscale Tailscale `toml:"tailscale"`
}

// Tailscale is the [tailscale] section: the server as a tsnet node. Agent
// requests that arrive over it are authorised by WhoIs (the peer must carry
// agent_tag and acts only for its own host name) instead of node tokens;
// enrolment and admin bearer tokens work as on listen.
type Tailscale struct {
	Enabled     bool   `toml:"enabled"`
	Hostname    string `toml:"hostname"`      // MagicDNS name; default "slipway"
	ControlURL  string `toml:"control_url"`   // "" = Tailscale; Headscale's server_url
	AuthKeyFile string `toml:"auth_key_file"` // "" = TS_AUTHKEY or an authorised state
	StateDir    string `toml:"state_dir"`     // default <state_dir>/tailscale
	AgentTag    string `toml:"agent_tag"`     // default tag:slipway-agent
	Listen      string `toml:"listen"`        // on the tailnet; default ":80"
}

// TailscaleStateDir is the tsnet state directory: tailscale.state_dir or
// <state_dir>/tailscale.
func (c Server) TailscaleStateDir() string {
	if c.Tailscale.StateDir != "" {
		return c.Tailscale.StateDir
	}
	return filepath.Join(c.StateDir, "tailscale")
}

// DefaultMetricsListen is the default metrics_listen (loopback).
const DefaultMetricsListen = "127.0.0.1:9431"

// Default returns the defaults.
func Default() Server {
	return Server{
		Listen:       DefaultListen,
		StateDir:     "/var/lib/slipway-server",
		OfflineAfter: Duration(3 * time.Minute),
		DriftAfter:   Duration(2 * time.Minute),
		LogLevel:     "info",

		MetricsListen: DefaultMetricsListen,
		Tailscale:     Tailscale{Hostname: "slipway", AgentTag: "tag:slipway-agent", Listen: ":80"},
	}
}

// Load reads path over the defaults; a missing default file is not an error.
func Load(path string, explicit bool) (Server, error) {
	c := Default()
	err := tomlconfig.Load(path, explicit, &c)
	return c, err
}

var (
	shaRe  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	tagRe  = regexp.MustCompile(`^tag:[A-Za-z0-9][A-Za-z0-9-]*$`)
)

// Validate reports every problem of c.
func (c Server) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %q: %v", c.Listen, err))
	}
	if c.AgentSocket != "" && !filepath.IsAbs(c.AgentSocket) {
		errs = append(errs, fmt.Errorf("agent_socket: %q must be an absolute path", c.AgentSocket))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state_dir: %q must be an absolute path", c.StateDir))
	}
	if c.OfflineAfter <= 0 || c.DriftAfter <= 0 {
		errs = append(errs, errors.New("offline_after and drift_after must be positive"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q, want debug, info, warn or error", c.LogLevel))
	}
	seen := map[string]bool{}
	for i, t := range c.AdminTokens {
		where := fmt.Sprintf("admin_token[%d]", i)
		if !nameRe.MatchString(t.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q", where, t.Name))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q given twice", where, t.Name))
		}
		seen[t.Name] = true
		switch t.Role {
		case "viewer", "deployer", "admin":
		default:
			errs = append(errs, fmt.Errorf("%s.role: %q, want viewer, deployer or admin", where, t.Role))
		}
		if (t.SHA256 == "") == (t.File == "") {
			errs = append(errs, fmt.Errorf("%s: set exactly one of sha256 and file", where))
		}
		if t.SHA256 != "" && !shaRe.MatchString(t.SHA256) {
			errs = append(errs, fmt.Errorf("%s.sha256: want 64 lowercase hex characters", where))
		}
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen: %q: %v (\"\" disables metrics)", c.MetricsListen, err))
		} else if c.MetricsListen == c.Listen && port != "0" {
			errs = append(errs, fmt.Errorf("metrics_listen: %q is the API's listen address; metrics need an address of their own", c.MetricsListen))
		}
	}
	if ts := c.Tailscale; ts.Enabled {
		if !hostRe.MatchString(ts.Hostname) {
			errs = append(errs, fmt.Errorf("tailscale.hostname: %q, want a DNS label", ts.Hostname))
		}
		if ts.StateDir != "" && !filepath.IsAbs(ts.StateDir) {
			errs = append(errs, fmt.Errorf("tailscale.state_dir: %q must be an absolute path", ts.StateDir))
		}
		if ts.AuthKeyFile != "" && !filepath.IsAbs(ts.AuthKeyFile) {
			errs = append(errs, fmt.Errorf("tailscale.auth_key_file: %q must be an absolute path", ts.AuthKeyFile))
		}
		if !tagRe.MatchString(ts.AgentTag) {
			errs = append(errs, fmt.Errorf("tailscale.agent_tag: %q, want tag:name", ts.AgentTag))
		}
		if _, _, err := net.SplitHostPort(ts.Listen); err != nil {
			errs = append(errs, fmt.Errorf("tailscale.listen: %q: %v", ts.Listen, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// Duration is a time.Duration read from a TOML string like "90s".
type Duration = tomlconfig.Duration
