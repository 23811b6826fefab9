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
// secrets are loaded; an [[artifact]] or [[secret]] that failed to load
// counts as present, its own error says what is wrong.
func (l *loader) unitChecks(c *config) {
	m := *l.m
	m.Artifacts = slices.Clone(m.Artifacts)
	for _, a := range c.Artifacts {
		m.Artifacts = append(m.Artifacts, generation.Artifact{Name: a.Name})
	}
	m.Secrets = slices.Clone(m.Secrets)
	for _, s := range c.Secrets {
		m.Secrets = append(m.Secrets, generation.Secret{Name: s.Name})
	}
	for _, name := range slices.Sorted(maps.Keys(m.Units)) {
		for _, e := range generation.UnitProblems(&m, name) {
			l.fail("%s/%s:%d: %s", unitsDir, name, e.Line, e.Msg)
		}
	}
}
