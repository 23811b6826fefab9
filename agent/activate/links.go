package activate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/fspath"
	"github.com/slipway-dev/slipway/shared/generation"
)

// ErrNotOwned is returned when a switch would overwrite or shadow a unit
// file or path the agent did not create.
var ErrNotOwned = errors.New("not managed by slipway")

// checkOwnership refuses a switch to `to` that would overwrite or shadow
// anything the agent does not own. It changes nothing.
func (a *Switcher) checkOwnership(ctx context.Context, to *generation.Manifest) error {
	var errs []error
	for _, u := range slices.Sorted(maps.Keys(to.Units)) {
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
		if fspath.Within(p, a.cfg.Layout.Dir) || fspath.Within(p, a.cfg.UnitDir) {
			errs = append(errs, fmt.Errorf("link %s: inside the agent's own directories", p))
			continue
		}
		if _, err := owned(p, a.pathTarget(l)); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// relink points the links of to's units and paths at `current`, and
// removes those of from's that to lacks (only the agent's own). It returns
// the units whose links it removed, and the units of from whose links were
// gone already (an interrupted transition removed them).
func (a *Switcher) relink(from, to *generation.Manifest) (removed map[string]bool, unlinked []string, err error) {
	var errs []error
	for _, u := range slices.Sorted(maps.Keys(to.Units)) {
		if err := a.ensureLink(a.unitLink(u), a.unitTarget(u)); err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
		}
	}
	for _, l := range to.Links {
		if err := a.ensureLink(l.Path, a.pathTarget(l)); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", l.Path, err))
		}
	}
	removed = map[string]bool{}
	for _, u := range slices.Sorted(maps.Keys(from.Units)) {
		if _, ok := to.Units[u]; ok {
			continue
		}
		switch mine, err := owned(a.unitLink(u), a.unitTarget(u)); {
		case mine:
			removed[u] = true
			if err := os.Remove(a.unitLink(u)); err != nil {
				errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
			}
		case err == nil:
			unlinked = append(unlinked, u)
		default:
			a.log.Warn().Str("unit", u).Msg("unit link is not ours any more; leaving the unit alone")
		}
	}
	keep := map[string]bool{}
	for _, l := range to.Links {
		keep[filepath.Clean(l.Path)] = true
	}
	for _, l := range from.Links {
		p := filepath.Clean(l.Path)
		if keep[p] {
			continue
		}
		if mine, _ := owned(p, a.pathTarget(l)); mine {
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", p, err))
			}
		}
	}
	return removed, unlinked, errors.Join(errs...)
}

// ensureLink makes path a symlink to target unless it already is one. The
// ownership check ran before; a path that is now something else is left
// alone and reported.
func (a *Switcher) ensureLink(path, target string) error {
	mine, err := owned(path, target)
	if err != nil || mine {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Symlink(target, path)
}

// unitLink is where the agent links unit u, and linkTarget what the link
// points at: through `current`, so the flip switches every unit at once.
func (a *Switcher) unitLink(u string) string { return filepath.Join(a.cfg.UnitDir, u) }
func (a *Switcher) unitTarget(u string) string {
	return filepath.Join(a.cfg.Layout.Current(), "units", u)
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

func (a *Switcher) pathTarget(l generation.Link) string {
	if l.Artifact != "" {
		return filepath.Join(a.cfg.Layout.Current(), "artifacts", l.Artifact)
	}
	return filepath.Join(a.cfg.Layout.Current(), "files", filepath.FromSlash(l.File))
}
