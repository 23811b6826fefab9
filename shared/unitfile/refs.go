package unitfile

import (
	"path"
	"strings"
)

// Kinds of generation paths a unit can name.
const (
	RefArtifact = "artifact" // <state>/current/artifacts/<name>
	RefFile     = "file"     // <state>/current/files/<path>
	RefSecret   = "secret"   // <secrets>/current/<name>
)

// Ref is a path into the current generation that a unit's assignment names.
type Ref struct {
	Line int    // line of the assignment
	Key  string // the assignment's key, e.g. ExecStart
	Kind string // RefArtifact, RefFile or RefSecret
	// Name is the artifact or secret name, or the path under files/
	// (cleaned, slash separated).
	Name string
	// Text is the path as written, from "current/" on.
	Text string
}

// refPrefixes map what a unit writes to the kind it names. Each must
// follow a '/' (…/var/lib/slipway/current/artifacts/web), so that the state
// and secrets directories can be anywhere.
var refPrefixes = []struct{ prefix, kind string }{
	{"/current/artifacts/", RefArtifact},
	{"/current/files/", RefFile},
	{"/secrets/current/", RefSecret},
}

// Refs returns the generation paths the assignments of f name, in line
// order. A path runs up to a blank, a quote or one of ":;,"; a path that
// holds a systemd specifier ('%'), a variable ('$'), a glob or an escape
// cannot be resolved before the unit runs and is not returned.
func Refs(f *File) []Ref {
	var out []Ref
	for _, a := range f.Assignments {
		for _, p := range refPrefixes {
			v := a.Value
			for {
				i := strings.Index(v, p.prefix)
				if i < 0 {
					break
				}
				rest := v[i+len(p.prefix):]
				tok := rest[:tokenEnd(rest)]
				v = rest[len(tok):]
				if r, ok := makeRef(a, p.kind, p.prefix, tok); ok {
					out = append(out, r)
				}
			}
		}
	}
	return out
}

func tokenEnd(s string) int {
	if i := strings.IndexAny(s, " \t\"':;,"); i >= 0 {
		return i
	}
	return len(s)
}

func makeRef(a Assignment, kind, prefix, tok string) (Ref, bool) {
	if strings.ContainsAny(tok, "%$*?[]{}\\") {
		return Ref{}, false
	}
	name := strings.TrimRight(tok, "/")
	if kind == RefFile {
		name = path.Clean(name)
	}
	if name == "" || name == "." {
		return Ref{}, false
	}
	if kind != RefFile {
		// Artifacts and secrets are single files: the name ends at the
		// first '/'.
		name, _, _ = strings.Cut(name, "/")
	}
	return Ref{Line: a.Line, Key: a.Key, Kind: kind, Name: name, Text: prefix[1:] + tok}, true
}
