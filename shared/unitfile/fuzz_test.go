package unitfile

import (
	"strings"
	"testing"
)

// FuzzParse parses arbitrary text. Parse must never panic; problems must
// be in line order with lines inside the text; every assignment it returns
// must lie in a section and have a one-word key; and a text it accepts must
// be accepted again after a comment line is prepended, with every line
// number shifted by one.
func FuzzParse(f *testing.F) {
	f.Add("[Unit]\nDescription=x\n[Service]\nExecStart=/var/lib/slipway/current/artifacts/web \\\n --x\n")
	f.Add("[Service\nExecStart=/bin/true\n")
	f.Add("Key=before\n[Unit]\n")
	f.Add("[Service]\n# c \\\nA=b \\\n; c\n c\\\\\n")
	f.Add("\ufeff[S]\r\nA=/x/current/files/a/../b:/y\r\n")
	f.Add("[S]\nA=b\\")
	f.Fuzz(func(t *testing.T, text string) {
		file, errs := Parse(text)
		lines := strings.Count(text, "\n") + 1
		last := 0
		for _, e := range errs {
			if e.Line < 1 || e.Line > lines || e.Line < last {
				t.Fatalf("problem at line %d (text has %d lines, previous problem at %d): %v", e.Line, lines, last, e)
			}
			last = e.Line
		}
		for _, a := range file.Assignments {
			if a.Section == "" || a.Key == "" || strings.ContainsAny(a.Key, " \t") {
				t.Fatalf("bad assignment %+v", a)
			}
		}
		for _, r := range Refs(file) {
			if r.Name == "" || r.Line < 1 || r.Line > lines {
				t.Fatalf("bad ref %+v", r)
			}
		}
		if errs != nil {
			return
		}
		again, errs2 := Parse("# shifted\n" + strings.TrimPrefix(text, "\ufeff"))
		if errs2 != nil {
			t.Fatalf("accepted text rejected after a comment line: %v", errs2)
		}
		if len(again.Assignments) != len(file.Assignments) {
			t.Fatalf("assignments %d, after a comment line %d", len(file.Assignments), len(again.Assignments))
		}
		for i, a := range again.Assignments {
			if a.Line != file.Assignments[i].Line+1 {
				t.Fatalf("assignment %d at line %d, after a comment line %d", i, file.Assignments[i].Line, a.Line)
			}
		}
	})
}
