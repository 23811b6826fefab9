package activate

import (
	"bufio"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/shared/gendiff"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Plan is what a switch from one manifest to another does to units.
type Plan struct {
	Added     []string `json:"added,omitempty"`
	Changed   []string `json:"changed,omitempty"`
	Removed   []string `json:"removed,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
}

// diff compares the units of two manifests. A unit is changed when its
// text changed or when an artifact, file, link or secret its text names
// changed (so a new binary restarts the service that runs it, and a
// rotated secret the services that read it). Each changed unit is listed
// once, however many of the things it uses changed. A unit names a secret
// by "secrets/current/<name>" or "secrets/<name>" in its text, or by the
// name in a LoadCredential=/SetCredential= line; it changes when that
// secret's ciphertext, owner, group or mode changed.
func diff(from, to *generation.Manifest) Plan {
	var p Plan
	for _, u := range slices.Sorted(maps.Keys(to.Units)) {
		old, ok := from.Units[u]
		switch {
		case !ok:
			p.Added = append(p.Added, u)
		case old != to.Units[u] || gendiff.UnitRefs(from, old) != gendiff.UnitRefs(to, to.Units[u]):
			p.Changed = append(p.Changed, u)
		default:
			p.Unchanged = append(p.Unchanged, u)
		}
	}
	for _, u := range slices.Sorted(maps.Keys(from.Units)) {
		if _, ok := to.Units[u]; !ok {
			p.Removed = append(p.Removed, u)
		}
	}
	return p
}

// isTemplate reports whether u is a template ("foo@.service"): installed,
// never started.
func isTemplate(u string) bool {
	at := strings.LastIndexByte(u, '@')
	return at >= 0 && at+1 < len(u) && u[at+1] == '.'
}

// triggered returns the services that a socket, timer or path unit of m
// activates (Unit= in its [Socket]/[Timer]/[Path] section, or the unit of
// the same name with .service). The agent does not start those itself: the
// trigger does.
func triggered(m *generation.Manifest) map[string]bool {
	out := map[string]bool{}
	for name, text := range m.Units {
		ext := filepath.Ext(name)
		section := map[string]string{".socket": "[Socket]", ".timer": "[Timer]", ".path": "[Path]"}[ext]
		if section == "" {
			continue
		}
		target := strings.TrimSuffix(name, ext) + ".service"
		in := false
		sc := bufio.NewScanner(strings.NewReader(text))
		sc.Buffer(make([]byte, 64*1024), generation.MaxUnitBytes)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(line, "[") {
				in = line == section
				continue
			}
			if k, v, ok := strings.Cut(line, "="); in && ok && strings.TrimSpace(k) == "Unit" {
				target = strings.TrimSpace(v)
			}
		}
		out[target] = true
	}
	return out
}

// startable lists the units of m the agent starts and checks: all but
// templates and services activated by a trigger of the same generation.
func startable(m *generation.Manifest) []string {
	trig := triggered(m)
	var out []string
	for _, u := range slices.Sorted(maps.Keys(m.Units)) {
		if isTemplate(u) || (strings.HasSuffix(u, ".service") && trig[u]) {
			continue
		}
		out = append(out, u)
	}
	return out
}
