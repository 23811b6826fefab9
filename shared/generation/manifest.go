// Package generation defines the generation manifest: the immutable,
// content-addressed desired state of one node (units, files, links,
// artifacts, sealed secrets, health checks, or a NixOS closure), its
// canonical JSON encoding, its ID, and its validation.
//
// A manifest is outside input for the agent: Parse and Validate must reject
// anything malformed with a *FieldError naming the field, and must never
// panic. Nothing in this package touches the file system or the network.
//
// Parse is strict where encoding/json is lenient: it refuses duplicate
// keys, field names matched only case-insensitively, null for fields that
// cannot be absent, non-integer numbers and trailing data, so one byte
// string has one meaning. Canonical then fixes one byte string per
// meaning; the ID hashes it. Parse → Canonical → Parse → Canonical is
// byte-stable (fuzzed). Parse checks shape only; Validate checks every rule
// and reports all problems at once, in a stable order. Every rejection
// wraps ErrInvalid.
//
// Rules a reader might not expect: unit names may contain '\' as systemd allows
// (escaped mount names); links may never be placed in, nor replace a parent
// of, ForbiddenLinkDirs; a file or link inside another file or link is
// rejected; the health timings are compared with defaults applied even when
// only one is set; a check's initial_delay (its startup grace, see
// DefaultInitialDelay for the default chosen) may not exceed healthy_deadline.
package generation

import (
	"encoding/json"
	"fmt"
	"time"
)

// Unit file suffixes a generation may ship.
var UnitSuffixes = []string{".service", ".socket", ".timer", ".path", ".target", ".mount"}

// Defaults applied by consumers when a field is zero. They are not written
// into the manifest, so the ID does not change when a default changes.
const (
	DefaultConfirmTimeout   = 30 * time.Second
	DefaultMinHealthyTime   = 5 * time.Second
	DefaultHealthyDeadline  = 2 * time.Minute
	DefaultCheckInterval    = 2 * time.Second
	DefaultCheckTimeout     = 5 * time.Second
	DefaultFailureThreshold = 3
	// DefaultInitialDelay is a check's startup grace when initial_delay is
	// unset: about what a Kubernetes startupProbe allows with its defaults
	// (3 failures × 10s). A check that has not passed within it fails the
	// switch after failure_threshold more consecutive failures, long before
	// the default healthy_deadline; a slower starter sets initial_delay.
	// With a healthy_deadline no longer than it, only the deadline applies
	// before a check's first pass (the behaviour before initial_delay).
	DefaultInitialDelay = 30 * time.Second
	DefaultFileMode     = "0644"
	DefaultArtifactMode = "0644"
)

// Size limits for the parts of a manifest.
const (
	MaxManifestBytes = 32 << 20 // the whole canonical JSON
	MaxUnitBytes     = 1 << 20  // one unit file text
	MaxFileBytes     = 4 << 20  // one inline file; larger files are artifacts
	MaxArtifactBytes = 16 << 30 // one artifact blob
	MaxSecretBytes   = 1 << 20  // one armored secret
)

// Manifest is one generation: the desired state of one node.
//
// Field order is alphabetical by JSON name so that encoding/json writes
// sorted keys; maps are sorted by encoding/json; slices are sorted by their
// key (name or path) in Canonical.
type Manifest struct {
	// AllowWorldWritable lets file and artifact modes carry the
	// world-write bit and secret modes the world-read or world-write bit,
	// which Validate otherwise refuses (see ErrWorldAccess).
	AllowWorldWritable bool `json:"allow_world_writable,omitempty"`
	// Artifacts are content-addressed blobs (binaries, archives) placed in
	// the generation's artifacts/ directory, shared between generations.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// ConfirmTimeout is how long the agent waits for the server's confirm
	// after a healthy switch before it reverts (default 30s).
	ConfirmTimeout Duration `json:"confirm_timeout,omitempty"`
	// Files maps a relative path inside the generation's files/ directory
	// to its content.
	Files map[string]File `json:"files,omitempty"`
	// Health decides whether the generation is healthy after a switch.
	Health Health `json:"health"`
	// Links expose files or artifacts at absolute paths on the node, under
	// the prefixes the agent allows (default /etc).
	Links []Link `json:"links,omitempty"`
	// Name is the release name this generation was made from (display only).
	Name string `json:"name,omitempty"`
	// NixOS, when set, selects the NixOS driver: the generation is a system
	// closure and Units must be empty.
	NixOS *NixOS `json:"nixos,omitempty"`
	// Secrets are age-encrypted, decrypted only on the node into tmpfs.
	Secrets []Secret `json:"secrets,omitempty"`
	// Units maps a systemd unit name to its unit file text.
	Units map[string]string `json:"units,omitempty"`
}

// File is one file of a generation: inline text or an artifact.
type File struct {
	// Artifact names an entry of Manifest.Artifacts whose blob is the content.
	Artifact string `json:"artifact,omitempty"`
	// Content is the inline text (valid UTF-8, at most MaxFileBytes).
	Content string `json:"content,omitempty"`
	// Mode is the octal permission, "0644" style (default 0644).
	Mode string `json:"mode,omitempty"`
}

// Link exposes a generation file or artifact at an absolute path on the node.
// The link is a symlink through the agent's `current` pointer, so it flips
// atomically with the generation.
type Link struct {
	// Artifact names an entry of Manifest.Artifacts (exclusive with File).
	Artifact string `json:"artifact,omitempty"`
	// File names a key of Manifest.Files (exclusive with Artifact).
	File string `json:"file,omitempty"`
	// Path is the absolute, clean path of the symlink on the node.
	Path string `json:"path"`
}

// Artifact is a content-addressed blob.
type Artifact struct {
	// Mode is the octal permission of the artifact, "0755" for binaries.
	Mode string `json:"mode,omitempty"`
	// Name is the file name under the generation's artifacts/ directory.
	Name string `json:"name"`
	// SHA256 is the lowercase hex sha256 of the blob; the store key.
	SHA256 string `json:"sha256"`
	// Size is the blob size in bytes.
	Size int64 `json:"size"`
	// URL optionally names where to fetch the blob from; without it the
	// agent fetches it from the server (or the release directory) by sha256.
	URL string `json:"url,omitempty"`
}

// Secret is an age-encrypted file, decrypted only on the node.
type Secret struct {
	// Ciphertext is the armored age file.
	Ciphertext string `json:"ciphertext"`
	// Group owning the decrypted file (default root).
	Group string `json:"group,omitempty"`
	// Mode is the octal permission of the decrypted file (default 0400).
	Mode string `json:"mode,omitempty"`
	// Name of the secret; the decrypted file is /run/slipway/secrets/<N>/<Name>.
	Name string `json:"name"`
	// Owner of the decrypted file (default root).
	Owner string `json:"owner,omitempty"`
}

// Health holds the checks and timings that decide a generation's health.
// Every unit the agent starts is also checked implicitly (active, or a
// oneshot that exited successfully).
type Health struct {
	// Checks run after the switch until the generation is healthy.
	Checks []Check `json:"checks,omitempty"`
	// HealthyDeadline: not healthy within this long after the switch → revert
	// (default 2m).
	HealthyDeadline Duration `json:"healthy_deadline,omitempty"`
	// MinHealthyTime: every check must stay green this long (default 5s).
	MinHealthyTime Duration `json:"min_healthy_time,omitempty"`
}

// Check kinds.
const (
	CheckUnit = "unit" // Target is a unit name that must be active
	CheckHTTP = "http" // Target is an http(s) URL that must answer 2xx
	CheckTCP  = "tcp"  // Target is host:port that must accept a connection
	CheckExec = "exec" // Command must exit 0
)

// Check is one health check.
type Check struct {
	// Command is the argv of an exec check (absolute program path first).
	Command []string `json:"command,omitempty"`
	// FailureThreshold: this many consecutive failures make the generation
	// unhealthy at once (default 3), counted from the check's first pass or
	// from the end of InitialDelay, whichever comes first.
	FailureThreshold int `json:"failure_threshold,omitempty"`
	// InitialDelay is the check's startup grace, from the start of
	// verification: failures before it (and before a first pass) are not
	// counted toward FailureThreshold. Default DefaultInitialDelay; at most
	// HealthyDeadline, which stays the outer bound.
	InitialDelay Duration `json:"initial_delay,omitempty"`
	// Interval between two runs of the check (default 2s).
	Interval Duration `json:"interval,omitempty"`
	// Kind is unit, http, tcp or exec.
	Kind string `json:"kind"`
	// Name identifies the check in reports.
	Name string `json:"name"`
	// Target is the unit name, URL or host:port (empty for exec).
	Target string `json:"target,omitempty"`
	// Timeout of one run (default 5s).
	Timeout Duration `json:"timeout,omitempty"`
}

// NixOS selects the NixOS driver: a prebuilt system closure.
type NixOS struct {
	// Substituters are binary cache URLs the closure is realised from.
	Substituters []string `json:"substituters,omitempty"`
	// Toplevel is the /nix/store path of the system toplevel.
	Toplevel string `json:"toplevel"`
	// TrustedPublicKeys verify the substituters' signatures.
	TrustedPublicKeys []string `json:"trusted_public_keys,omitempty"`
}

// Duration is a time.Duration encoded as a Go duration string ("1m30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON decodes a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}
