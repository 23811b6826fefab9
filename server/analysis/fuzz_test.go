package analysis

import (
	"strings"
	"testing"
)

// FuzzParseCondition: an accepted condition parses again from its own
// text to the same condition, and judging never panics.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"result < 0.01", "result>=5", "result != -1e3", "result <", "result << 1", "errors < 1"} {
		f.Add(s, "", 0.5)
	}
	f.Add("result == 0", "avg", 0.0)
	f.Fuzz(func(t *testing.T, s, reduce string, v float64) {
		c, err := ParseCondition(s, reduce)
		if err != nil {
			return
		}
		again, err := ParseCondition(c.text, reduce)
		if err != nil || again != c {
			t.Fatalf("%q → %q → %+v, %v", s, c.text, again, err)
		}
		c.Judge([]Series{{"{}", v}, {"{a=\"b\"}", -v}})
	})
}

// FuzzExpand: expansion never panics, and an expanded query holds no
// placeholder.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{`up{instance=~"{{nodes}}"}`, `{{node}}`, `{{labels.role}}{{release}}`, `{{`, `{{ x }}`} {
		f.Add(s, "web-1", "web")
	}
	f.Fuzz(func(t *testing.T, q, node, role string) {
		out, err := Expand(q, Wave{Nodes: []string{node}, Release: "r1", Generation: "g", Labels: map[string]string{"role": role}})
		if err == nil && placeholderRe.MatchString(out) && !strings.Contains(node+role, "{{") {
			t.Fatalf("%q → %q still holds a placeholder", q, out)
		}
	})
}
