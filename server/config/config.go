// Package config holds slipway-server's configuration: defaults, the TOML
// file (/etc/slipway/server.toml), and validation. Unknown keys are errors.
// metrics_listen is the Prometheus endpoint's own address (default
// 127.0.0.1:9431, "" disables it). On SIGHUP the server re-reads the file
// and applies admin_token and log_level (see server/daemon).
// Admin tokens are configured by their sha256 or by a file holding the
// token; the token itself is never logged. [tailscale] (default off) also
// serves the API on a tailnet node of its own, where [tailscale.roles] maps
// tailnet users and tags to admin roles. [gossip] (default off) makes the
// server a serf member: node liveness and desired-changed wake-ups. Gossip
// refuses to run unencrypted unless told so (insecure_no_encryption).
// [audit] bounds the audit log (retention, refusal aggregation, event
// streams per caller); its defaults are in Default. [ui] serves the web
// dashboard at /ui/ (default on). [[target_group]] sets maintenance
// windows for the rollouts of a target group; [[notify]] a webhook told
// about rollout transitions. [store] chooses bbolt (default) or etcd for
// the server's state (store.go).
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

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
	Listen       string   `toml:"listen"`
	AgentSocket  string   `toml:"agent_socket"`
	StateDir     string   `toml:"state_dir"`
	OfflineAfter Duration `toml:"offline_after"`
	DriftAfter   Duration `toml:"drift_after"`
	// AgentWriteLimit bounds the agent writes (enrol, status report,
	// confirm) the server works on at once; one more is answered 429 with
	// Retry-After, which agents retry without reverting (1 to 100000).
	AgentWriteLimit int `toml:"agent_write_limit"`
	// AgentWriteWait is how long an agent write beyond agent_write_limit
	// waits for a slot before it is answered 429 (0: at once; at most 30s).
	AgentWriteWait Duration     `toml:"agent_write_wait"`
	LogLevel       string       `toml:"log_level"`
	AdminTokens    []AdminToken `toml:"admin_token"`

	// MetricsListen is the address of the Prometheus endpoint, /metrics
	// (host:port; "" disables it). It is a listener of its own so that
	// metrics never share the admin API's authentication: keep it on
	// loopback or a monitoring network.
	MetricsListen string `toml:"metrics_listen"`

	// Tailscale serves the API on a tailnet node of its own as well
	// (default off; see shared/mesh).
	Tailscale Tailscale `toml:"tailscale"`

	// Gossip makes the server a serf member (default off; see
	// shared/gossip).
	Gossip Gossip `toml:"gossip"`

	// TLSCertFile and TLSKeyFile (PEM; both or neither) serve listen over
	// HTTPS. The pair is read at start (an error names the file and what
	// is wrong with it) and again on every reload (SIGHUP); a pair that
	// fails to load on a reload is logged and the running one kept.
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`

	// AgentSocketMode is the agent socket's file mode (octal string,
	// default "0660"), set when it is created, not taken from the umask.
	AgentSocketMode string `toml:"agent_socket_mode"`
	// AgentSocketGroup is the agent socket's group (a name or a number; ""
	// = the server's own group). The server must be a member of it.
	AgentSocketGroup string `toml:"agent_socket_group"`

	// Limits bounds what HTTP clients can take from the server.
	Limits Limits `toml:"limits"`

	// Audit bounds the audit log.
	Audit Audit `toml:"audit"`

	// UI is the web dashboard at /ui/ (server/ui).
	UI UI `toml:"ui"`

	// TargetGroups are per-group rollout policies: maintenance windows
	// (groups.go). Read at start.
	TargetGroups []TargetGroup `toml:"target_group"`

	// Notify are webhooks told about rollout transitions (notify.go).
	// Read at start.
	Notify []Notify `toml:"notify"`

	// Store is where the state is kept: bbolt in state_dir (default) or
	// etcd (store.go).
	Store Store `toml:"store"`

	// Prometheus is what the analysis gates of releases query
	// (prometheus.go). Read at start.
	Prometheus Prometheus `toml:"prometheus"`
}

// UI is the [ui] section: the dashboard served at /ui/ on listen (and on
// the tailnet listener). On listen an operator logs in with an admin
// token and gets a server-side session; over the tailnet the caller's
// identity and [tailscale.roles] apply with no login.
type UI struct {
	// Enabled serves the dashboard (default true).
	Enabled bool `toml:"enabled"`
	// SessionTTL is how long a login lasts (default 12h; 1m to 720h).
	// Sessions live in the server's memory: a restart logs everyone out.
	SessionTTL Duration `toml:"session_ttl"`
}

// UI defaults and bounds.
const (
	DefaultUISessionTTL = 12 * time.Hour
	MinUISessionTTL     = time.Minute
	MaxUISessionTTL     = 720 * time.Hour
)

// Audit is the [audit] section: the audit log stays bounded in size and
// cheap to read, whatever callers do.
type Audit struct {
	// MaxEvents is the most events kept; the oldest beyond it are pruned
	// (every minute). 1 to MaxAuditEvents.
	MaxEvents int `toml:"max_events"`
	// MaxAge prunes events older than this ("0s": no age limit).
	MaxAge Duration `toml:"max_age"`
	// RefusalWindow aggregates refused requests (401/403): the first per
	// source address, caller and reason in a window is an event at once,
	// the rest one event with their count when the window ends. 1s to 1h.
	RefusalWindow Duration `toml:"refusal_window"`
	// MaxStreams is how many event streams (GET /v1/events/stream) one
	// caller may hold open at once; one more is 429. 1 to 1000. Read at
	// start (a reload keeps the running value).
	MaxStreams int `toml:"max_streams"`
}

// Audit defaults and bounds.
const (
	DefaultAuditMaxEvents     = 100000
	DefaultAuditMaxAge        = 90 * 24 * time.Hour
	DefaultAuditRefusalWindow = time.Minute
	DefaultAuditMaxStreams    = 4
	MaxAuditEvents            = 100000000
)

// Tailscale is the [tailscale] section: the server as a tsnet node. Agent
// requests that arrive over it are authorised by WhoIs (the peer must carry
// agent_tag and acts only for its own host name) instead of node tokens,
// and so is enrolment without a join token. Admin requests with a bearer
// token are authorised by the token as on listen; without one, by the role
// Roles gives the caller's tailnet user or one of its tags.
//
// With Mode "host" the server uses the host's own tailscaled instead of a
// tsnet node: it listens on the host's tailnet addresses (Listen's port,
// or its IP) and asks WhoIs through the host's LocalAPI socket (Socket).
// The host needs a tailnet interface (TUN); hostname, control_url,
// auth_key_file and state_dir are the host's business then (`tailscale
// up`) and are refused.
type Tailscale struct {
	Enabled     bool   `toml:"enabled"`
	Mode        string `toml:"mode"`          // "tsnet" (default) or "host"
	Socket      string `toml:"socket"`        // host mode: LocalAPI socket; "" = /var/run/tailscale/tailscaled.sock
	Hostname    string `toml:"hostname"`      // MagicDNS name; default "slipway"
	ControlURL  string `toml:"control_url"`   // "" = Tailscale; Headscale's server_url
	AuthKeyFile string `toml:"auth_key_file"` // "" = TS_AUTHKEY or an authorised state
	StateDir    string `toml:"state_dir"`     // default <state_dir>/tailscale
	AgentTag    string `toml:"agent_tag"`     // default tag:slipway-agent
	Listen      string `toml:"listen"`        // on the tailnet; default ":80"

	// Roles maps tailnet principals to admin roles: a user's login name
	// ("alice@example.com") or a tag ("tag:ci") to viewer, deployer or
	// admin ([tailscale.roles] with quoted keys). A caller gets the
	// highest role of its principals; a tagged node's principals are its
	// tags only. The agent tag can have no role.
	Roles Roles `toml:"roles"`
}

// Roles is [tailscale.roles]: tailnet principal → admin role.
type Roles map[string]string

// UnmarshalTOML takes only a table of strings: the TOML decoder would
// silently drop `roles = "admin"` into a plain map.
func (r *Roles) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("tailscale.roles: want a table of \"principal\" = \"role\", got a %T", v)
	}
	out := make(Roles, len(m))
	for p, x := range m {
		role, ok := x.(string)
		if !ok {
			return fmt.Errorf("tailscale.roles.%q: want a role name (viewer, deployer or admin), got a %T", p, x)
		}
		out[p] = role
	}
	*r = out
	return nil
}

// Gossip is the [gossip] section: the server as a serf member. The
// liveness of every enrolled node's member (its member name is the node
// name) is kept in the registry, and every committed change of desired
// generations sends a desired-changed event naming those nodes, which
// wakes their agents at once instead of at their next poll.
//
// With [tailscale] on too, gossip runs over the server's tailnet node where
// shared/gossip can (see server/daemon), on bind's port.
type Gossip struct {
	Enabled bool `toml:"enabled"`
	// Bind is the address serf listens on, UDP and TCP (default
	// "0.0.0.0:7946").
	Bind string `toml:"bind"`
	// Advertise is the address other members use ("" = bind's, or the
	// tailnet address).
	Advertise string `toml:"advertise"`
	// NodeName is the server's member name (default "slipway-server"); it
	// must not be a node's name.
	NodeName string `toml:"node_name"`
	// KeyringFile holds base64 AES keys (16, 24 or 32 bytes), one a line;
	// the first encrypts, all decrypt (key rotation). Required unless
	// InsecureNoEncryption.
	KeyringFile string `toml:"keyring_file"`
	// InsecureNoEncryption runs gossip without encryption: anyone who can
	// reach bind can join the cluster and read or send its messages.
	InsecureNoEncryption bool `toml:"insecure_no_encryption"`
	// Join lists members ("host:port") to join at start; joining is
	// retried until one answers. Optional: agents may join the server.
	Join []string `toml:"join"`
}

// DefaultGossipBind is the default gossip.bind (serf's usual port).
const DefaultGossipBind = "0.0.0.0:7946"

// Tailscale modes.
const (
	TailscaleModeTsnet = "tsnet"
	TailscaleModeHost  = "host"
)

// TailscaleMode is tailscale.mode, or "tsnet" when unset.
func (c Server) TailscaleMode() string {
	if c.Tailscale.Mode == "" {
		return TailscaleModeTsnet
	}
	return c.Tailscale.Mode
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

		AgentWriteLimit: DefaultAgentWriteLimit,
		AgentWriteWait:  Duration(DefaultAgentWriteWait),

		MetricsListen:   DefaultMetricsListen,
		AgentSocketMode: "0660",
		Limits:          DefaultLimits(),
		Tailscale:       Tailscale{Mode: TailscaleModeTsnet, Hostname: "slipway", AgentTag: "tag:slipway-agent", Listen: ":80"},
		Gossip:          Gossip{Bind: DefaultGossipBind, NodeName: "slipway-server"},
		Audit: Audit{
			MaxEvents:     DefaultAuditMaxEvents,
			MaxAge:        Duration(DefaultAuditMaxAge),
			RefusalWindow: Duration(DefaultAuditRefusalWindow),
			MaxStreams:    DefaultAuditMaxStreams,
		},
		UI:    UI{Enabled: true, SessionTTL: Duration(DefaultUISessionTTL)},
		Store: DefaultStore(),
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

// DefaultAgentWriteLimit is the default agent_write_limit. Agent writes
// in flight wait together for the store's group commit (up to 1,000 per
// fsync), so a low limit starves the batches: at 64, 10,000 agents
// deploying at once got 22,000-25,000 429s and all confirmed in 15.6-16.8
// s; at 4,096, no 429, 10.4-11.8 s and a third less server CPU
// (test/reports/fleet-bench-write-limit.md, this 2-core machine).
const DefaultAgentWriteLimit = 4096

// DefaultAgentWriteWait is the default agent_write_wait: a write that
// finds every slot taken queues this long before it is shed. An agent
// shed gets Retry-After (1 s) and comes back; a queued one is usually
// served sooner than that.
const DefaultAgentWriteWait = 2 * time.Second

// MaxAgentWriteWait is the largest agent_write_wait: agents give up on a
// request after 30 s.
const MaxAgentWriteWait = 30 * time.Second

// MaxAgentWriteLimit is the largest agent_write_limit.
const MaxAgentWriteLimit = 100000

// Validate reports every problem of c.
func (c Server) Validate() error {
	errs := c.validateTop()
	errs = append(errs, validateAdminTokens(c.AdminTokens)...)
	errs = append(errs, c.validateMetricsListen()...)
	if c.Tailscale.Enabled {
		errs = append(errs, c.validateTailscale()...)
	}
	if g := c.Gossip; g.Enabled {
		errs = append(errs, validateGossip(g)...)
	}
	errs = append(errs, c.validateTLS()...)
	errs = append(errs, c.validateSocket()...)
	errs = append(errs, c.Limits.validate()...)
	errs = append(errs, validateAudit(c.Audit)...)
	errs = append(errs, validateGroups(c.TargetGroups)...)
	errs = append(errs, validateNotify(c.Notify)...)
	errs = append(errs, c.Store.validate()...)
	errs = append(errs, c.Prometheus.validate()...)
	if t := time.Duration(c.UI.SessionTTL); t < MinUISessionTTL || t > MaxUISessionTTL {
		errs = append(errs, fmt.Errorf("ui.session_ttl: %s, want %s to %s", t, MinUISessionTTL, MaxUISessionTTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// validateTop checks the listen address, the paths, the intervals, the
// agent write limits and the log level.
func (c Server) validateTop() []error {
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
	if c.AgentWriteLimit < 1 || c.AgentWriteLimit > MaxAgentWriteLimit {
		errs = append(errs, fmt.Errorf("agent_write_limit: %d, want 1 to %d", c.AgentWriteLimit, MaxAgentWriteLimit))
	}
	if c.AgentWriteWait < 0 || time.Duration(c.AgentWriteWait) > MaxAgentWriteWait {
		errs = append(errs, fmt.Errorf("agent_write_wait: %s, want 0 to %s", time.Duration(c.AgentWriteWait), MaxAgentWriteWait))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q, want debug, info, warn or error", c.LogLevel))
	}
	return errs
}

// validateAdminTokens checks each [[admin_token]]: a unique name, a role,
// and exactly one of a well-formed sha256 and a file.
func validateAdminTokens(ts []AdminToken) []error {
	var errs []error
	seen := map[string]bool{}
	for i, t := range ts {
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
	return errs
}

// validateMetricsListen checks metrics_listen, when it is set.
func (c Server) validateMetricsListen() []error {
	if c.MetricsListen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.MetricsListen)
	if err != nil {
		return []error{fmt.Errorf("metrics_listen: %q: %v (\"\" disables metrics)", c.MetricsListen, err)}
	}
	if c.MetricsListen == c.Listen && port != "0" {
		return []error{fmt.Errorf("metrics_listen: %q is the API's listen address; metrics need an address of their own", c.MetricsListen)}
	}
	return nil
}

// validateTailscale checks the [tailscale] table of a server that enables
// it.
func (c Server) validateTailscale() []error {
	var errs []error
	ts := c.Tailscale
	switch c.TailscaleMode() {
	case TailscaleModeTsnet:
		errs = append(errs, validateTsnet(ts)...)
	case TailscaleModeHost:
		errs = append(errs, validateHostMode(ts)...)
	default:
		errs = append(errs, fmt.Errorf("tailscale.mode: %q, want \"tsnet\" (a tailnet node of the server's own) or \"host\" (the host's tailscaled)", ts.Mode))
	}
	if !tagRe.MatchString(ts.AgentTag) {
		errs = append(errs, fmt.Errorf("tailscale.agent_tag: %q, want tag:name", ts.AgentTag))
	}
	if _, _, err := net.SplitHostPort(ts.Listen); err != nil {
		errs = append(errs, fmt.Errorf("tailscale.listen: %q: %v", ts.Listen, err))
	}
	return append(errs, validateRoles(ts.Roles, ts.AgentTag)...)
}

func (c Server) validateTLS() []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("tls_cert_file and tls_key_file: set both (HTTPS on listen) or neither"))
	}
	for key, v := range map[string]string{"tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile} {
		if v != "" && !filepath.IsAbs(v) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", key, v))
		}
	}
	return errs
}

func (c Server) validateSocket() []error {
	var errs []error
	if _, err := c.SocketMode(); err != nil {
		errs = append(errs, err)
	}
	if g := c.AgentSocketGroup; g != "" && !groupRe.MatchString(g) {
		errs = append(errs, fmt.Errorf("agent_socket_group: %q, want a group name or number", g))
	}
	return errs
}

var groupRe = regexp.MustCompile(`^([a-z_][a-z0-9_-]*[$]?|[0-9]+)$`)

// SocketMode is agent_socket_mode as a file mode: permission bits only,
// never writable or executable by others.
func (c Server) SocketMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.AgentSocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("agent_socket_mode: %q, want an octal mode like \"0660\"", c.AgentSocketMode)
	}
	if m&0o007 != 0 {
		return 0, fmt.Errorf("agent_socket_mode: %q gives others access; anyone who may connect can act as an enrolled agent with its token, or enrol with a join token (use 0660 and agent_socket_group)", c.AgentSocketMode)
	}
	return os.FileMode(m), nil
}

// validateTsnet checks the keys of [tailscale] mode "tsnet".
func validateTsnet(ts Tailscale) []error {
	var errs []error
	if !hostRe.MatchString(ts.Hostname) {
		errs = append(errs, fmt.Errorf("tailscale.hostname: %q, want a DNS label", ts.Hostname))
	}
	if ts.StateDir != "" && !filepath.IsAbs(ts.StateDir) {
		errs = append(errs, fmt.Errorf("tailscale.state_dir: %q must be an absolute path", ts.StateDir))
	}
	if ts.AuthKeyFile != "" && !filepath.IsAbs(ts.AuthKeyFile) {
		errs = append(errs, fmt.Errorf("tailscale.auth_key_file: %q must be an absolute path", ts.AuthKeyFile))
	}
	if ts.Socket != "" {
		errs = append(errs, errors.New("tailscale.socket: only for mode = \"host\" (the host's tailscaled)"))
	}
	return errs
}

// validateHostMode checks the keys of [tailscale] mode "host": the tsnet
// keys are the host tailscaled's business.
func validateHostMode(ts Tailscale) []error {
	var errs []error
	for _, k := range []struct {
		name string
		set  bool
	}{{"hostname", ts.Hostname != "" && ts.Hostname != Default().Tailscale.Hostname}, {"control_url", ts.ControlURL != ""},
		{"auth_key_file", ts.AuthKeyFile != ""}, {"state_dir", ts.StateDir != ""}} {
		if k.set {
			errs = append(errs, fmt.Errorf("tailscale.%s: only for mode = \"tsnet\"; with mode = \"host\" the host's tailscaled is configured with `tailscale up` (--hostname, --login-server)", k.name))
		}
	}
	if ts.Socket != "" && (!filepath.IsAbs(ts.Socket) || filepath.Clean(ts.Socket) != ts.Socket) {
		errs = append(errs, fmt.Errorf("tailscale.socket: %q must be an absolute, clean path", ts.Socket))
	}
	if host, _, err := net.SplitHostPort(ts.Listen); err == nil && host != "" && net.ParseIP(host) == nil {
		errs = append(errs, fmt.Errorf("tailscale.listen: %q, want :port (every tailnet address of the host) or one of its tailnet IPs and a port", ts.Listen))
	}
	return errs
}

// validateRoles checks [tailscale.roles]; errors name the key as it is
// written in TOML (tailscale.roles."alice@example.com").
func validateRoles(roles map[string]string, agentTag string) []error {
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(roles)) {
		key := fmt.Sprintf("tailscale.roles.%q", p)
		switch r := roles[p]; {
		case strings.HasPrefix(p, "tag:") && !tagRe.MatchString(p):
			errs = append(errs, fmt.Errorf("%s: not a tag, want tag:name", key))
		case !strings.HasPrefix(p, "tag:") && (p == "" || strings.ContainsFunc(p, unicode.IsSpace)):
			errs = append(errs, fmt.Errorf("%s: want a user's login name (alice@example.com) or a tag (tag:ci)", key))
		case p == agentTag:
			errs = append(errs, fmt.Errorf("%s: the agent tag (tailscale.agent_tag) cannot have an admin role: every agent would get it", key))
		case r != "viewer" && r != "deployer" && r != "admin":
			errs = append(errs, fmt.Errorf("%s: role %q, want viewer, deployer or admin", key, r))
		}
	}
	return errs
}

func validateGossip(g Gossip) []error {
	var errs []error
	addr := func(key, v string, empty bool) {
		if v == "" && empty {
			return
		}
		if _, port, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %v", key, v, err))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s: %q: want a port number", key, v))
		}
	}
	addr("gossip.bind", g.Bind, false)
	addr("gossip.advertise", g.Advertise, true)
	for i, j := range g.Join {
		addr(fmt.Sprintf("gossip.join[%d]", i), j, false)
	}
	if !nameRe.MatchString(g.NodeName) {
		errs = append(errs, fmt.Errorf("gossip.node_name: %q, want 1-63 of [A-Za-z0-9._-], starting alphanumeric", g.NodeName))
	}
	switch {
	case g.KeyringFile == "" && !g.InsecureNoEncryption:
		errs = append(errs, errors.New("gossip.keyring_file: required: gossip is encrypted (set insecure_no_encryption = true to run it unencrypted, only on a network nobody else reaches)"))
	case g.KeyringFile != "" && g.InsecureNoEncryption:
		errs = append(errs, errors.New("gossip.insecure_no_encryption: set together with keyring_file; choose one"))
	case g.KeyringFile != "" && !filepath.IsAbs(g.KeyringFile):
		errs = append(errs, fmt.Errorf("gossip.keyring_file: %q must be an absolute path", g.KeyringFile))
	}
	return errs
}

func validateAudit(a Audit) []error {
	var errs []error
	if a.MaxEvents < 1 || a.MaxEvents > MaxAuditEvents {
		errs = append(errs, fmt.Errorf("audit.max_events: %d, want 1 to %d", a.MaxEvents, MaxAuditEvents))
	}
	if a.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("audit.max_age: %s, want a duration ≥ 0 (0s: no age limit)", time.Duration(a.MaxAge)))
	}
	if w := time.Duration(a.RefusalWindow); w < time.Second || w > time.Hour {
		errs = append(errs, fmt.Errorf("audit.refusal_window: %s, want 1s to 1h", w))
	}
	if a.MaxStreams < 1 || a.MaxStreams > 1000 {
		errs = append(errs, fmt.Errorf("audit.max_streams: %d, want 1 to 1000", a.MaxStreams))
	}
	return errs
}

// Duration is a time.Duration read from a TOML string like "90s".
type Duration = tomlconfig.Duration
