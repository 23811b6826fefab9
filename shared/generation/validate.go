package generation

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxUnits is the most units one generation may ship.
const MaxUnits = 1000

// MaxConfirmTimeout is the longest confirm_timeout a manifest may ask for.
const MaxConfirmTimeout = 24 * time.Hour

// MaxFailureThreshold is the largest failure_threshold of a health check.
const MaxFailureThreshold = 1000

// ReservedUnitPrefix starts the names of the agent's own units, which a
// generation may never ship.
const ReservedUnitPrefix = "slipway-agent"

// ForbiddenLinkDirs are the directories a link may not be, be under, or be
// an ancestor of, whatever prefixes the agent allows. Unit files reach
// /etc/systemd through Manifest.Units only.
var ForbiddenLinkDirs = []string{"/boot", "/dev", "/etc/systemd", "/nix", "/proc", "/run", "/sys"}

// allUnitSuffixes are every systemd unit type, for names a generation only
// refers to (unit health checks) and does not ship.
var allUnitSuffixes = []string{
	".automount", ".device", ".mount", ".path", ".scope", ".service",
	".slice", ".socket", ".swap", ".target", ".timer",
}

// Limits of paths, as Linux has them (NAME_MAX, PATH_MAX).
const (
	maxPathElem = 255
	maxPath     = 4096
)

const ageArmorHeader = "-----BEGIN AGE ENCRYPTED FILE-----"

var (
	nameRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
	releaseNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	userRE        = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}\$?$`)
	storePathRE   = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$`)
	sha256RE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateOptions are the node-specific parts of validation.
type ValidateOptions struct {
	// LinkPrefixes, when non-nil, are the directories links must lie
	// strictly under ("/etc" allows "/etc/x", not "/etc" nor "/etcx"). An
	// empty non-nil slice allows no links. Nil means no prefix rule: the
	// release loader checks structure, the agent passes its prefixes.
	LinkPrefixes []string
}

// ValidName reports whether s is a valid artifact, secret or health check
// name: 1 to 255 of [A-Za-z0-9._-], not starting with '.', '_' or '-' (so
// never "." or "..").
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool { return sha256RE.MatchString(s) }

// ValidUnitName checks a name for Manifest.Units: a systemd unit name
// (1 to 255 of [A-Za-z0-9:_.\-@\\]) ending in one of UnitSuffixes, with a
// non-empty prefix. Templates ("foo@.service") are allowed; instances
// ("foo@bar.service") are not, since a generation ships files and an
// instance has none of its own. Names starting with ReservedUnitPrefix
// belong to the agent. The error is the reason, without the name.
func ValidUnitName(name string) error {
	instance, err := checkUnitName(name, UnitSuffixes)
	if err != nil {
		return err
	}
	if instance != "" {
		at := strings.IndexByte(name, '@')
		template := name[:at+1] + name[at+1+len(instance):]
		return fmt.Errorf("is an instance of template %q: ship the template and a unit that pulls the instance in (e.g. Wants=%s)", template, name)
	}
	if strings.HasPrefix(name, ReservedUnitPrefix) {
		return fmt.Errorf("names starting with %q are reserved for the agent's own units", ReservedUnitPrefix)
	}
	return nil
}

// checkUnitName checks the systemd syntax of a unit name with one of
// suffixes and returns its instance ("" for plain and template names).
// The charset includes '\', which systemd allows for escaped paths
// ("srv-a\x2db.mount").
func checkUnitName(name string, suffixes []string) (instance string, err error) {
	if name == "" {
		return "", errors.New("unit name is empty")
	}
	if len(name) > 255 {
		return "", fmt.Errorf("unit name is %d bytes, longer than 255", len(name))
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.-@\\", c) >= 0) {
			return "", fmt.Errorf("unit name contains %q: allowed are letters, digits and :_.-@\\", c)
		}
	}
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 || !slices.Contains(suffixes, name[dot:]) {
		return "", fmt.Errorf("unit name must end in one of %s", strings.Join(suffixes, " "))
	}
	stem := name[:dot]
	if stem == "" {
		return "", errors.New("unit name has nothing before its suffix")
	}
	at := strings.IndexByte(stem, '@')
	if at < 0 {
		return "", nil
	}
	if at == 0 {
		return "", errors.New("unit name has nothing before '@'")
	}
	return stem[at+1:], nil
}

// Validate checks every rule of the manifest and returns all problems
// found, joined with errors.Join, each a *FieldError (so errors.Is(err,
// ErrInvalid) holds). Problems are reported in a stable order. Validate
// never panics, whatever m holds.
func (m *Manifest) Validate(opts ValidateOptions) error {
	if m == nil {
		return &FieldError{Field: "manifest", Reason: "is nil"}
	}
	v := &validator{m: m, opts: opts}
	v.name()
	v.units()
	v.artifacts()
	v.files()
	v.secrets()
	v.links()
	v.health()
	v.confirmTimeout()
	v.nixos()
	return errors.Join(v.errs...)
}

type validator struct {
	m             *Manifest
	opts          ValidateOptions
	errs          []error
	artifactNames map[string]bool
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) addErr(field string, err error) {
	if err != nil {
		v.errs = append(v.errs, &FieldError{Field: field, Reason: err.Error()})
	}
}

func quoteKey(field, key string) string { return field + "[" + strconv.Quote(key) + "]" }

func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

func (v *validator) name() {
	if n := v.m.Name; n != "" && !releaseNameRE.MatchString(n) {
		v.add("name", "must be 1 to 63 of letters, digits and ._- starting with a letter or digit")
	}
}

func (v *validator) units() {
	if n := len(v.m.Units); n > MaxUnits {
		v.add("units", "%d units, at most %d allowed", n, MaxUnits)
	}
	if v.m.NixOS != nil && len(v.m.Units) > 0 {
		v.add("units", "must be empty when nixos is set: the NixOS closure carries the units")
	}
	for _, name := range slices.Sorted(maps.Keys(v.m.Units)) {
		f := quoteKey("units", name)
		v.addErr(f, ValidUnitName(name))
		if err := checkText(v.m.Units[name], MaxUnitBytes, false); err != nil {
			v.addErr(f, err)
			continue
		}
		for _, e := range UnitProblems(v.m, name) {
			v.addErr(f, e)
		}
	}
}

// checkText checks unit and file text: valid UTF-8, no NUL, at most max
// bytes, and non-empty unless emptyOK.
func checkText(s string, max int, emptyOK bool) error {
	switch {
	case s == "" && !emptyOK:
		return errors.New("is empty")
	case len(s) > max:
		return fmt.Errorf("is %d bytes, over the limit of %d", len(s), max)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

func (v *validator) artifacts() {
	v.artifactNames = make(map[string]bool, len(v.m.Artifacts))
	for i, a := range v.m.Artifacts {
		f := index("artifacts", i)
		switch {
		case !ValidName(a.Name):
			v.add(f+".name", "%q is not a valid name: 1 to 255 of letters, digits and ._- starting with a letter or digit", a.Name)
		case v.artifactNames[a.Name]:
			v.add(f+".name", "duplicate artifact %q", a.Name)
		}
		// Known even when invalid, so references to it do not pile up
		// errors that have one cause.
		v.artifactNames[a.Name] = true
		if !ValidSHA256(a.SHA256) {
			v.add(f+".sha256", "must be 64 lowercase hex digits")
		}
		if a.Size < 0 || a.Size > MaxArtifactBytes {
			v.add(f+".size", "%d is out of range 0..%d", a.Size, int64(MaxArtifactBytes))
		}
		v.mode(f+".mode", a.Mode, fileDenyBits)
		if a.URL != "" {
			v.addErr(f+".url", checkURL(a.URL, "http", "https"))
		}
	}
}

// World-access bits refused unless the manifest sets allow_world_writable.
const (
	worldRead      = 0o004
	worldWrite     = 0o002
	fileDenyBits   = worldWrite
	secretDenyBits = worldRead | worldWrite
)

// mode checks a permission string and, unless the manifest allows world
// access, that it has none of the deny bits.
func (v *validator) mode(field, mode string, deny fs.FileMode) {
	if mode == "" {
		return
	}
	m, err := ParseMode(mode)
	if err != nil {
		v.addErr(field, err)
		return
	}
	if m&deny != 0 && !v.m.AllowWorldWritable {
		v.errs = append(v.errs, &FieldError{
			Field:  field,
			Reason: fmt.Sprintf("%s grants %s; set allow_world_writable = true to allow it", mode, worldWhat(m&deny)),
			cause:  ErrWorldAccess,
		})
	}
}

func worldWhat(bits fs.FileMode) string {
	switch bits {
	case worldWrite:
		return "write to every user"
	case worldRead:
		return "read to every user"
	}
	return "read and write to every user"
}

// checkURL checks that s is an absolute URL with one of schemes and, except
// for file URLs, a host.
func checkURL(s string, schemes ...string) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL: %v", err)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return fmt.Errorf("URL scheme must be one of %s", strings.Join(schemes, ", "))
	}
	if u.Scheme == "file" {
		if u.Path == "" {
			return errors.New("file URL has no path")
		}
	} else if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}

func (v *validator) files() {
	for _, p := range slices.Sorted(maps.Keys(v.m.Files)) {
		file := v.m.Files[p]
		f := quoteKey("files", p)
		if err := checkRelPath(p); err != nil {
			v.addErr(f, err)
		} else {
			for d := path.Dir(p); d != "."; d = path.Dir(d) {
				if _, ok := v.m.Files[d]; ok {
					v.add(f, "is inside %q, which is a file", d)
					break
				}
			}
		}
		switch {
		case file.Artifact != "" && file.Content != "":
			v.add(f, "has both content and artifact: set one")
		case file.Artifact != "":
			if !v.artifactNames[file.Artifact] {
				v.add(f+".artifact", "no artifact named %q", file.Artifact)
			}
		default:
			v.addErr(f+".content", checkText(file.Content, MaxFileBytes, true))
		}
		v.mode(f+".mode", file.Mode, fileDenyBits)
	}
}

// checkPathText checks what relative and absolute paths share: valid UTF-8,
// no NUL, elements of at most 255 bytes, at most 4096 bytes in all.
func checkPathText(p string) error {
	switch {
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("path contains a NUL byte")
	case len(p) > maxPath:
		return fmt.Errorf("path is %d bytes, longer than %d", len(p), maxPath)
	}
	for e := range strings.SplitSeq(p, "/") {
		if len(e) > maxPathElem {
			return fmt.Errorf("path element is %d bytes, longer than %d", len(e), maxPathElem)
		}
	}
	return nil
}

func checkRelPath(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("path is empty")
	case path.IsAbs(p):
		return errors.New("path must be relative to the generation's files/ directory")
	case path.Clean(p) != p:
		return fmt.Errorf("path is not clean: write %q", path.Clean(p))
	case p == ".." || strings.HasPrefix(p, "../"):
		return errors.New(`path must not contain ".."`)
	}
	return checkPathText(p)
}

// under reports whether p lies strictly under directory dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/" && strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, dir+"/")
}

func checkAbsPath(p string) error {
	switch {
	case p == "":
		return errors.New("path is empty")
	case !path.IsAbs(p):
		return errors.New("path must be absolute")
	case path.Clean(p) != p:
		return fmt.Errorf("path is not clean: write %q", path.Clean(p))
	case p == "/":
		return errors.New(`path must not be "/"`)
	}
	if err := checkPathText(p); err != nil {
		return err
	}
	for _, d := range ForbiddenLinkDirs {
		switch {
		case p == d || under(p, d):
			return fmt.Errorf("links may not be placed in %s", d)
		case under(d, p):
			return fmt.Errorf("link would replace %s, which contains %s", p, d)
		}
	}
	return nil
}

func (v *validator) secrets() {
	seen := make(map[string]bool, len(v.m.Secrets))
	for i, s := range v.m.Secrets {
		f := index("secrets", i)
		switch {
		case !ValidName(s.Name):
			v.add(f+".name", "%q is not a valid name: 1 to 255 of letters, digits and ._- starting with a letter or digit", s.Name)
		case seen[s.Name]:
			v.add(f+".name", "duplicate secret %q", s.Name)
		default:
			seen[s.Name] = true
		}
		switch c := s.Ciphertext; {
		case c == "":
			v.add(f+".ciphertext", "is empty")
		case len(c) > MaxSecretBytes:
			v.add(f+".ciphertext", "is %d bytes, over the limit of %d", len(c), MaxSecretBytes)
		case !strings.HasPrefix(c, ageArmorHeader):
			v.add(f+".ciphertext", "must be an armored age file starting with %q", ageArmorHeader)
		case !utf8.ValidString(c):
			v.add(f+".ciphertext", "is not valid UTF-8")
		}
		if s.Owner != "" && !userRE.MatchString(s.Owner) {
			v.add(f+".owner", "%q is not a valid user name", s.Owner)
		}
		if s.Group != "" && !userRE.MatchString(s.Group) {
			v.add(f+".group", "%q is not a valid group name", s.Group)
		}
		v.mode(f+".mode", s.Mode, secretDenyBits)
	}
}

func (v *validator) links() {
	paths := make(map[string]bool, len(v.m.Links))
	for _, l := range v.m.Links {
		paths[l.Path] = true
	}
	seen := make(map[string]bool, len(v.m.Links))
	for i, l := range v.m.Links {
		f := index("links", i)
		if err := checkAbsPath(l.Path); err != nil {
			v.addErr(f+".path", err)
		} else if seen[l.Path] {
			v.add(f+".path", "duplicate link %q", l.Path)
		} else if !v.allowedLink(l.Path) {
			v.add(f+".path", "must be under one of the allowed prefixes %s", strings.Join(v.opts.LinkPrefixes, " "))
		} else {
			for d := path.Dir(l.Path); d != "/"; d = path.Dir(d) {
				if paths[d] {
					v.add(f+".path", "is inside %q, which is a link", d)
					break
				}
			}
		}
		seen[l.Path] = true
		switch {
		case l.File != "" && l.Artifact != "":
			v.add(f, "has both file and artifact: set one")
		case l.File != "":
			if _, ok := v.m.Files[l.File]; !ok {
				v.add(f+".file", "no file %q in files", l.File)
			}
		case l.Artifact != "":
			if !v.artifactNames[l.Artifact] {
				v.add(f+".artifact", "no artifact named %q", l.Artifact)
			}
		default:
			v.add(f, "needs a file or an artifact")
		}
	}
}

func (v *validator) allowedLink(p string) bool {
	if v.opts.LinkPrefixes == nil {
		return true
	}
	return slices.ContainsFunc(v.opts.LinkPrefixes, func(dir string) bool {
		return path.IsAbs(dir) && under(p, path.Clean(dir))
	})
}

func (v *validator) health() {
	h := v.m.Health
	if h.MinHealthyTime < 0 {
		v.add("health.min_healthy_time", "must not be negative")
	}
	if h.HealthyDeadline < 0 {
		v.add("health.healthy_deadline", "must not be negative")
	}
	if h.MinHealthyTime >= 0 && h.HealthyDeadline >= 0 {
		minT := h.MinHealthyTime.Or(DefaultMinHealthyTime)
		deadline := h.HealthyDeadline.Or(DefaultHealthyDeadline)
		switch {
		case deadline > minT:
		case h.HealthyDeadline != 0:
			v.add("health.healthy_deadline", "%v must be longer than min_healthy_time %v", deadline, minT)
		default:
			v.add("health.min_healthy_time", "%v must be shorter than the default healthy_deadline %v: set healthy_deadline", minT, deadline)
		}
	}
	seen := make(map[string]bool, len(h.Checks))
	for i, c := range h.Checks {
		f := index("health.checks", i)
		switch {
		case !ValidName(c.Name):
			v.add(f+".name", "%q is not a valid name: 1 to 255 of letters, digits and ._- starting with a letter or digit", c.Name)
		case seen[c.Name]:
			v.add(f+".name", "duplicate check %q", c.Name)
		default:
			seen[c.Name] = true
		}
		v.check(f, c)
		if c.Interval < 0 {
			v.add(f+".interval", "must not be negative")
		}
		if c.Timeout < 0 {
			v.add(f+".timeout", "must not be negative")
		}
		if c.FailureThreshold < 0 || c.FailureThreshold > MaxFailureThreshold {
			v.add(f+".failure_threshold", "%d is out of range 0..%d", c.FailureThreshold, MaxFailureThreshold)
		}
		switch deadline := h.HealthyDeadline.Or(DefaultHealthyDeadline); {
		case c.InitialDelay < 0:
			v.add(f+".initial_delay", "must not be negative")
		case h.HealthyDeadline >= 0 && c.InitialDelay.D() > deadline:
			v.add(f+".initial_delay", "%v is longer than healthy_deadline %v: the deadline would end the startup grace", c.InitialDelay.D(), deadline)
		}
	}
}

// check checks the kind, target and command of check c at field f.
func (v *validator) check(f string, c Check) {
	if c.Kind != CheckExec && len(c.Command) > 0 {
		v.add(f+".command", "is only for exec checks")
	}
	switch c.Kind {
	case CheckUnit:
		if _, err := checkUnitName(c.Target, allUnitSuffixes); err != nil {
			v.addErr(f+".target", err)
		}
	case CheckHTTP:
		v.addErr(f+".target", checkURL(c.Target, "http", "https"))
	case CheckTCP:
		v.addErr(f+".target", checkHostPort(c.Target))
	case CheckExec:
		if c.Target != "" {
			v.add(f+".target", "must be empty for exec checks: put the program in command")
		}
		if len(c.Command) == 0 {
			v.add(f+".command", "is empty: an exec check needs a program")
		} else if !path.IsAbs(c.Command[0]) {
			v.add(f+".command", "program %q must be an absolute path", c.Command[0])
		}
		for j, arg := range c.Command {
			if !utf8.ValidString(arg) || strings.IndexByte(arg, 0) >= 0 {
				v.add(index(f+".command", j), "must be valid UTF-8 without NUL bytes")
			}
		}
	default:
		v.add(f+".kind", "%q is not one of unit, http, tcp, exec", c.Kind)
	}
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port: %v", err)
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q must be a number 1..65535", port)
	}
	return nil
}

func (v *validator) confirmTimeout() {
	if t := v.m.ConfirmTimeout; t < 0 || t.D() > MaxConfirmTimeout {
		v.add("confirm_timeout", "%v is out of range 0..%v", t.D(), MaxConfirmTimeout)
	}
}

func (v *validator) nixos() {
	n := v.m.NixOS
	if n == nil {
		return
	}
	if !storePathRE.MatchString(n.Toplevel) {
		v.add("nixos.toplevel", "%q is not a /nix/store path", n.Toplevel)
	}
	for i, s := range n.Substituters {
		v.addErr(index("nixos.substituters", i), checkURL(s, "http", "https", "file", "s3", "ssh", "ssh-ng"))
	}
	for i, k := range n.TrustedPublicKeys {
		v.addErr(index("nixos.trusted_public_keys", i), checkNixKey(k))
	}
}

// checkNixKey checks a Nix signing public key, "name:base64(ed25519 key)".
func checkNixKey(k string) error {
	name, key, ok := strings.Cut(k, ":")
	if !ok || name == "" {
		return errors.New(`must be "name:base64-key", like "cache.nixos.org-1:6NCH…="`)
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(key); err != nil || len(b) != 32 {
		return errors.New("key must be the base64 of a 32-byte ed25519 public key")
	}
	return nil
}
