// Package gendiff compares two generation manifests and says what a switch
// from one to the other would change: units (added, changed, removed, with
// the agent's restart rule), files, artifacts, secrets, links, health checks
// and the remaining settings. It is for previews (`slipway diff`,
// `slipway deploy --dry-run`) and is pure: no I/O, no clock.
//
// The unit rule is the agent's (agent/activate): a unit is changed when its
// text changed, or when an artifact, file, link or secret its text names
// changed, so a new binary counts as a change of the service that runs it
// and a rotated secret as a change of the services that read it. Compare
// decides it exactly as the agent does (refs below is the agent's, kept
// identical; a test in agent/activate holds the two to the same answers),
// and then says which of the named things changed.
//
// File and artifact modes are shown with their defaults applied ("" is
// 0644 for both), so a mode written out where it was left to the default
// is no change to show; the unit rule, like the agent, sees the bytes.
//
// What it must never do: put secret material into its result. Secrets are
// compared by name, and their ciphertext only for equality; a Diff names a
// secret and which of its properties changed, never a ciphertext or a
// plaintext.
package gendiff

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/digest"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Change is one changed entry: its name (a unit name, a file path, an
// artifact name, a link path, a setting) and what changed about it, in
// words ("text", "artifact web", "mode 0644 → 0600").
type Change struct {
	Name string   `json:"name"`
	What []string `json:"what"`
}

// Section is what changed in one part of a manifest, each list sorted by
// name.
type Section struct {
	Added   []string `json:"added,omitempty"`
	Changed []Change `json:"changed,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// Empty reports whether nothing was added, changed or removed.
func (s Section) Empty() bool {
	return len(s.Added) == 0 && len(s.Changed) == 0 && len(s.Removed) == 0
}

// Diff is what a switch from one manifest to another changes.
type Diff struct {
	Units     Section `json:"units,omitzero"`
	Files     Section `json:"files,omitzero"`     // by path under the generation's files/
	Artifacts Section `json:"artifacts,omitzero"` // by name
	Secrets   Section `json:"secrets,omitzero"`   // by name only
	Links     Section `json:"links,omitzero"`     // by path on the node
	Checks    Section `json:"health_checks,omitzero"`
	// Settings are the single values that changed: name, confirm_timeout,
	// health.min_healthy_time, health.healthy_deadline, nixos,
	// nixos.toplevel, nixos.substituters, nixos.trusted_public_keys.
	Settings []Change `json:"settings,omitempty"`
}

// Empty reports whether the switch would change nothing.
func (d Diff) Empty() bool {
	return d.Units.Empty() && d.Files.Empty() && d.Artifacts.Empty() && d.Secrets.Empty() &&
		d.Links.Empty() && d.Checks.Empty() && len(d.Settings) == 0
}

// Compare returns what switching from `from` to `to` changes. A nil from is
// a node with nothing deployed: everything in `to` is added.
func Compare(from, to *generation.Manifest) Diff {
	if from == nil {
		from = &generation.Manifest{}
	}
	if to == nil {
		to = &generation.Manifest{}
	}
	return Diff{
		Units:     units(from, to),
		Files:     files(from, to),
		Artifacts: artifacts(from, to),
		Secrets:   secrets(from, to),
		Links:     links(from, to),
		Checks:    checks(from, to),
		Settings:  settings(from, to),
	}
}

// section builds a Section from two keyed sets; what says what changed
// between two entries of the same key (nothing = unchanged).
func section[V any](from, to map[string]V, what func(key string, a, b V) []string) Section {
	var s Section
	for _, k := range slices.Sorted(maps.Keys(to)) {
		old, ok := from[k]
		if !ok {
			s.Added = append(s.Added, k)
			continue
		}
		if w := what(k, old, to[k]); len(w) > 0 {
			s.Changed = append(s.Changed, Change{Name: k, What: w})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(from)) {
		if _, ok := to[k]; !ok {
			s.Removed = append(s.Removed, k)
		}
	}
	return s
}

// index keys a slice by key(x); the first entry of a key wins (a valid
// manifest has no duplicates).
func index[T any](xs []T, key func(T) string) map[string]T {
	m := make(map[string]T, len(xs))
	for _, x := range xs {
		if _, dup := m[key(x)]; !dup {
			m[key(x)] = x
		}
	}
	return m
}

func units(from, to *generation.Manifest) Section {
	return section(from.Units, to.Units, func(name, old, new string) []string {
		// The agent's rule, verbatim: text, or the fingerprint of what the
		// text names.
		if old == new && UnitRefs(from, old) == UnitRefs(to, new) {
			return nil
		}
		var what []string
		if old != new {
			what = append(what, "text")
		}
		a, b := refEntries(from, old), refEntries(to, new)
		for _, k := range slices.Sorted(maps.Keys(union(a, b))) {
			va, inA := a[k]
			vb, inB := b[k]
			if inA != inB || va != vb {
				what = append(what, k)
			}
		}
		if len(what) == 0 {
			what = append(what, "referenced artifacts, files or links")
		}
		return what
	})
}

func union[V any](a, b map[string]V) map[string]V {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]V{}
	}
	maps.Copy(out, b)
	return out
}

// UnitRefs fingerprints what unit text uses from m: artifacts named by
// "artifacts/<name>", files by "files/<path>", link paths, and secrets
// named by "secrets/current/<name>", "secrets/<name>" or a
// LoadCredential=/SetCredential= ID, each with the hash of its content (for
// a secret: of its ciphertext, owner, group and mode). A unit whose text is
// unchanged is still changed when its UnitRefs differ. agent/activate uses
// it to decide restarts, so the preview restarts exactly what the agent does.
func UnitRefs(m *generation.Manifest, text string) string {
	var b strings.Builder
	for _, a := range sortedBy(m.Artifacts, func(a generation.Artifact) string { return a.Name }) {
		if strings.Contains(text, "artifacts/"+a.Name) {
			fmt.Fprintf(&b, "artifact %s %s %s\n", a.Name, a.SHA256, a.Mode)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(m.Files)) {
		if strings.Contains(text, "files/"+p) {
			fmt.Fprintf(&b, "file %s %s\n", p, fileFingerprint(m, m.Files[p]))
		}
	}
	for _, l := range sortedBy(m.Links, func(l generation.Link) string { return l.Path }) {
		if !strings.Contains(text, l.Path) {
			continue
		}
		if l.Artifact != "" {
			fmt.Fprintf(&b, "link %s %s\n", l.Path, fileFingerprint(m, generation.File{Artifact: l.Artifact}))
		} else {
			fmt.Fprintf(&b, "link %s %s\n", l.Path, fileFingerprint(m, m.Files[l.File]))
		}
	}
	var creds map[string]bool
	for _, s := range sortedBy(m.Secrets, func(s generation.Secret) string { return s.Name }) {
		if creds == nil {
			creds = credentialIDs(text)
		}
		if usesSecret(text, creds, s.Name) {
			fmt.Fprintf(&b, "secret %s %s\n", s.Name, secretFingerprint(s))
		}
	}
	return b.String()
}

// usesSecret reports whether unit text names secret name: by
// "secrets/current/<name>" (as in /run/slipway/secrets/current/<name>),
// "secrets/<name>", or as a LoadCredential=/SetCredential= ID.
func usesSecret(text string, creds map[string]bool, name string) bool {
	return creds[name] || mentions(text, "secrets/current/"+name) || mentions(text, "secrets/"+name)
}

// secretFingerprint is the hash of a secret's ciphertext with its owner,
// group and mode (never the ciphertext itself).
func secretFingerprint(s generation.Secret) string {
	return fmt.Sprintf("%s %s:%s %s", digest.Hex([]byte(s.Ciphertext)), s.Owner, s.Group, s.Mode)
}

// mentions reports whether text contains token not followed by a character
// that could continue a name: "secrets/db" is not in "secrets/db-replica".
func mentions(text, token string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], token)
		if j < 0 {
			return false
		}
		end := i + j + len(token)
		if end == len(text) || !nameChar(text[end]) {
			return true
		}
		i = i + j + 1
	}
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// credentialKeys are the unit settings whose value starts with a credential
// ID ("ID[:PATH]", "ID:VALUE").
var credentialKeys = map[string]bool{
	"LoadCredential": true, "LoadCredentialEncrypted": true,
	"SetCredential": true, "SetCredentialEncrypted": true,
}

// credentialIDs returns the credential IDs that LoadCredential= and
// SetCredential= lines of a unit name.
func credentialIDs(text string) map[string]bool {
	ids := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || !credentialKeys[strings.TrimSpace(k)] {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimSpace(v), ":")
		if id != "" {
			ids[id] = true
		}
	}
	return ids
}

// refEntries is refs as a map, "artifact web" → fingerprint, to say which
// reference changed.
func refEntries(m *generation.Manifest, text string) map[string]string {
	out := map[string]string{}
	for _, a := range m.Artifacts {
		if _, seen := out["artifact "+a.Name]; !seen && strings.Contains(text, "artifacts/"+a.Name) {
			out["artifact "+a.Name] = a.SHA256 + " " + a.Mode
		}
	}
	for p, f := range m.Files {
		if strings.Contains(text, "files/"+p) {
			out["file "+p] = fileFingerprint(m, f)
		}
	}
	for _, l := range m.Links {
		if _, seen := out["link "+l.Path]; seen || !strings.Contains(text, l.Path) {
			continue
		}
		if l.Artifact != "" {
			out["link "+l.Path] = fileFingerprint(m, generation.File{Artifact: l.Artifact})
		} else {
			out["link "+l.Path] = fileFingerprint(m, m.Files[l.File])
		}
	}
	creds := credentialIDs(text)
	for _, s := range m.Secrets {
		if _, seen := out["secret "+s.Name]; !seen && usesSecret(text, creds, s.Name) {
			out["secret "+s.Name] = secretFingerprint(s)
		}
	}
	return out
}

// fileFingerprint is the agent's content fingerprint of a file: the sha256
// of the artifact it names, else of its inline content; with its mode.
func fileFingerprint(m *generation.Manifest, f generation.File) string {
	if f.Artifact != "" {
		for _, a := range m.Artifacts {
			if a.Name == f.Artifact {
				return "a:" + a.SHA256 + f.Mode
			}
		}
	}
	return "c:" + digest.Hex([]byte(f.Content)) + f.Mode
}

// sortedBy sorts a copy of xs by key, with sort.Slice as the agent does
// (the order of duplicate keys, in invalid manifests, is the agent's too).
func sortedBy[T any](xs []T, key func(T) string) []T {
	out := append([]T(nil), xs...)
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out
}

func files(from, to *generation.Manifest) Section {
	return section(from.Files, to.Files, func(_ string, a, b generation.File) []string {
		var what []string
		switch {
		case a.Artifact != b.Artifact:
			what = append(what, fmt.Sprintf("%s → %s", fileSource(a), fileSource(b)))
		case a.Artifact == "" && a.Content != b.Content:
			what = append(what, "content")
		case a.Artifact != "" && artifactSHA(from, a.Artifact) != artifactSHA(to, b.Artifact):
			what = append(what, "content (artifact "+b.Artifact+" changed)")
		}
		if ma, mb := modeOr(a.Mode, generation.DefaultFileMode), modeOr(b.Mode, generation.DefaultFileMode); ma != mb {
			what = append(what, fmt.Sprintf("mode %s → %s", ma, mb))
		}
		return what
	})
}

// modeOr is mode, or def when mode is unset: "" and the default mean the
// same to the agent's files (its restart rule still sees the bytes).
func modeOr(mode, def string) string {
	if mode == "" {
		return def
	}
	return mode
}

func fileSource(f generation.File) string {
	if f.Artifact != "" {
		return "artifact " + f.Artifact
	}
	return "inline content"
}

// artifactSHA is the sha256 of the artifact called name in m, "" if none.
func artifactSHA(m *generation.Manifest, name string) string {
	for _, a := range m.Artifacts {
		if a.Name == name {
			return a.SHA256
		}
	}
	return ""
}

func artifacts(from, to *generation.Manifest) Section {
	key := func(a generation.Artifact) string { return a.Name }
	return section(index(from.Artifacts, key), index(to.Artifacts, key), func(_ string, a, b generation.Artifact) []string {
		var what []string
		if a.SHA256 != b.SHA256 {
			what = append(what, fmt.Sprintf("sha256 %s → %s", short(a.SHA256), short(b.SHA256)))
		}
		if a.Size != b.Size {
			what = append(what, fmt.Sprintf("size %d → %d bytes", a.Size, b.Size))
		}
		if ma, mb := modeOr(a.Mode, generation.DefaultArtifactMode), modeOr(b.Mode, generation.DefaultArtifactMode); ma != mb {
			what = append(what, fmt.Sprintf("mode %s → %s", ma, mb))
		}
		if a.URL != b.URL {
			what = append(what, fmt.Sprintf("url %s → %s", orNone(a.URL), orNone(b.URL)))
		}
		return what
	})
}

func secrets(from, to *generation.Manifest) Section {
	key := func(s generation.Secret) string { return s.Name }
	return section(index(from.Secrets, key), index(to.Secrets, key), func(_ string, a, b generation.Secret) []string {
		var what []string
		if a.Ciphertext != b.Ciphertext {
			// Never the ciphertext itself: only that it differs.
			what = append(what, "ciphertext")
		}
		if a.Owner != b.Owner {
			what = append(what, fmt.Sprintf("owner %s → %s", orDefault(a.Owner), orDefault(b.Owner)))
		}
		if a.Group != b.Group {
			what = append(what, fmt.Sprintf("group %s → %s", orDefault(a.Group), orDefault(b.Group)))
		}
		if a.Mode != b.Mode {
			what = append(what, fmt.Sprintf("mode %s → %s", orDefault(a.Mode), orDefault(b.Mode)))
		}
		return what
	})
}

func links(from, to *generation.Manifest) Section {
	key := func(l generation.Link) string { return l.Path }
	return section(index(from.Links, key), index(to.Links, key), func(_ string, a, b generation.Link) []string {
		if a.Artifact == b.Artifact && a.File == b.File {
			return nil
		}
		return []string{fmt.Sprintf("target %s → %s", linkTarget(a), linkTarget(b))}
	})
}

func linkTarget(l generation.Link) string {
	switch {
	case l.Artifact != "" && l.File != "":
		return "artifact " + l.Artifact + " and file " + l.File
	case l.Artifact != "":
		return "artifact " + l.Artifact
	case l.File != "":
		return "file " + l.File
	}
	return "nothing"
}

func checks(from, to *generation.Manifest) Section {
	key := func(c generation.Check) string { return c.Name }
	return section(index(from.Health.Checks, key), index(to.Health.Checks, key), func(_ string, a, b generation.Check) []string {
		var what []string
		if a.Kind != b.Kind {
			what = append(what, fmt.Sprintf("kind %s → %s", orNone(a.Kind), orNone(b.Kind)))
		}
		if a.Target != b.Target {
			what = append(what, fmt.Sprintf("target %s → %s", orNone(a.Target), orNone(b.Target)))
		}
		if !slices.Equal(a.Command, b.Command) {
			what = append(what, "command")
		}
		if a.Interval != b.Interval {
			what = append(what, "interval "+durations(a.Interval, b.Interval))
		}
		if a.Timeout != b.Timeout {
			what = append(what, "timeout "+durations(a.Timeout, b.Timeout))
		}
		if a.FailureThreshold != b.FailureThreshold {
			what = append(what, fmt.Sprintf("failure_threshold %s → %s", intOrDefault(a.FailureThreshold), intOrDefault(b.FailureThreshold)))
		}
		if a.InitialDelay != b.InitialDelay {
			what = append(what, "initial_delay "+durations(a.InitialDelay, b.InitialDelay))
		}
		return what
	})
}

func settings(from, to *generation.Manifest) []Change {
	var out []Change
	add := func(name string, what string) { out = append(out, Change{Name: name, What: []string{what}}) }
	if from.Name != to.Name {
		add("name", fmt.Sprintf("%s → %s", orNone(from.Name), orNone(to.Name)))
	}
	if from.ConfirmTimeout != to.ConfirmTimeout {
		add("confirm_timeout", durations(from.ConfirmTimeout, to.ConfirmTimeout))
	}
	if from.Health.MinHealthyTime != to.Health.MinHealthyTime {
		add("health.min_healthy_time", durations(from.Health.MinHealthyTime, to.Health.MinHealthyTime))
	}
	if from.Health.HealthyDeadline != to.Health.HealthyDeadline {
		add("health.healthy_deadline", durations(from.Health.HealthyDeadline, to.Health.HealthyDeadline))
	}
	a, b := from.NixOS, to.NixOS
	switch {
	case a == nil && b != nil:
		add("nixos", "added")
	case a != nil && b == nil:
		add("nixos", "removed")
	}
	if a == nil {
		a = &generation.NixOS{}
	}
	if b == nil {
		b = &generation.NixOS{}
	}
	if a.Toplevel != b.Toplevel {
		add("nixos.toplevel", fmt.Sprintf("%s → %s", orNone(a.Toplevel), orNone(b.Toplevel)))
	}
	if !slices.Equal(a.Substituters, b.Substituters) {
		add("nixos.substituters", fmt.Sprintf("%s → %s", list(a.Substituters), list(b.Substituters)))
	}
	if !slices.Equal(a.TrustedPublicKeys, b.TrustedPublicKeys) {
		add("nixos.trusted_public_keys", fmt.Sprintf("%d → %d keys", len(a.TrustedPublicKeys), len(b.TrustedPublicKeys)))
	}
	return out
}

// short is the first 12 hex digits of a sha256, "none" for none.
func short(sha string) string {
	if sha == "" {
		return "none"
	}
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func intOrDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return fmt.Sprint(n)
}

// durations is "2s → 5s", "default" for zero.
func durations(a, b generation.Duration) string {
	s := func(d generation.Duration) string {
		if d == 0 {
			return "default"
		}
		return time.Duration(d).String()
	}
	return s(a) + " → " + s(b)
}

func list(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// Lines says what d changes, one line per change as `slipway diff` prints
// it: "+ unit web.service", "~ unit web.service: text", "- file a.conf",
// "~ confirm_timeout: 30s → 1m0s" (units, files, artifacts, secrets, links,
// health checks, then settings).
func (d Diff) Lines() []string {
	var out []string
	for _, s := range []struct {
		kind string
		s    Section
	}{
		{"unit", d.Units}, {"file", d.Files}, {"artifact", d.Artifacts}, {"secret", d.Secrets},
		{"link", d.Links}, {"health check", d.Checks},
	} {
		for _, name := range s.s.Added {
			out = append(out, fmt.Sprintf("+ %s %s", s.kind, name))
		}
		for _, c := range s.s.Changed {
			out = append(out, fmt.Sprintf("~ %s %s: %s", s.kind, c.Name, strings.Join(c.What, ", ")))
		}
		for _, name := range s.s.Removed {
			out = append(out, fmt.Sprintf("- %s %s", s.kind, name))
		}
	}
	for _, c := range d.Settings {
		out = append(out, fmt.Sprintf("~ %s: %s", c.Name, strings.Join(c.What, ", ")))
	}
	return out
}
