package activate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/slipway-dev/slipway/shared/gendiff"
	"github.com/slipway-dev/slipway/shared/generation"
)

// ErrNotOwned is returned when a switch would overwrite or shadow a unit
// file or path the agent did not create.
var ErrNotOwned = errors.New("not managed by slipway")

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
// once, however many of the things it uses changed.
func diff(from, to *generation.Manifest) Plan {
	var p Plan
	for _, u := range sortedKeys(to.Units) {
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
	for _, u := range sortedKeys(from.Units) {
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
	for _, u := range sortedKeys(m.Units) {
		if isTemplate(u) || (strings.HasSuffix(u, ".service") && trig[u]) {
			continue
		}
		out = append(out, u)
	}
	return out
}

// unitLink is where the agent links unit u, and linkTarget what the link
// points at: through `current`, so the flip switches every unit at once.
func (a *Agent) unitLink(u string) string { return filepath.Join(a.cfg.UnitDir, u) }
func (a *Agent) unitTarget(u string) string {
	return filepath.Join(a.cfg.Layout.Current(), "units", u)
}

func (a *Agent) pathTarget(l generation.Link) string {
	if l.Artifact != "" {
		return filepath.Join(a.cfg.Layout.Current(), "artifacts", l.Artifact)
	}
	return filepath.Join(a.cfg.Layout.Current(), "files", filepath.FromSlash(l.File))
}

// owned reports whether path is absent (false, nil), a symlink the agent
// made (true, nil), or something else (false, ErrNotOwned).
func owned(path, want string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := os.Readlink(path); err == nil && t == want {
			return true, nil
		}
	}
	return false, fmt.Errorf("%s exists: %w", path, ErrNotOwned)
}

// checkOwnership refuses a switch to `to` that would overwrite or shadow
// anything the agent does not own. It changes nothing.
func (a *Agent) checkOwnership(ctx context.Context, to *generation.Manifest) error {
	var errs []error
	for _, u := range sortedKeys(to.Units) {
		link := a.unitLink(u)
		mine, err := owned(link, a.unitTarget(u))
		if err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
			continue
		}
		if mine {
			continue
		}
		st, err := a.sd.Status(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
			continue
		}
		switch {
		case st.LoadState == "masked":
			errs = append(errs, fmt.Errorf("unit %s is masked: %w", u, ErrNotOwned))
		case st.FragmentPath != "" && st.FragmentPath != link:
			errs = append(errs, fmt.Errorf("unit %s is already provided by %s: %w", u, st.FragmentPath, ErrNotOwned))
		}
	}
	for _, l := range to.Links {
		p := filepath.Clean(l.Path)
		if within(p, a.cfg.Layout.Dir) || within(p, a.cfg.UnitDir) {
			errs = append(errs, fmt.Errorf("link %s: inside the agent's own directories", p))
			continue
		}
		if _, err := owned(p, a.pathTarget(l)); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
