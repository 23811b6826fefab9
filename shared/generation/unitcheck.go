package generation

import (
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/shared/unitfile"
)

// UnitProblems returns the problems of unit name in m, in line order: its
// syntax (unitfile.Check) and the paths of the current generation it names
// that m does not contain — an artifact (current/artifacts/<name>), a file
// or directory under files/ (current/files/<path>) or a secret
// (secrets/current/<name>). Validate reports them; the release loader
// reports them as "units/<name>:<line>: …".
func UnitProblems(m *Manifest, name string) []unitfile.Error {
	f, errs := unitfile.Parse(m.Units[name])
	if len(errs) > 0 {
		return errs
	}
	for _, r := range unitfile.Refs(f) {
		if missing := m.missingRef(r); missing != "" {
			errs = append(errs, unitfile.Error{Line: r.Line, Msg: fmt.Sprintf("%s= names %s, which this release does not contain (%s)", r.Key, r.Text, missing)})
		}
	}
	return errs
}

// missingRef says what m lacks for r, or "" when m has it.
func (m *Manifest) missingRef(r unitfile.Ref) string {
	switch r.Kind {
	case unitfile.RefArtifact:
		for _, a := range m.Artifacts {
			if a.Name == r.Name {
				return ""
			}
		}
		return fmt.Sprintf("no artifact %q", r.Name)
	case unitfile.RefFile:
		if _, ok := m.Files[r.Name]; ok {
			return ""
		}
		for p := range m.Files {
			if strings.HasPrefix(p, r.Name+"/") {
				return "" // a directory of files/
			}
		}
		return fmt.Sprintf("no file %q under files/", r.Name)
	case unitfile.RefSecret:
		for _, s := range m.Secrets {
			if s.Name == r.Name {
				return ""
			}
		}
		return fmt.Sprintf("no secret %q", r.Name)
	}
	return ""
}
