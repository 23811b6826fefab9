package unitfile

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // "line N: msg" substrings, in order
	}{
		{"empty file", "", nil},
		{"good", "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/web\n", nil},
		{"comments and blanks", "# head\n; also\n  # indented\n[Service]\n\n\tExecStart = /bin/web \n", nil},
		{"crlf and bom", "\ufeff[Service]\r\nExecStart=/bin/web\r\n", nil},
		{"no final newline", "[Service]\nExecStart=/bin/web", nil},
		{"value with equals", "[Service]\nEnvironment=A=b C=d\n", nil},
		{"empty value resets", "[Service]\nExecStart=\nExecStart=/bin/web\n", nil},
		{"continuation", "[Service]\nExecStart=/bin/web \\\n  --flag\n", nil},
		{"comment inside continuation", "[Service]\nExecStart=/bin/web \\\n# not part\n  --flag\n", nil},
		{"comment ending in backslash does not continue", "[Service]\n# note \\\nExecStart=/bin/web\n", nil},
		{"escaped backslash does not continue", "[Service]\nExecStart=/bin/echo \\\\\n", nil},
		{"extension key and section", "[X-Mine]\nX-Foo=1\n", nil},
		{"header missing bracket", "[Unit]\nDescription=x\n[Service\nExecStart=/bin/web\n", []string{`line 3: section header "[Service" is missing "]"`}},
		{"header with trailing text", "[Service] # main\n", []string{`line 1: section header "[Service] # main" has text after its "]"`}},
		{"empty header", "[]\n", []string{`line 1: section header "[]" has no name`}},
		{"header with quote", "[Ser\"vice]\n", []string{`line 1: section header "[Ser\"vice]": the name must not contain`}},
		{"header with control char", "[Ser\x01vice]\n", []string{"line 1: section header \"[Ser\\x01vice]\": the name contains a control character"}},
		{"assignment before section", "Description=x\n[Unit]\n", []string{`line 1: assignment "Description=" is before any section header`}},
		{"text before section", "hello\n[Unit]\n", []string{`line 1: "hello" is not a section header, a comment or a Key=Value assignment`}},
		{"line without equals", "[Service]\nExecStart /bin/web\n", []string{`line 2: "ExecStart /bin/web" is not a Key=Value assignment`}},
		{"missing key", "[Service]\n=/bin/web\n", []string{`line 2: assignment "=/bin/web" has no key before '='`}},
		{"key with blank", "[Service]\nExec Start=/bin/web\n", []string{`line 2: key "Exec Start" contains a blank`}},
		{"include", "[Unit]\n.include /etc/x\n", []string{`line 2: .include is not supported`}},
		{"continuation into eof", "[Service]\nExecStart=/bin/web \\\n", []string{`line 2: line continues (ends in a backslash) but the file ends`}},
		{"continued line reported at its first line", "[Service]\nExecStart=/bin/web \\\n --a \\\n --b\nbroken\n", []string{`line 5: "broken"`}},
		{"continued header is one header (systemd: unknown section)", "[Serv\\\nice]\n", nil},
		{"several problems in order", "x\n[Unit\n[Service]\ny z\n", []string{"line 1: ", "line 2: ", "line 4: "}},
		{"no cascade after a broken header", "[Service\nExecStart=/bin/web\n", []string{`line 1: section header "[Service" is missing "]"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := Check(tt.in)
			if len(errs) != len(tt.want) {
				t.Fatalf("Check = %v, want %d problems %q", errs, len(tt.want), tt.want)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, e.Error(), tt.want[i])
				}
			}
		})
	}
}

// TestParseGolden parses a unit that uses every rule and compares what it
// read with testdata/parse.golden.
func TestParseGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "web.service"))
	if err != nil {
		t.Fatal(err)
	}
	f, errs := Parse(string(in))
	if errs != nil {
		t.Fatalf("Parse: %v", errs)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sections: %q\n", f.Sections)
	for _, a := range f.Assignments {
		fmt.Fprintf(&b, "%d [%s] %s = %q\n", a.Line, a.Section, a.Key, a.Value)
	}
	for _, r := range Refs(f) {
		fmt.Fprintf(&b, "ref %d %s %s %q (%s)\n", r.Line, r.Key, r.Kind, r.Name, r.Text)
	}
	golden := filepath.Join("testdata", "parse.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if b.String() != string(want) {
		t.Errorf("parse differs from %s (run go test -update after checking):\ngot:\n%s\nwant:\n%s", golden, b.String(), want)
	}
}

func TestRefs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // "kind name"
	}{
		{"none", "[Service]\nExecStart=/bin/web\n", nil},
		{"artifact", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web --x\n", []string{"artifact web"}},
		{"other state dir", "[Service]\nExecStart=/srv/sw/current/artifacts/web\n", []string{"artifact web"}},
		{"file and dir", "[Service]\nExecStart=/a --config=/var/lib/slipway/current/files/web/web.conf --dir /var/lib/slipway/current/files/web/\n", []string{"file web/web.conf", "file web"}},
		{"quoted", "[Service]\nExecStart=/bin/sh -c '/var/lib/slipway/current/artifacts/web;true'\n", []string{"artifact web"}},
		{"bind paths", "[Service]\nBindReadOnlyPaths=/var/lib/slipway/current/files/a:/etc/a\n", []string{"file a"}},
		{"secret", "[Service]\nLoadCredential=db:/run/slipway/secrets/current/db-password\n", []string{"secret db-password"}},
		{"specifier skipped", "[Service]\nExecStart=/var/lib/slipway/current/files/%i.conf\n", nil},
		{"variable skipped", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/${APP}\n", nil},
		{"glob skipped", "[Service]\nExecStart=/bin/cat /var/lib/slipway/current/files/*.conf\n", nil},
		{"bare prefix skipped", "[Service]\nWorkingDirectory=/var/lib/slipway/current/files/\n", nil},
		{"not after slash", "[Service]\nExecStart=/opt/mycurrent/artifacts/web\n", nil},
		{"comment ignored", "[Service]\n# ExecStart=/var/lib/slipway/current/artifacts/old\nExecStart=/bin/true\n", nil},
		{"two in one value", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/a /var/lib/slipway/current/artifacts/b\n", []string{"artifact a", "artifact b"}},
		{"artifact subpath", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web/bin\n", []string{"artifact web"}},
		{"file cleaned", "[Service]\nExecStart=/x /var/lib/slipway/current/files/a/./b\n", []string{"file a/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, errs := Parse(tt.in)
			if errs != nil {
				t.Fatalf("Parse: %v", errs)
			}
			var got []string
			for _, r := range Refs(f) {
				got = append(got, r.Kind+" "+r.Name)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Refs = %q, want %q", got, tt.want)
			}
		})
	}
}
