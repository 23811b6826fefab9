// Package unitfile checks the syntax of systemd unit files and finds the
// paths of a slipway generation they name, so that a release with a broken
// unit is refused before any node switches to it. It parses text only: it
// never reads a file, never knows systemd's keys, and never judges values
// (systemd-analyze verify does that on the node).
//
// The line rules follow systemd's own parser (config_parse in
// src/shared/conf-parser.c):
//   - a line whose first non-blank character is '#' or ';' is a comment,
//     also inside a continuation, and never continues;
//   - a line ending in an unescaped backslash continues on the next line
//     (the backslash becomes a space); the joined line is reported at the
//     number of its first physical line;
//   - after trimming blanks a line is empty, a section header "[Name]", or
//     an assignment "Key=Value".
//
// Unitfile is stricter than systemd where systemd skips what the operator
// wrote with only a log line, and so silently runs something else than was
// written: an assignment before any section, a line without '=', a key
// that is empty or holds blanks, and a continuation that runs into the end
// of the file are errors here. Like systemd, a header without its ']' and a
// header with unsafe characters are errors; ".include" is refused (systemd
// dropped it). Unknown sections and keys are left to systemd-analyze.
package unitfile

import (
	"fmt"
	"strings"
)

// Error is one problem in a unit file, at a 1-based line.
type Error struct {
	Line int
	Msg  string
}

func (e Error) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Assignment is one "Key=Value" line of a unit file, blanks trimmed, with
// continuations joined.
type Assignment struct {
	Line    int    // 1-based number of its first physical line
	Section string // the section it is in, without brackets
	Key     string
	Value   string
}

// File is a parsed unit file.
type File struct {
	Sections    []string // in order of appearance, repeats kept
	Assignments []Assignment
}

// logicalLine is one line after comments are dropped and continuations
// joined.
type logicalLine struct {
	n    int
	text string
}

// Parse parses the unit file text and returns what it could read together
// with every problem found, in line order. A nil error list means the file
// is well formed.
func Parse(text string) (*File, []Error) {
	lines, tail := logicalLines(text)
	f := &File{}
	var errs []Error
	section := ""
	for _, l := range lines {
		if e, ok := f.parseLine(l, &section); !ok {
			errs = append(errs, e)
		}
	}
	return f, append(errs, tail...)
}

// Check returns the syntax problems of the unit file text (nil: none).
func Check(text string) []Error {
	_, errs := Parse(text)
	return errs
}

// logicalLines splits text into lines, drops comments and joins
// continuations as systemd does.
func logicalLines(text string) ([]logicalLine, []Error) {
	text = strings.TrimPrefix(text, "\ufeff")
	var out []logicalLine
	var cont strings.Builder
	start := 0 // first line of the continuation being built, 0: none
	phys := strings.Split(text, "\n")
	if len(phys) > 0 && phys[len(phys)-1] == "" {
		phys = phys[:len(phys)-1] // text ends with a newline
	}
	for i, raw := range phys {
		n := i + 1
		raw = strings.TrimSuffix(raw, "\r")
		if isComment(raw) {
			continue
		}
		if start == 0 {
			start = n
		}
		if continues(raw) {
			cont.WriteString(raw[:len(raw)-1])
			cont.WriteByte(' ')
			continue
		}
		cont.WriteString(raw)
		out = append(out, logicalLine{start, cont.String()})
		cont.Reset()
		start = 0
	}
	if start != 0 {
		return out, []Error{{start, "line continues (ends in a backslash) but the file ends: remove the backslash or add the rest"}}
	}
	return out, nil
}

func isComment(line string) bool {
	t := strings.TrimLeft(line, " \t\n\r")
	return t != "" && (t[0] == '#' || t[0] == ';')
}

// continues reports whether line ends in a backslash that is not itself
// escaped by a backslash.
func continues(line string) bool {
	escaped := false
	for i := 0; i < len(line); i++ {
		if escaped {
			escaped = false
		} else if line[i] == '\\' {
			escaped = true
		}
	}
	return escaped
}

// parseLine parses one logical line into f; it returns the problem when
// the line is malformed.
func (f *File) parseLine(l logicalLine, section *string) (Error, bool) {
	t := strings.Trim(l.text, " \t\n\r")
	switch {
	case t == "":
		return Error{}, true
	case strings.HasPrefix(t, ".include"):
		return Error{l.n, ".include is not supported by systemd: fold the included file in"}, false
	case t[0] == '[':
		name, err := sectionName(t)
		if err != "" {
			// The lines that follow belong to the broken section: no
			// second error for each of them.
			*section = "?"
			return Error{l.n, err}, false
		}
		*section = name
		f.Sections = append(f.Sections, name)
		return Error{}, true
	}
	key, value, ok := strings.Cut(t, "=")
	key = strings.Trim(key, " \t\n\r")
	switch {
	case !ok && *section == "":
		return Error{l.n, fmt.Sprintf("%s is not a section header, a comment or a Key=Value assignment", quote(t))}, false
	case !ok:
		return Error{l.n, fmt.Sprintf("%s is not a Key=Value assignment, a section header or a comment", quote(t))}, false
	case key == "":
		return Error{l.n, fmt.Sprintf("assignment %s has no key before '='", quote(t))}, false
	case strings.ContainsAny(key, " \t"):
		return Error{l.n, fmt.Sprintf("key %q contains a blank: a key is one word (Key=Value)", key)}, false
	case *section == "":
		return Error{l.n, fmt.Sprintf("assignment %s is before any section header: add one, e.g. [Unit] or [Service]", quote(key+"="))}, false
	}
	f.Assignments = append(f.Assignments, Assignment{Line: l.n, Section: *section, Key: key, Value: strings.Trim(value, " \t\n\r")})
	return Error{}, true
}

// sectionName checks a trimmed line starting with '[' and returns the
// section name, or the problem.
func sectionName(t string) (string, string) {
	if !strings.HasSuffix(t, "]") || len(t) < 2 {
		if i := strings.IndexByte(t, ']'); i > 0 {
			return "", fmt.Sprintf("section header %s has text after its \"]\"", quote(t))
		}
		return "", fmt.Sprintf("section header %s is missing \"]\"", quote(t))
	}
	name := t[1 : len(t)-1]
	switch {
	case name == "":
		return "", "section header \"[]\" has no name"
	case strings.ContainsAny(name, "[]\"'\\"):
		return "", fmt.Sprintf("section header %s: the name must not contain brackets, quotes or backslashes", quote(t))
	}
	for _, c := range name {
		if c < ' ' || c == 0x7f {
			return "", fmt.Sprintf("section header %s: the name contains a control character", quote(t))
		}
	}
	return name, ""
}

// quote quotes s for a message, shortened to 80 bytes.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && (s[cut]&0xc0) == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return fmt.Sprintf("%q", s)
}
