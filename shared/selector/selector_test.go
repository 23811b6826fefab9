package selector

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseAndMatch(t *testing.T) {
	labels := map[string]string{"role": "web", "env": "prod", "region": "eu"}
	for _, tc := range []struct {
		in      string
		want    Selector
		match   bool
		errPart string
	}{
		{"", Selector{}, true, ""},
		{"role=web", Selector{"role": "web"}, true, ""},
		{" role = web , env=prod ", Selector{"role": "web", "env": "prod"}, true, ""},
		{"role=db", Selector{"role": "db"}, false, ""},
		{"zone=a", Selector{"zone": "a"}, false, ""},
		{"role", nil, false, "want key=value"},
		{"role=web,role=db", nil, false, "no node can match both"},
		{"role=web,role=web", nil, false, "repeated"},
		{"role!=web", nil, false, "only key=value"},
		{"=web", nil, false, "label key"},
		{"role=we b", nil, false, "value"},
		{"role=web,", nil, false, "stray comma"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("err %v, want %q", err, tc.errPart)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %v, %v; want %v", got, err, tc.want)
			}
			if got.Matches(labels) != tc.match {
				t.Fatalf("Matches = %v", !tc.match)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a=b", "role=web,env=prod", "a=,b=c", "x", "=,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(sel.String())
		if err != nil || !reflect.DeepEqual(again, sel) {
			t.Fatalf("%q → %q → %v, %v", s, sel.String(), again, err)
		}
	})
}
