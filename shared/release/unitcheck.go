package release

import (
	"maps"
	"slices"

	"github.com/slipway-dev/slipway/shared/generation"
)

// unitChecks reports the syntax problems of every unit, and the paths of
// the current generation a unit names that the release does not contain
// (current/artifacts/<name>, current/files/<path>, secrets/current/<name>),
// as "units/<name>:<line>: …". It runs after the artifacts, files and
// secrets are loaded.
func (l *loader) unitChecks() {
	for _, name := range slices.Sorted(maps.Keys(l.m.Units)) {
		for _, e := range generation.UnitProblems(l.m, name) {
			l.fail("%s/%s:%d: %s", unitsDir, name, e.Line, e.Msg)
		}
	}
}
