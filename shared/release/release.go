// Package release loads a release directory — the slipway.toml, units/,
// files/ and secrets/ an operator writes — into a structurally validated
// generation manifest plus the settings only the server uses (target
// selector, rollout strategy). `slipway-agent apply DIR` and `slipway deploy`
// both load releases through it (Load).
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/humanize"
	"github.com/slipway-dev/slipway/shared/window"
)

// Strategy kinds.
const (
	KindAllAtOnce = "all-at-once" // every target node at once (the default)
	KindRolling   = "rolling"     // in batches of BatchSize
	KindCanary    = "canary"      // Canary or CanaryPercent nodes first, then the rest
)

// What a rollout does about a target node that is down (Strategy.OnNodeDown).
const (
	NodeDownWait = "wait" // wait for the node to come back (the default)
	NodeDownSkip = "skip" // leave it behind and go on
	NodeDownFail = "fail" // fail the rollout
)

// Strategy is the rollout strategy of a release, from [strategy]. The loader
// checks it lightly (known kinds, non-negative numbers); the server
// interprets it.
type Strategy struct {
	// Kind is KindAllAtOnce, KindRolling or KindCanary.
	Kind string
	// Canary is the number of canary nodes (exclusive with CanaryPercent).
	Canary int
	// CanaryPercent is the share of target nodes, 0–100, used as canaries.
	CanaryPercent int
	// BatchSize is the number of nodes switched per wave.
	BatchSize int
	// MaxParallel bounds the nodes switching at once (0: no bound).
	MaxParallel int
	// MaxUnavailable bounds the nodes unavailable at once (0: no bound).
	MaxUnavailable int
	// MaxFailures is the number of failed nodes the rollout tolerates.
	MaxFailures int
	// Stagger is the pause between waves.
	Stagger time.Duration
	// Analysis is the canary window after which the rollout promotes itself;
	// zero means an operator promotes.
	Analysis time.Duration
	// NodeDeadline bounds a node's publish → confirmed time in a rollout;
	// zero means healthy_deadline + confirm_timeout + 30s.
	NodeDeadline time.Duration
	// AutoRevert reverts the nodes already switched when the rollout fails.
	AutoRevert bool
	// OnNodeDown is NodeDownWait, NodeDownSkip or NodeDownFail.
	OnNodeDown string
	// Windows are maintenance windows (shared/window): the rollout starts
	// a new wave only inside one of them. None: at any time.
	Windows []string
	// Gates are the Prometheus analysis gates of [[analysis]], in order.
	// The loader only decodes them; the server (and `slipway deploy`
	// before it asks) checks them (server/analysis).
	Gates []Gate
}

// Gate is one [[analysis]] gate: a PromQL query with placeholders and a
// condition on its result, measured every Interval while a wave is
// analysing. Zero values mean the server's defaults.
type Gate struct {
	Name                  string
	Query                 string
	Condition             string
	Scope                 string // every-series or aggregate
	Aggregate             string // sum, max, min or avg, with scope aggregate
	Interval              time.Duration
	Count                 int
	FailureLimit          int
	ConsecutiveErrorLimit *int // nil: the server's default
}

// Release is a loaded release directory.
type Release struct {
	// Dir is the absolute path of the release directory, links resolved.
	Dir string
	// Name is the release name (also Manifest.Name).
	Name string
	// Target is the label selector of the target nodes, as written; the
	// server parses it.
	Target string
	// Strategy is the rollout strategy.
	Strategy Strategy
	// Manifest is the generation the release describes, validated
	// structurally (no link prefix restriction: that is the agent's policy).
	Manifest *generation.Manifest
	// Blobs maps the sha256 of every artifact with a path to the absolute
	// path of its file in the release directory.
	Blobs map[string]string
}

// Load reads the release directory dir and builds its generation manifest.
//
// A release directory is outside input, and Load only reads it. It never
// executes anything from the release, never follows a symbolic link out of
// the release directory (and follows none inside units/, files/ and
// secrets/), never reads a file that no rule below names, never decrypts a
// secret, and never writes anything. Every error names the file, relative to
// the release directory, and for slipway.toml the key.
//
// The layout:
//
//	slipway.toml  the release description (strict: unknown keys are errors)
//	units/        every regular file is a systemd unit; file name = unit name
//	files/        every regular file, recursively, becomes Manifest.Files[relpath]
//	secrets/      <name>.age age files, armored or binary
//	anything else is read only when an [[artifact]] path names it
//
// Decisions:
//   - Release.Dir is the directory with symbolic links resolved, so the
//     Blobs paths stay valid when a link to the release directory moves.
//   - Modes are written into the manifest explicitly: a file under files/
//     is "0755" when any exec bit is set on disk, else "0644"; an artifact
//     without mode is "0644".
//   - A file under files/ that an [[artifact]] path names is not inlined: its
//     Manifest.Files entry refers to the artifact. This is how a large or
//     binary file is placed in files/.
//   - Files in secrets/ that do not end in ".age" and are not named by a
//     [[secret]] are ignored (agenix keeps its secrets.nix there), as are
//     directories in secrets/; symbolic links, fifos and devices there are
//     errors.
//   - strategy.auto_revert defaults to false, as in Nomad; the agent's own
//     revert of an unhealthy switch does not depend on it.
//   - Load reports every problem it finds, joined, rather than the first;
//     it validates the manifest only when the release itself loaded cleanly.
//   - Unit files are checked for syntax (shared/unitfile: systemd's line
//     rules, stricter where systemd would skip a line) and for the paths
//     of the generation they name — current/artifacts/<name>,
//     current/files/<path>, secrets/current/<name> — that the release
//     lacks; each problem reads "units/<name>:<line>: …".
//
// Errors are prefixed "release DIR: " and name the file and, for
// slipway.toml, the key; several problems are joined. A missing slipway.toml
// matches fs.ErrNotExist. Errors from the manifest's validation wrap
// *generation.FieldError, reachable with errors.As.
func Load(dir string) (*Release, error) {
	r, err := load(dir)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", dir, err)
	}
	return r, nil
}

func load(dir string) (*Release, error) {
	root, err := resolveRoot(dir)
	if err != nil {
		return nil, err
	}
	l := &loader{
		root:          root,
		m:             &generation.Manifest{},
		blobs:         map[string]string{},
		artifactFiles: map[string]string{},
	}
	data, err := l.readConfig()
	if err != nil {
		return nil, err
	}
	c, md, err := decodeConfig(data)
	if err != nil {
		return nil, err
	}

	l.header(c, md)
	strategy := l.strategy(c.Strategy)
	strategy.Gates = append(strategy.Gates, gates(c.Analysis)...)
	l.artifacts(c.Artifacts)
	l.units()
	l.files(c.Files)
	l.secrets(c.Secrets)
	l.health(c.Health)
	l.linksAndNixOS(c)
	l.unitChecks(c)
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	if err := l.m.Validate(generation.ValidateOptions{}); err != nil {
		return nil, err
	}
	return &Release{
		Dir:      root,
		Name:     c.Name,
		Target:   c.Target,
		Strategy: strategy,
		Manifest: l.m,
		Blobs:    l.blobs,
	}, nil
}

// header sets the manifest's top-level keys: name, confirm_timeout (or
// health.confirm_timeout, not both) and allow_world_writable.
func (l *loader) header(c *config, md toml.MetaData) {
	m := l.m
	m.Name = c.Name
	if c.Name == "" {
		l.fail("%s: name is required", configName)
	} else if !generation.ValidName(c.Name) {
		l.fail("%s: name %q: want letters, digits and ._-, starting with a letter or digit", configName, c.Name)
	}
	m.ConfirmTimeout = generation.Duration(c.ConfirmTimeout)
	m.AllowWorldWritable = c.AllowWorldWritable
	if md.IsDefined("health", "confirm_timeout") {
		if md.IsDefined("confirm_timeout") {
			l.fail("%s: confirm_timeout and health.confirm_timeout are both set; keep one", configName)
		}
		m.ConfirmTimeout = generation.Duration(c.Health.ConfirmTimeout)
	}
}

// gates are the strategy's analysis gates, one per [[analysis]] entry.
func gates(as []analysisConfig) []Gate {
	var out []Gate
	for _, a := range as {
		out = append(out, Gate{Name: a.Name, Query: a.Query, Condition: a.Condition, Scope: a.Scope, Aggregate: a.Aggregate,
			Interval: time.Duration(a.Interval), Count: a.Count, FailureLimit: a.FailureLimit, ConsecutiveErrorLimit: a.ConsecutiveErrorLimit})
	}
	return out
}

// linksAndNixOS copies the [[link]] entries and the [nixos] table into the
// manifest.
func (l *loader) linksAndNixOS(c *config) {
	for _, k := range c.Links {
		l.m.Links = append(l.m.Links, generation.Link{Path: k.Path, File: k.File, Artifact: k.Artifact})
	}
	if n := c.NixOS; n != nil {
		l.m.NixOS = &generation.NixOS{
			Toplevel:          n.Toplevel,
			Substituters:      n.Substituters,
			TrustedPublicKeys: n.TrustedPublicKeys,
		}
	}
}

// loader holds the state of one Load.
type loader struct {
	root string // the release directory, absolute, links resolved
	m    *generation.Manifest
	errs []error
	// blobs maps sha256 to the absolute path of a path artifact.
	blobs map[string]string
	// artifactFiles maps a path under files/ (slash separated, without the
	// "files/" prefix) to the artifact whose path names it.
	artifactFiles map[string]string
	// inline counts the bytes of units, files and secrets read, which all
	// end up in the manifest.
	inline int64
}

func (l *loader) fail(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

// errOverBudget is returned by readInline once the inline content exceeds
// what a manifest may hold; the error naming the file has been reported.
var errOverBudget = errors.New("inline content over the manifest limit")

// readInline reads a file whose content goes into the manifest (a unit, a
// file under files/, a secret). Once the content read adds up to more than
// generation.MaxManifestBytes it reports that, and reads nothing more.
func (l *loader) readInline(abs, rel string, limit int64) ([]byte, error) {
	if l.inline > generation.MaxManifestBytes {
		return nil, errOverBudget
	}
	data, err := readRegular(abs, limit)
	if err != nil {
		return nil, err
	}
	l.inline += int64(len(data))
	if l.inline > generation.MaxManifestBytes {
		l.fail("%s: units, files and secrets add up to more than %s, the limit of a manifest; ship large files as an [[artifact]]",
			rel, humanize.Limit(generation.MaxManifestBytes))
		return nil, errOverBudget
	}
	return data, nil
}

// entry names the i-th entry of an array of tables in errors: by its name
// when it has one, else by its position (from 1).
func entry(kind, name string, i int) string {
	if name != "" {
		return fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Sprintf("%s #%d", kind, i+1)
}

func (l *loader) readConfig() ([]byte, error) {
	abs, _, err := l.resolve(configName)
	var data []byte
	if err == nil {
		data, err = readRegular(abs, maxConfigBytes)
	}
	switch {
	case errors.Is(err, errNotFound):
		return nil, fmt.Errorf("%s: %w; a release directory holds slipway.toml and units/, files/, secrets/", configName, err)
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("%s: larger than %s", configName, humanize.Limit(maxConfigBytes))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", configName, err)
	}
	return data, nil
}

func (l *loader) strategy(c strategyConfig) Strategy {
	s := Strategy{
		Kind:           c.Kind,
		BatchSize:      c.BatchSize,
		MaxParallel:    c.MaxParallel,
		MaxUnavailable: c.MaxUnavailable,
		MaxFailures:    c.MaxFailures,
		Stagger:        time.Duration(c.Stagger),
		Analysis:       time.Duration(c.Analysis),
		NodeDeadline:   time.Duration(c.NodeDeadline),
		AutoRevert:     c.AutoRevert,
		OnNodeDown:     c.OnNodeDown,
		Windows:        c.Windows,
	}
	for i, w := range c.Windows {
		if _, err := window.Parse(w); err != nil {
			l.fail("%s: strategy.windows[%d]: %v", configName, i, err)
		}
	}
	l.strategyKinds(&s)
	if c.Canary != nil && c.CanaryPercent != nil {
		l.fail("%s: strategy.canary and strategy.canary_percent are exclusive; set one", configName)
	}
	if c.Canary != nil {
		s.Canary = *c.Canary
	}
	if c.CanaryPercent != nil {
		s.CanaryPercent = *c.CanaryPercent
	}
	l.strategyCounts(s)
	return s
}

// strategyKinds defaults and checks the strategy's kind and on_node_down.
func (l *loader) strategyKinds(s *Strategy) {
	switch s.Kind {
	case "":
		s.Kind = KindAllAtOnce
	case KindAllAtOnce, KindRolling, KindCanary:
	default:
		l.fail("%s: strategy.kind %q: want %s, %s or %s", configName, s.Kind, KindAllAtOnce, KindRolling, KindCanary)
	}
	switch s.OnNodeDown {
	case "":
		s.OnNodeDown = NodeDownWait
	case NodeDownWait, NodeDownSkip, NodeDownFail:
	default:
		l.fail("%s: strategy.on_node_down %q: want %s, %s or %s", configName, s.OnNodeDown, NodeDownWait, NodeDownSkip, NodeDownFail)
	}
}

// strategyCounts checks that no count of the strategy is negative and
// canary_percent is at most 100.
func (l *loader) strategyCounts(s Strategy) {
	for _, n := range []struct {
		key string
		v   int
	}{
		{"canary", s.Canary},
		{"canary_percent", s.CanaryPercent},
		{"batch_size", s.BatchSize},
		{"max_parallel", s.MaxParallel},
		{"max_unavailable", s.MaxUnavailable},
		{"max_failures", s.MaxFailures},
	} {
		if n.v < 0 {
			l.fail("%s: strategy.%s = %d: must not be negative", configName, n.key, n.v)
		}
	}
	if s.CanaryPercent > 100 {
		l.fail("%s: strategy.canary_percent = %d: must be at most 100", configName, s.CanaryPercent)
	}
}

func (l *loader) artifacts(cs []artifactConfig) {
	seen := map[string]bool{}
	for i, c := range cs {
		where := configName + ": " + entry("artifact", c.Name, i)
		if c.Name == "" {
			l.fail("%s: name is required", where)
		} else if seen[c.Name] {
			l.fail("%s: name already used by another [[artifact]]", where)
			continue
		}
		seen[c.Name] = true
		a := generation.Artifact{Name: c.Name, Mode: c.Mode}
		if a.Mode == "" {
			a.Mode = generation.DefaultArtifactMode
		}
		switch {
		case c.Path != "" && c.URL != "":
			l.fail("%s: path and url are exclusive; set one", where)
			continue
		case c.Path != "":
			if !l.pathArtifact(where, c, &a) {
				continue
			}
		case c.URL != "":
			if !l.urlArtifact(where, c, &a) {
				continue
			}
		default:
			l.fail("%s: set path (a file in the release directory) or url (with sha256 and size)", where)
			continue
		}
		l.m.Artifacts = append(l.m.Artifacts, a)
	}
}

// pathArtifact hashes the file an artifact's path names into a, and records
// it in l.blobs.
func (l *loader) pathArtifact(where string, c artifactConfig, a *generation.Artifact) bool {
	abs, rel, sum, size, err := l.hashFile(c.Path)
	if err != nil {
		l.fail("%s: path %q: %w", where, c.Path, err)
		return false
	}
	ok := true
	if c.SHA256 != "" && c.SHA256 != sum {
		l.fail("%s: sha256 %q does not match the file %s (sha256 %s)", where, c.SHA256, filepath.ToSlash(rel), sum)
		ok = false
	}
	if c.Size != nil && *c.Size != size {
		l.fail("%s: size %d does not match the file %s (%d bytes)", where, *c.Size, filepath.ToSlash(rel), size)
		ok = false
	}
	if key, in := strings.CutPrefix(filepath.ToSlash(rel), filesDir+"/"); in {
		if other, dup := l.artifactFiles[key]; dup {
			l.fail("%s: path %q: already the content of artifact %q", where, c.Path, other)
			ok = false
		}
		l.artifactFiles[key] = c.Name
	}
	a.SHA256, a.Size = sum, size
	if _, dup := l.blobs[sum]; !dup {
		l.blobs[sum] = abs
	}
	return ok
}

// hashFile resolves the release-relative path p and stream-hashes the file.
func (l *loader) hashFile(p string) (abs, rel, sum string, size int64, err error) {
	abs, rel, err = l.resolve(p)
	if err != nil {
		return "", "", "", 0, err
	}
	f, err := openRegular(abs)
	if err != nil {
		return "", "", "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(h, io.LimitReader(f, generation.MaxArtifactBytes+1))
	if err != nil {
		return "", "", "", 0, pathErr(err)
	}
	if size > generation.MaxArtifactBytes {
		return "", "", "", 0, fmt.Errorf("larger than %s", humanize.Limit(generation.MaxArtifactBytes))
	}
	return abs, rel, hex.EncodeToString(h.Sum(nil)), size, nil
}

func (l *loader) urlArtifact(where string, c artifactConfig, a *generation.Artifact) bool {
	ok := true
	switch {
	case c.SHA256 == "":
		l.fail("%s: sha256 is required with url", where)
		ok = false
	case !generation.ValidSHA256(c.SHA256):
		l.fail("%s: sha256 %q: want 64 lowercase hex digits", where, c.SHA256)
		ok = false
	}
	switch {
	case c.Size == nil:
		l.fail("%s: size is required with url", where)
		ok = false
	case *c.Size < 0:
		l.fail("%s: size %d: must not be negative", where, *c.Size)
		ok = false
	case *c.Size > generation.MaxArtifactBytes:
		l.fail("%s: size %d: larger than %s", where, *c.Size, humanize.Limit(generation.MaxArtifactBytes))
		ok = false
	default:
		a.Size = *c.Size
	}
	a.URL, a.SHA256 = c.URL, c.SHA256
	return ok
}

func (l *loader) units() {
	entries, err := readDir(l.root, unitsDir)
	if err != nil {
		l.fail("%s: %w", unitsDir, err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		rel := unitsDir + "/" + name
		if e.IsDir() {
			l.fail("%s: is a directory; units/ holds only unit files (fold drop-ins into the unit)", rel)
			continue
		}
		if err := checkRegular(e.Type()); err != nil {
			l.fail("%s: %w", rel, err)
			continue
		}
		if err := generation.ValidUnitName(name); err != nil {
			l.fail("%s: %w", rel, err)
			continue
		}
		data, err := l.readInline(filepath.Join(l.root, unitsDir, name), rel, generation.MaxUnitBytes)
		switch {
		case errors.Is(err, errOverBudget):
			return
		case errors.Is(err, errTooLarge):
			l.fail("%s: larger than %s", rel, humanize.Limit(generation.MaxUnitBytes))
			continue
		case err != nil:
			l.fail("%s: %w", rel, err)
			continue
		case !utf8.Valid(data):
			l.fail("%s: not UTF-8 text", rel)
			continue
		}
		if l.m.Units == nil {
			l.m.Units = map[string]string{}
		}
		l.m.Units[name] = string(data)
	}
}

func (l *loader) files(overrides []fileConfig) {
	ok, err := statDir(l.root, filesDir)
	if err != nil {
		l.fail("%s: %w", filesDir, err)
		return
	}
	files := map[string]generation.File{}
	if ok {
		err = filepath.WalkDir(filepath.Join(l.root, filesDir), func(p string, d fs.DirEntry, err error) error {
			return l.file(files, p, d, err)
		})
		if err != nil {
			l.fail("%s: %w", filesDir, err)
		}
	}
	l.fileModes(files, overrides)
	if len(files) > 0 {
		l.m.Files = files
	}
}

// file adds the file under files/ at p to files, by its path under files/:
// as a reference to the artifact whose path names it, else inline. It is
// the WalkDir function of files; the problems it meets are reported and
// the walk goes on, until the manifest's budget is spent.
func (l *loader) file(files map[string]generation.File, p string, d fs.DirEntry, err error) error {
	relOS, rerr := filepath.Rel(l.root, p)
	if rerr != nil {
		return rerr
	}
	rel := filepath.ToSlash(relOS)
	if err != nil {
		l.fail("%s: %w", rel, pathErr(err))
		return nil
	}
	if d.IsDir() {
		return nil
	}
	if err := checkRegular(d.Type()); err != nil {
		l.fail("%s: %w", rel, err)
		return nil
	}
	key := strings.TrimPrefix(rel, filesDir+"/")
	if !utf8.ValidString(key) {
		l.fail("%q: file name is not UTF-8", rel)
		return nil
	}
	info, err := d.Info()
	if err != nil {
		l.fail("%s: %w", rel, pathErr(err))
		return nil
	}
	mode := generation.DefaultFileMode
	if info.Mode().Perm()&0o111 != 0 {
		mode = "0755"
	}
	if name, ok := l.artifactFiles[key]; ok {
		files[key] = generation.File{Artifact: name, Mode: mode}
		return nil
	}
	data, err := l.readInline(p, rel, generation.MaxFileBytes)
	switch {
	case errors.Is(err, errOverBudget):
		return filepath.SkipAll
	case errors.Is(err, errTooLarge):
		l.fail("%s: larger than %s; ship it as an [[artifact]]", rel, humanize.Limit(generation.MaxFileBytes))
	case err != nil:
		l.fail("%s: %w", rel, err)
	case !utf8.Valid(data):
		l.fail("%s: not UTF-8 text; ship it as an [[artifact]]", rel)
	default:
		files[key] = generation.File{Content: string(data), Mode: mode}
	}
	return nil
}

// fileModes sets the modes the [[file]] entries give to files found under
// files/.
func (l *loader) fileModes(files map[string]generation.File, overrides []fileConfig) {
	seen := map[string]bool{}
	for i, o := range overrides {
		where := configName + ": " + entry("file", o.Path, i)
		f, found := files[o.Path]
		switch {
		case o.Path == "":
			l.fail("%s: path is required (relative to files/)", where)
		case seen[o.Path]:
			l.fail("%s: already set by another [[file]]", where)
		case !found && path.Clean(o.Path) != o.Path:
			l.fail("%s: no such file under files/ (write the path clean: %q)", where, path.Clean(o.Path))
		case !found:
			l.fail("%s: no such file under files/", where)
		case o.Mode == "":
			l.fail("%s: mode is required", where)
		default:
			f.Mode = o.Mode
			files[o.Path] = f
		}
		seen[o.Path] = true
	}
}

func (l *loader) secrets(cs []secretConfig) {
	names := map[string]bool{}
	declared := map[string]bool{} // release-relative paths read for a [[secret]]
	l.declaredSecrets(cs, names, declared)
	l.undeclaredSecrets(names, declared)
}

// declaredSecrets reads the secret of each [[secret]] entry, recording its
// name in names and the paths it read in declared.
func (l *loader) declaredSecrets(cs []secretConfig, names, declared map[string]bool) {
	for i, c := range cs {
		where := configName + ": " + entry("secret", c.Name, i)
		if c.Name == "" {
			l.fail("%s: name is required", where)
			continue
		}
		if names[c.Name] {
			l.fail("%s: name already used by another [[secret]]", where)
			continue
		}
		names[c.Name] = true
		file := c.File
		if file == "" {
			file = secretsDir + "/" + c.Name + ".age"
		}
		abs, rel, err := l.resolve(file)
		if err != nil {
			l.fail("%s: file %q: %w", where, file, err)
			continue
		}
		declared[rel] = true
		if realRel, err := filepath.Rel(l.root, abs); err == nil {
			declared[realRel] = true
		}
		ct, ok := l.readSecret(abs, filepath.ToSlash(rel))
		if !ok {
			continue
		}
		l.m.Secrets = append(l.m.Secrets, generation.Secret{
			Name:       c.Name,
			Ciphertext: ct,
			Owner:      c.Owner,
			Group:      c.Group,
			Mode:       c.Mode,
		})
	}
}

// undeclaredSecrets reads each secrets/NAME.age no [[secret]] entry read,
// as the secret NAME with no owner, group or mode set.
func (l *loader) undeclaredSecrets(names, declared map[string]bool) {
	entries, err := readDir(l.root, secretsDir)
	if err != nil {
		l.fail("%s: %w", secretsDir, err)
		return
	}
	for _, e := range entries {
		rel := secretsDir + "/" + e.Name()
		if e.IsDir() {
			continue
		}
		if err := checkRegular(e.Type()); err != nil {
			l.fail("%s: %w", rel, err)
			continue
		}
		name, isAge := strings.CutSuffix(e.Name(), ".age")
		if !isAge || declared[filepath.FromSlash(rel)] {
			continue
		}
		switch {
		case !generation.ValidName(name):
			l.fail("%s: %q is not a valid secret name (letters, digits and ._-, starting with a letter or digit); rename the file or name it in a [[secret]]", rel, name)
			continue
		case names[name]:
			l.fail("%s: secret %q is already declared by a [[secret]] with another file", rel, name)
			continue
		}
		names[name] = true
		ct, ok := l.readSecret(filepath.Join(l.root, secretsDir, e.Name()), rel)
		if !ok {
			continue
		}
		l.m.Secrets = append(l.m.Secrets, generation.Secret{Name: name, Ciphertext: ct})
	}
}

// readSecret reads the age file at abs (rel names it in errors) and returns
// it armored.
func (l *loader) readSecret(abs, rel string) (string, bool) {
	data, err := l.readInline(abs, rel, generation.MaxSecretBytes)
	if errors.Is(err, errOverBudget) {
		return "", false
	}
	if errors.Is(err, errTooLarge) {
		err = fmt.Errorf("larger than %s", humanize.Limit(generation.MaxSecretBytes))
	}
	if err != nil {
		l.fail("%s: %w", rel, err)
		return "", false
	}
	ct, err := armored(data, generation.MaxSecretBytes)
	if err != nil {
		l.fail("%s: %w", rel, err)
		return "", false
	}
	return ct, true
}

func (l *loader) health(c healthConfig) {
	h := &l.m.Health
	h.MinHealthyTime = generation.Duration(c.MinHealthyTime)
	h.HealthyDeadline = generation.Duration(c.HealthyDeadline)
	for i, cc := range c.Checks {
		chk := generation.Check{
			Name:             cc.Name,
			Interval:         generation.Duration(cc.Interval),
			Timeout:          generation.Duration(cc.Timeout),
			FailureThreshold: cc.FailureThreshold,
			InitialDelay:     generation.Duration(cc.InitialDelay),
		}
		var kinds []string
		if cc.HTTP != "" {
			kinds = append(kinds, "http")
			chk.Kind, chk.Target = generation.CheckHTTP, cc.HTTP
		}
		if cc.TCP != "" {
			kinds = append(kinds, "tcp")
			chk.Kind, chk.Target = generation.CheckTCP, cc.TCP
		}
		if cc.Exec != nil {
			kinds = append(kinds, "exec")
			chk.Kind, chk.Command = generation.CheckExec, cc.Exec
		}
		if cc.Unit != "" {
			kinds = append(kinds, "unit")
			chk.Kind, chk.Target = generation.CheckUnit, cc.Unit
		}
		if len(kinds) != 1 {
			where := configName + ": " + entry("health.check", cc.Name, i)
			if len(kinds) == 0 {
				l.fail("%s: set one of http, tcp, exec or unit", where)
			} else {
				l.fail("%s: %s are exclusive; set exactly one of http, tcp, exec or unit", where, strings.Join(kinds, " and "))
			}
			continue
		}
		h.Checks = append(h.Checks, chk)
	}
}
