// Package config holds the agent's configuration: defaults, the TOML file
// (/etc/slipway/agent.toml), and validation. Unknown keys are errors.
//
// The keys server, tls_ca_file, node_name, labels, join_token_file,
// token_file, poll_wait and report_interval configure the daemon (`slipway-agent run`,
// package agent/daemon); the other commands ignore them. Validate checks
// them whenever they are set; ValidateRun also requires what `run` needs.
//
// secrets_dir, identity_file and ssh_host_keys say where decrypted secrets
// go and which keys decrypt them (see agent/stage). secrets_dir must be on
// a tmpfs in production (the default, /run/slipway/secrets, is) and may not
// be inside state_dir: plaintext secrets never go to the state directory.
//
// metrics_listen is where `run` serves Prometheus metrics (default
// 127.0.0.1:9432, "" disables them); a SIGHUP to `run` re-reads log_level
// only (see agent/cli).
//
// [tailscale] (default off) makes `run` a tailnet node of its own that
// talks to the server over the tailnet and is identified there by WhoIs:
// its tailnet host name must be the node name (tailscale.hostname
// defaults to node_name, and Validate refuses anything else, and node
// names that are not one lower-case DNS label); with tailscale.mode =
// "host" it uses the host's tailscaled instead (see Tailscale). [gossip] (default off)
// makes `run` a serf member woken by the server's desired-changed events,
// polling every gossip.poll_interval instead of holding a long-poll. The
// keys of a disabled section are not checked.
//
// It never reads anything but the file it is given, and never logs values.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/fspath"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// DefaultPath is where the agent looks for its config file.
const DefaultPath = "/etc/slipway/agent.toml"

// Settings is the agent's configuration.
type Settings struct {
	// StateDir holds state.db, generations/, store/ and `current`.
	StateDir string `toml:"state_dir"`
	// UnitDir is where the agent links the units it manages.
	UnitDir string `toml:"unit_dir"`
	// LinkPrefixes are the absolute directories a generation's links may
	// point into.
	LinkPrefixes []string `toml:"link_prefixes"`
	// KeepGenerations is how many good generations (switched to and
	// verified: the rollback targets) GC keeps besides current and last
	// good. Quarantined and failed generations never count toward it: they
	// stay only while among the newest KeepGenerations directories.
	KeepGenerations int `toml:"keep_generations"`
	// JobTimeout bounds one batch of systemd jobs in a switch.
	JobTimeout Duration `toml:"job_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// SecretsDir is where the agent decrypts a generation's secrets:
	// <secrets_dir>/<N>/<name>, with <secrets_dir>/current flipped with the
	// generation. A tmpfs (the default is under /run).
	SecretsDir string `toml:"secrets_dir"`
	// IdentityFile is the node's age identity, created (0600) on the
	// daemon's first start (default <state_dir>/identity.age, see
	// AgeIdentityFile).
	IdentityFile string `toml:"identity_file"`
	// SSHHostKeys are OpenSSH private keys the agent also decrypts with, so
	// files sealed for agenix to the host keys work unchanged. Missing files
	// are skipped.
	SSHHostKeys []string `toml:"ssh_host_keys"`

	// Server are the slipway-server addresses the daemon pulls from, one
	// string or a list: "http(s)://host[:port]" or "unix:///path/to.sock".
	// With several (or a DNS name with several records) the daemon fails
	// over between them (see agent/daemon). Required by `run`.
	Server Servers `toml:"server"`
	// TLSCAFile holds the PEM CA certificates an https:// server's
	// certificate is verified against ("" = the system's roots).
	TLSCAFile string `toml:"tls_ca_file"`
	// NodeName is the name the node enrols and acts under (default: the
	// host name, filled in by `run`).
	NodeName string `toml:"node_name"`
	// Labels are sent once, at enrolment (role = "web", env = "prod").
	Labels map[string]string `toml:"labels"`
	// JoinTokenFile holds the one-time join token used to enrol when there
	// is no node token yet.
	JoinTokenFile string `toml:"join_token_file"`
	// TokenFile is where the node token from enrolment is kept (0600;
	// default <state_dir>/node-token, see NodeTokenFile).
	TokenFile string `toml:"token_file"`
	// PollWait is how long one long-poll for the desired generation waits
	// on the server (1s to 5m).
	PollWait Duration `toml:"poll_wait"`
	// ReportInterval is the longest time between two status reports.
	ReportInterval Duration `toml:"report_interval"`
	// OverloadConfirmTimeout is how long a switch waits for the server's
	// confirm while the server answers overloaded (429 or 5xx, with or
	// without Retry-After) instead of not answering: an overloaded server
	// never reverts a healthy node before it. A server that does not
	// answer at all reverts after the generation's confirm_timeout, as
	// always. Never shorter than confirm_timeout (1s to 1h).
	OverloadConfirmTimeout Duration `toml:"overload_confirm_timeout"`

	// MetricsListen is the address of the daemon's Prometheus endpoint,
	// /metrics (host:port; "" disables it). It serves metrics only, with no
	// authentication and nothing else: keep it on loopback or a monitoring
	// network. Only `run` serves it.
	MetricsListen string `toml:"metrics_listen"`

	// Tailscale makes `run` a tailnet node of its own and talk to the
	// server over it ([tailscale]).
	Tailscale Tailscale `toml:"tailscale"`
	// Gossip makes `run` a serf member that the server wakes when the
	// node's desired generation changes ([gossip]).
	Gossip Gossip `toml:"gossip"`
}

// Tailscale is the [tailscale] section: with Enabled, `run` brings up a
// tsnet node of its own (shared/mesh) and sends every request to the
// server through it. The server identifies the node by WhoIs: the node's
// tailnet host name is the node name it may act for and it must carry the
// agent tag. The node then enrols without a join token and needs no node
// token.
//
// With Mode "host" the node is the host's own tailscaled instead (joined
// with `tailscale up --hostname=<node_name>
// --advertise-tags=tag:slipway-agent`), asked through its LocalAPI socket:
// `run` refuses to start when its tailnet name is not node_name or it
// lacks one of Tags. The tsnet keys (hostname, control_url,
// auth_key_file, state_dir, ephemeral) are refused in host mode.
type Tailscale struct {
	Enabled bool `toml:"enabled"`
	// Mode is "tsnet" (a tailnet node of the agent's own; the default) or
	// "host" (the host's tailscaled).
	Mode string `toml:"mode"`
	// Socket is the host tailscaled's LocalAPI socket (host mode; "" =
	// /var/run/tailscale/tailscaled.sock).
	Socket string `toml:"socket"`
	// Proxy is the host tailscaled's SOCKS5 proxy, "socks5://host:port"
	// (host mode): needed when it runs in userspace networking
	// (--tun=userspace-networking --socks5-server=...), where the host has
	// no tailnet interface. "" = dial over the host's tailnet interface.
	Proxy string `toml:"proxy"`
	// Hostname is the node's tailnet host name. It must be the node name
	// (node_name, default the host name): the server authorises a tailnet
	// request by the host name WhoIs reports. "" = node_name.
	Hostname string `toml:"hostname"`
	// ControlURL is the coordination server: "" = Tailscale's; for
	// Headscale its server_url.
	ControlURL string `toml:"control_url"`
	// AuthKeyFile holds an auth key (Tailscale auth key or Headscale
	// pre-auth key), read at start. "" = TS_AUTHKEY or the state of an
	// already authorised node.
	AuthKeyFile string `toml:"auth_key_file"`
	// StateDir holds the node's tailnet state (its keys). "" =
	// <state_dir>/tailscale (see TailscaleStateDir).
	StateDir string `toml:"state_dir"`
	// Tags the node advertises; the server requires its agent tag
	// (default tag:slipway-agent). [] advertises none: the auth key must
	// then carry the tag. In host mode, the tags the host's node must
	// carry (`run` checks them at start).
	Tags []string `toml:"tags"`
	// Ephemeral nodes are removed from the tailnet when they go offline.
	Ephemeral bool `toml:"ephemeral"`
}

// Gossip is the [gossip] section: with Enabled, `run` joins the fleet's
// serf cluster (shared/gossip) as a member named after the node, tagged
// with its labels and current generation, and changes how it fetches the
// desired generation: a poll without waiting every PollInterval (jittered
// ±10%), and at once when a desired-changed event concerns the node,
// instead of a long-poll held open on the server.
type Gossip struct {
	Enabled bool `toml:"enabled"`
	// Bind is the "ip:port" serf listens on (UDP and TCP). With
	// [tailscale] enabled only its port counts: gossip then runs on the
	// tailnet node's IPv4 address.
	Bind string `toml:"bind"`
	// Advertise is the "ip:port" other members reach this one at; "" =
	// the bound address.
	Advertise string `toml:"advertise"`
	// KeyringFile holds the cluster's encryption keys, base64, one per
	// line (the first encrypts). Required unless InsecureNoEncryption.
	KeyringFile string `toml:"keyring_file"`
	// InsecureNoEncryption runs gossip unencrypted (tests, or a network
	// that encrypts already).
	InsecureNoEncryption bool `toml:"insecure_no_encryption"`
	// Join are "host:port" addresses of members to join. [] = the host of
	// server with port DefaultGossipPort (see GossipJoin).
	Join []string `toml:"join"`
	// PollInterval is the time between two polls of the desired generation
	// while gossip is enabled (jittered ±10%).
	PollInterval Duration `toml:"poll_interval"`
}

// Gossip defaults and bounds.
const (
	DefaultGossipPort         = 7946
	DefaultGossipBind         = "0.0.0.0:7946"
	DefaultGossipPollInterval = 60 * time.Second
	MinGossipPollInterval     = time.Second
)

// Tailscale modes.
const (
	TailscaleModeTsnet = "tsnet"
	TailscaleModeHost  = "host"
)

// DefaultTailscaleTag is the tag agents advertise by default (the
// server's default agent tag).
const DefaultTailscaleTag = "tag:slipway-agent"

// TailscaleMode is tailscale.mode, or "tsnet" when unset.
func (c Settings) TailscaleMode() string {
	if c.Tailscale.Mode == "" {
		return TailscaleModeTsnet
	}
	return c.Tailscale.Mode
}

// TailscaleHostname is tailscale.hostname, or node_name when unset.
func (c Settings) TailscaleHostname() string {
	if c.Tailscale.Hostname != "" {
		return c.Tailscale.Hostname
	}
	return c.NodeName
}

// TailscaleStateDir is tailscale.state_dir, or <state_dir>/tailscale when
// unset.
func (c Settings) TailscaleStateDir() string {
	if c.Tailscale.StateDir != "" {
		return c.Tailscale.StateDir
	}
	return filepath.Join(c.StateDir, "tailscale")
}

// GossipJoin is gossip.join, or the host of every http(s) server with
// port DefaultGossipPort when unset (none for a unix:// server): serf
// joins through any of them that answers.
func (c Settings) GossipJoin() []string {
	if len(c.Gossip.Join) > 0 {
		return c.Gossip.Join
	}
	var join []string
	for _, s := range c.Server {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			continue
		}
		if j := net.JoinHostPort(u.Hostname(), strconv.Itoa(DefaultGossipPort)); !slices.Contains(join, j) {
			join = append(join, j)
		}
	}
	return join
}

// DefaultMetricsListen is the default metrics_listen (loopback).
const DefaultMetricsListen = "127.0.0.1:9432"

// Bounds and defaults of the daemon's intervals.
const (
	DefaultPollWait       = 55 * time.Second
	MinPollWait           = time.Second
	MaxPollWait           = 5 * time.Minute // the server's limit (api.MaxPollWait)
	DefaultReportInterval = 60 * time.Second
	MinReportInterval     = time.Second

	DefaultOverloadConfirmTimeout = 5 * time.Minute
	MinOverloadConfirmTimeout     = time.Second
	MaxOverloadConfirmTimeout     = time.Hour
)

// Defaults of the switch; agent/activate takes them for zero fields too.
const (
	DefaultKeepGenerations = 5
	DefaultJobTimeout      = 3 * time.Minute
)

// Patterns of node names and labels.
var (
	nodeNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
)

// Defaults of the secrets settings.
const (
	DefaultSecretsDir = "/run/slipway/secrets"
)

// DefaultSSHHostKeys are the host keys agenix decrypts with by default.
var DefaultSSHHostKeys = []string{"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"}

// AgeIdentityFile is IdentityFile, or <state_dir>/identity.age when unset.
func (c Settings) AgeIdentityFile() string {
	if c.IdentityFile != "" {
		return c.IdentityFile
	}
	return filepath.Join(c.StateDir, "identity.age")
}

// NodeTokenFile is TokenFile, or <state_dir>/node-token when unset.
func (c Settings) NodeTokenFile() string {
	if c.TokenFile != "" {
		return c.TokenFile
	}
	return filepath.Join(c.StateDir, "node-token")
}

// Default returns the defaults.
func Default() Settings {
	return Settings{
		StateDir:               "/var/lib/slipway",
		UnitDir:                "/etc/systemd/system",
		LinkPrefixes:           []string{"/etc"},
		KeepGenerations:        DefaultKeepGenerations,
		JobTimeout:             Duration(DefaultJobTimeout),
		LogLevel:               "info",
		SecretsDir:             DefaultSecretsDir,
		SSHHostKeys:            append([]string(nil), DefaultSSHHostKeys...),
		PollWait:               Duration(DefaultPollWait),
		ReportInterval:         Duration(DefaultReportInterval),
		OverloadConfirmTimeout: Duration(DefaultOverloadConfirmTimeout),
		MetricsListen:          DefaultMetricsListen,
		Tailscale:              Tailscale{Mode: TailscaleModeTsnet, Tags: []string{DefaultTailscaleTag}},
		Gossip:                 Gossip{Bind: DefaultGossipBind, PollInterval: Duration(DefaultGossipPollInterval)},
	}
}

// Load reads path over the defaults. A missing file at the default path is
// not an error (the defaults apply); a missing file named explicitly is.
func Load(path string, explicit bool) (Settings, error) {
	c := Default()
	err := tomlconfig.Load(path, explicit, &c)
	return c, err
}

// Validate reports every problem of c.
func (c Settings) Validate() error {
	var errs []error
	errs = append(errs, c.validatePaths()...)
	errs = append(errs, c.validateSwitch()...)
	errs = append(errs, c.validateServer()...)
	errs = append(errs, c.validateIntervals()...)
	errs = append(errs, c.validateTailscale()...)
	errs = append(errs, c.validateGossip()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// appendAbs appends to errs an error when path p (named name) is not
// absolute and clean.
func appendAbs(errs []error, name, p string) []error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return append(errs, fmt.Errorf("%s: %q must be an absolute, clean path", name, p))
	}
	return errs
}

// validatePaths checks the agent's directories and key files.
func (c Settings) validatePaths() []error {
	var errs []error
	abs := func(name, p string) { errs = appendAbs(errs, name, p) }
	abs("state_dir", c.StateDir)
	abs("unit_dir", c.UnitDir)
	for i, p := range c.LinkPrefixes {
		abs(fmt.Sprintf("link_prefixes[%d]", i), p)
		if p == "/" {
			errs = append(errs, fmt.Errorf("link_prefixes[%d]: \"/\" would let a release link anywhere", i))
		}
	}
	abs("secrets_dir", c.SecretsDir)
	for _, d := range []struct{ name, dir string }{{"state_dir", c.StateDir}, {"unit_dir", c.UnitDir}} {
		if fspath.Within(c.SecretsDir, d.dir) || fspath.Within(d.dir, c.SecretsDir) {
			errs = append(errs, fmt.Errorf("secrets_dir: %q overlaps %s %q; decrypted secrets go to a tmpfs of their own (default %s)", c.SecretsDir, d.name, d.dir, DefaultSecretsDir))
		}
	}
	if c.IdentityFile != "" {
		abs("identity_file", c.IdentityFile)
	}
	for i, p := range c.SSHHostKeys {
		abs(fmt.Sprintf("ssh_host_keys[%d]", i), p)
	}
	return errs
}

// validateSwitch checks what tunes the switch and the log.
func (c Settings) validateSwitch() []error {
	var errs []error
	if c.KeepGenerations < 1 {
		errs = append(errs, fmt.Errorf("keep_generations: %d, must be at least 1", c.KeepGenerations))
	}
	if c.JobTimeout <= 0 {
		errs = append(errs, fmt.Errorf("job_timeout: must be positive"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q, want debug, info, warn or error", c.LogLevel))
	}
	return errs
}

// validateServer checks how the agent reaches and names itself to the
// server.
func (c Settings) validateServer() []error {
	var errs []error
	abs := func(name, p string) { errs = appendAbs(errs, name, p) }
	errs = append(errs, c.Server.validate()...)
	if c.TLSCAFile != "" && !filepath.IsAbs(c.TLSCAFile) {
		errs = append(errs, fmt.Errorf("tls_ca_file: %q must be an absolute path (it is used only for an https:// server)", c.TLSCAFile))
	}
	if c.NodeName != "" && !nodeNameRE.MatchString(c.NodeName) {
		errs = append(errs, fmt.Errorf("node_name: %q, want 1 to 63 of [A-Za-z0-9._-] starting with a letter or digit", c.NodeName))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if !labelKeyRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("labels: key %q, want 1 to 63 of [A-Za-z0-9._/-] starting with a letter or digit", k))
		}
		if v := c.Labels[k]; !labelValueRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("labels[%q]: value %q, want at most 63 of [A-Za-z0-9._-]", k, v))
		}
	}
	if c.JoinTokenFile != "" {
		abs("join_token_file", c.JoinTokenFile)
	}
	if c.TokenFile != "" {
		abs("token_file", c.TokenFile)
	}
	return errs
}

// validateIntervals checks the daemon's intervals and the metrics address.
func (c Settings) validateIntervals() []error {
	var errs []error
	if d := time.Duration(c.PollWait); d < MinPollWait || d > MaxPollWait {
		errs = append(errs, fmt.Errorf("poll_wait: %s, want %s to %s", d, MinPollWait, MaxPollWait))
	}
	if d := time.Duration(c.ReportInterval); d < MinReportInterval {
		errs = append(errs, fmt.Errorf("report_interval: %s, want at least %s", d, MinReportInterval))
	}
	if d := time.Duration(c.OverloadConfirmTimeout); d < MinOverloadConfirmTimeout || d > MaxOverloadConfirmTimeout {
		errs = append(errs, fmt.Errorf("overload_confirm_timeout: %s, want %s to %s", d, MinOverloadConfirmTimeout, MaxOverloadConfirmTimeout))
	}
	if err := checkListen(c.MetricsListen); err != nil {
		errs = append(errs, fmt.Errorf("metrics_listen: %w", err))
	}
	return errs
}

// ValidateRun is Validate plus what the daemon (`slipway-agent run`)
// cannot do without: a server and a node name.
func (c Settings) ValidateRun() error {
	var errs []error
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Server == nil {
		errs = append(errs, errors.New("invalid config: server: required by `run` (http(s)://host:port or unix:///path, or a list of them)"))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("invalid config: node_name: required by `run` (defaults to the host name)"))
	}
	return errors.Join(errs...)
}

// dnsLabelRE is a tailnet host name as WhoIs reports it: one lower-case
// DNS label.
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// tagRE is a Tailscale ACL tag.
var tagRE = regexp.MustCompile(`^tag:[A-Za-z0-9][A-Za-z0-9-]*$`)

// validateTailscale checks [tailscale]; its keys are checked only when it
// is enabled (a disabled section may keep half-made settings).
func (c Settings) validateTailscale() []error {
	ts := c.Tailscale
	if !ts.Enabled {
		return nil
	}
	var errs []error
	switch c.TailscaleMode() {
	case TailscaleModeTsnet:
		errs = append(errs, c.validateTsnet()...)
	case TailscaleModeHost:
		errs = append(errs, c.validateHostMode()...)
	default:
		errs = append(errs, fmt.Errorf("tailscale.mode: %q, want \"tsnet\" (a tailnet node of the agent's own) or \"host\" (the host's tailscaled)", ts.Mode))
	}
	for i, t := range ts.Tags {
		if !tagRE.MatchString(t) {
			errs = append(errs, fmt.Errorf("tailscale.tags[%d]: %q, want tag:name", i, t))
		}
	}
	for i, s := range c.Server {
		if strings.HasPrefix(s, "unix:") {
			errs = append(errs, fmt.Errorf("%s: a unix socket is not on the tailnet; with [tailscale] enabled use http://<the server's MagicDNS name> (e.g. http://slipway)", c.Server.key(i)))
		}
	}
	return errs
}

// validateTsnet checks the keys of [tailscale] mode "tsnet".
func (c Settings) validateTsnet() []error {
	ts := c.Tailscale
	var errs []error
	if ts.Hostname != "" && !dnsLabelRE.MatchString(ts.Hostname) {
		errs = append(errs, fmt.Errorf("tailscale.hostname: %q, want one lower-case DNS label (a-z, 0-9, -; at most 63)", ts.Hostname))
	}
	switch {
	case ts.Hostname != "" && c.NodeName != "" && ts.Hostname != c.NodeName:
		errs = append(errs, fmt.Errorf("tailscale.hostname: %q is not node_name %q; the server authorises a tailnet request by the node's tailnet host name, so it must be the node name (leave hostname unset to use node_name)", ts.Hostname, c.NodeName))
	case ts.Hostname == "" && c.NodeName != "" && !dnsLabelRE.MatchString(c.NodeName):
		errs = append(errs, fmt.Errorf("node_name: %q cannot be a tailnet host name (one lower-case DNS label: a-z, 0-9, -); with [tailscale] enabled the node name is its tailnet host name, which the server authorises it by", c.NodeName))
	}
	if ts.ControlURL != "" {
		u, err := url.Parse(ts.ControlURL)
		switch {
		case err != nil:
			errs = append(errs, errors.New("tailscale.control_url: not a valid URL"))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			errs = append(errs, errors.New("tailscale.control_url: want http(s)://host[:port] (Headscale's server_url), or \"\" for Tailscale's"))
		case u.User != nil:
			errs = append(errs, errors.New("tailscale.control_url: must not carry credentials"))
		}
	}
	for _, k := range []struct{ name, p string }{{"tailscale.auth_key_file", ts.AuthKeyFile}, {"tailscale.state_dir", ts.StateDir}} {
		if k.p != "" && (!filepath.IsAbs(k.p) || filepath.Clean(k.p) != k.p) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute, clean path", k.name, k.p))
		}
	}
	for _, k := range []struct{ name, v string }{{"tailscale.socket", ts.Socket}, {"tailscale.proxy", ts.Proxy}} {
		if k.v != "" {
			errs = append(errs, fmt.Errorf("%s: only for mode = \"host\" (the host's tailscaled); a tsnet node has neither", k.name))
		}
	}
	return errs
}

// validateHostMode checks the keys of [tailscale] mode "host": the tsnet
// keys do not apply (the host's tailscaled has its own settings).
func (c Settings) validateHostMode() []error {
	ts := c.Tailscale
	var errs []error
	for _, k := range []struct {
		name string
		set  bool
	}{{"hostname", ts.Hostname != ""}, {"control_url", ts.ControlURL != ""}, {"auth_key_file", ts.AuthKeyFile != ""},
		{"state_dir", ts.StateDir != ""}, {"ephemeral", ts.Ephemeral}} {
		if k.set {
			errs = append(errs, fmt.Errorf("tailscale.%s: only for mode = \"tsnet\"; with mode = \"host\" the host's tailscaled is configured with `tailscale up` (--hostname=<node_name> --advertise-tags=tag:slipway-agent, --login-server for Headscale)", k.name))
		}
	}
	if c.NodeName != "" && !dnsLabelRE.MatchString(c.NodeName) {
		errs = append(errs, fmt.Errorf("node_name: %q cannot be a tailnet host name (one lower-case DNS label: a-z, 0-9, -); with [tailscale] enabled the node name is its tailnet host name, which the server authorises it by", c.NodeName))
	}
	if ts.Socket != "" && (!filepath.IsAbs(ts.Socket) || filepath.Clean(ts.Socket) != ts.Socket) {
		errs = append(errs, fmt.Errorf("tailscale.socket: %q must be an absolute, clean path", ts.Socket))
	}
	if _, err := mesh.ParseProxy(ts.Proxy); err != nil {
		errs = append(errs, fmt.Errorf("tailscale.proxy: %q, want socks5://host:port (tailscaled's --socks5-server)", ts.Proxy))
	}
	if ts.Proxy != "" && c.Gossip.Enabled {
		errs = append(errs, errors.New("gossip: cannot run through tailscaled's SOCKS5 proxy (tailscale.proxy: userspace networking has no tailnet interface for serf's UDP); disable [gossip] (the agent then long-polls) or run tailscaled with a TUN device"))
	}
	return errs
}

// validateGossip checks [gossip]; its keys are checked only when it is
// enabled.
func (c Settings) validateGossip() []error {
	g := c.Gossip
	if !g.Enabled {
		return nil
	}
	var errs []error
	if err := checkHostPort(g.Bind, true); err != nil {
		errs = append(errs, fmt.Errorf("gossip.bind: %w", err))
	} else if host, _, _ := net.SplitHostPort(g.Bind); host != "" && net.ParseIP(host) == nil {
		errs = append(errs, fmt.Errorf("gossip.bind: %q, want an IP address (or none: all) and port", g.Bind))
	}
	if g.Advertise != "" {
		if err := checkHostPort(g.Advertise, false); err != nil {
			errs = append(errs, fmt.Errorf("gossip.advertise: %w", err))
		} else if host, _, _ := net.SplitHostPort(g.Advertise); net.ParseIP(host) == nil {
			errs = append(errs, fmt.Errorf("gossip.advertise: %q, want an IP address and port", g.Advertise))
		}
	}
	switch {
	case g.KeyringFile == "" && !g.InsecureNoEncryption:
		errs = append(errs, errors.New("gossip.keyring_file: required (base64 keys, one per line); or set gossip.insecure_no_encryption = true"))
	case g.KeyringFile != "" && g.InsecureNoEncryption:
		errs = append(errs, errors.New("gossip.keyring_file: set together with gossip.insecure_no_encryption = true; choose one"))
	case g.KeyringFile != "" && (!filepath.IsAbs(g.KeyringFile) || filepath.Clean(g.KeyringFile) != g.KeyringFile):
		errs = append(errs, fmt.Errorf("gossip.keyring_file: %q must be an absolute, clean path", g.KeyringFile))
	}
	for i, j := range g.Join {
		if err := checkHostPort(j, false); err != nil {
			errs = append(errs, fmt.Errorf("gossip.join[%d]: %w", i, err))
		}
	}
	if len(g.Join) == 0 && len(c.Server) > 0 && len(c.GossipJoin()) == 0 {
		errs = append(errs, errors.New("gossip.join: required when server is not http(s)://host (the default joins the server's host on port 7946)"))
	}
	if d := time.Duration(g.PollInterval); d < MinGossipPollInterval {
		errs = append(errs, fmt.Errorf("gossip.poll_interval: %s, want at least %s", d, MinGossipPollInterval))
	}
	return errs
}

// checkHostPort accepts "host:port" with a numeric port, 1 to 65535 (0
// too when zero is set). The host may be empty only when zero is set (a
// bind address).
func checkHostPort(s string, zero bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port", s)
	}
	if host == "" && !zero {
		return fmt.Errorf("%q: no host", s)
	}
	lo := 1
	if zero {
		lo = 0
	}
	if n, err := strconv.Atoi(port); err != nil || n < lo || n > 65535 {
		return fmt.Errorf("%q: port %q out of range", s, port)
	}
	return nil
}

// checkServer accepts "http(s)://host[:port][/prefix]" and
// "unix:///absolute/path.sock". Credentials never go in the address.
func checkServer(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL") // not echoed: it might hold a secret
	}
	if u.User != nil {
		return errors.New("must not carry credentials (the node token lives in token_file)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	switch u.Scheme {
	case "http", "https":
		if u.Hostname() == "" {
			return fmt.Errorf("%q has no host", s)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("%q: port %q out of range", s, p)
			}
		}
	case "unix":
		if u.Host != "" || !filepath.IsAbs(u.Path) || filepath.Clean(u.Path) != u.Path {
			return fmt.Errorf("%q: want unix:///absolute/clean/path.sock", s)
		}
	default:
		return fmt.Errorf("%q: scheme must be http, https or unix", s)
	}
	return nil
}

// checkListen accepts "" (disabled) and "host:port" with a numeric port
// (0 picks a free one).
func checkListen(s string) error {
	if s == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port, or \"\" to disable", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q out of range", s, port)
	}
	return nil
}

// Duration is a time.Duration read from a TOML string like "90s".
type Duration = tomlconfig.Duration
