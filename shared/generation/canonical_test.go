package generation

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // Field of the *FieldError, "" when the cause is not a field
	}{
		{"empty input", ``, ""},
		{"array", `[]`, ""},
		{"null", `null`, ""},
		{"string", `"x"`, ""},
		{"truncated", `{"name":"a"`, ""},
		{"syntax", `{"name" "a"}`, ""},
		{"trailing object", `{}{}`, ""},
		{"trailing garbage", `{} x`, ""},
		{"trailing bracket", `{}]`, ""},
		{"invalid utf-8", "{\"name\":\"\xff\"}", ""},
		{"unknown field", `{"nmae":"x"}`, "nmae"},
		{"case-folded field", `{"NAME":"x"}`, "NAME"},
		{"unicode-folded field", `{"ſecrets":[]}`, "ſecrets"},
		{"nested unknown field", `{"artifacts":[{"name":"a","sha":"x"}]}`, "artifacts[0].sha"},
		{"unknown field in map value", `{"files":{"a":{"contents":"x"}}}`, `files["a"].contents`},
		{"duplicate field", `{"name":"a","name":"b"}`, "name"},
		{"duplicate nested field", `{"health":{"checks":[{"name":"a","name":"a"}]}}`, "health.checks[0].name"},
		{"duplicate map key", `{"units":{"a.service":"x","a.service":"y"}}`, `units["a.service"]`},
		{"duplicate map key by escape", `{"units":{"a":"x","\u0061":"y"}}`, `units["a"]`},
		{"duplicate map key by surrogates", `{"units":{"\ud800":"x","\udc00":"y"}}`, "units[\"\uFFFD\"]"},
		{"null string", `{"name":null}`, "name"},
		{"null struct", `{"health":null}`, "health"},
		{"null in string slice", `{"nixos":{"toplevel":"x","substituters":[null]}}`, "nixos.substituters[0]"},
		{"string for int", `{"artifacts":[{"size":"1"}]}`, "artifacts[0].size"},
		{"fraction", `{"artifacts":[{"size":1.5}]}`, "artifacts[0].size"},
		{"exponent", `{"artifacts":[{"size":1e3}]}`, "artifacts[0].size"},
		{"int64 overflow", `{"artifacts":[{"size":9223372036854775808}]}`, "artifacts[0].size"},
		{"int overflow", `{"health":{"checks":[{"failure_threshold":-9223372036854775809}]}}`, "health.checks[0].failure_threshold"},
		{"number for duration", `{"confirm_timeout":30}`, "confirm_timeout"},
		{"null duration", `{"confirm_timeout":null}`, "confirm_timeout"},
		{"duration without unit", `{"confirm_timeout":"30"}`, "confirm_timeout"},
		{"duration overflow", `{"health":{"min_healthy_time":"2562047h47m16.854775808s"}}`, "health.min_healthy_time"},
		{"array for map", `{"units":[]}`, "units"},
		{"object for string", `{"name":{}}`, "name"},
		{"object for slice", `{"links":{}}`, "links"},
		{"string for pointer", `{"nixos":"x"}`, "nixos"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse = %+v, want error", m)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "parse manifest: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
			var fe *FieldError
			got := ""
			if errors.As(err, &fe) {
				got = fe.Field
			}
			if got != tt.want {
				t.Errorf("error %q: field %q, want %q", err, got, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Manifest
	}{
		{"whitespace", " \n\t{ }\r\n", Manifest{}},
		{"null map and slices", `{"units":null,"artifacts":null,"nixos":null,"health":{"checks":null}}`, Manifest{}},
		{"minus zero", `{"artifacts":[{"size":-0}]}`, Manifest{Artifacts: []Artifact{{}}}},
		{"durations", `{"confirm_timeout":"1.5s","health":{"min_healthy_time":"-0s","healthy_deadline":"90m"}}`,
			Manifest{ConfirmTimeout: Duration(1500 * time.Millisecond), Health: Health{HealthyDeadline: Duration(90 * time.Minute)}}},
		{"escapes", `{"name":"\u003c\u2028\ud83d\ude00"}`, Manifest{Name: "<\u2028😀"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.in)
			if !reflect.DeepEqual(*m, tt.want) {
				t.Errorf("Parse = %+v, want %+v", *m, tt.want)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	b := slices.Concat([]byte("{"), bytes.Repeat([]byte(" "), MaxManifestBytes-2), []byte("}"))
	if _, err := Parse(b); err != nil {
		t.Fatalf("Parse at the limit: %v", err)
	}
	b = append(b, ' ')
	if _, err := Parse(b); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Parse over the limit = %v, want ErrInvalid", err)
	}
}

// golden is a small manifest whose canonical form is in testdata: unsorted
// slices, characters encoding/json would HTML-escape, U+2028.
func golden() *Manifest {
	return &Manifest{
		Name:           "web",
		ConfirmTimeout: Duration(90 * time.Second),
		Units:          map[string]string{"web.socket": "[Socket]\n", "web.service": "[Service]\nExecStart=/bin/web --a<b&c>\n"},
		Files:          map[string]File{"z": {Content: "\u2028"}, "a/b": {Artifact: "web", Mode: "0755"}},
		Artifacts: []Artifact{
			{Name: "web", SHA256: hash, Size: 3},
			{Name: "assets", SHA256: hash, Size: 0},
		},
		Links: []Link{{Path: "/etc/z", File: "z"}, {Path: "/etc/a", Artifact: "web"}},
		Health: Health{
			MinHealthyTime: Duration(1500 * time.Millisecond),
			Checks: []Check{
				{Name: "tcp", Kind: CheckTCP, Target: "localhost:80"},
				{Name: "exec", Kind: CheckExec, Command: []string{"/bin/test", "-e", "/x"}, Interval: Duration(time.Second)},
			},
		},
		Secrets: []Secret{{Name: "b", Ciphertext: "B"}, {Name: "a", Ciphertext: "A", Mode: "0400"}},
	}
}

// goldenID pins the ID of golden(): if it changes, every node's generation
// IDs change with it. Do not update it without a migration plan.
const goldenID = "sha256-b14212288e0c8e9f1c712c5e5621e68a51c70516e817c7669036c5b08bfb2ad2"

func TestCanonicalGolden(t *testing.T) {
	got, err := golden().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("testdata", "canonical.golden")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Canonical:\n%s\nwant:\n%s", got, want)
	}
	if !json.Valid(got) || bytes.HasSuffix(got, []byte("\n")) {
		t.Errorf("canonical form is not compact JSON without a trailing newline")
	}
	sum := sha256.Sum256(want)
	id, err := golden().ID()
	if err != nil {
		t.Fatal(err)
	}
	if wantID := "sha256-" + hex.EncodeToString(sum[:]); id != wantID {
		t.Errorf("ID = %s, want sha256 of the golden file %s", id, wantID)
	}
	if id != goldenID {
		t.Errorf("ID = %s, pinned %s", id, goldenID)
	}
}

func TestCanonicalStable(t *testing.T) {
	want, err := golden().ID()
	if err != nil {
		t.Fatal(err)
	}
	variants := map[string]func(m *Manifest){
		"reversed slices": func(m *Manifest) {
			for _, s := range []interface{ reverse() }{artifacts(m.Artifacts), secrets(m.Secrets), links(m.Links), checks(m.Health.Checks)} {
				s.reverse()
			}
		},
		"empty vs nil": func(m *Manifest) {
			m.Health.Checks[0].Command = []string{}
		},
		"reparsed": func(m *Manifest) {
			c, err := m.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			var indented bytes.Buffer
			if err := json.Indent(&indented, c, "", "  "); err != nil {
				t.Fatal(err)
			}
			*m = *mustParse(t, indented.String())
		},
	}
	for name, change := range variants {
		m := golden()
		change(m)
		if got, err := m.ID(); err != nil || got != want {
			t.Errorf("%s: ID = %s, %v; want %s", name, got, err, want)
		}
	}

	empty := []*Manifest{
		{},
		{Units: map[string]string{}, Files: map[string]File{}, Artifacts: []Artifact{}, Secrets: []Secret{}, Links: []Link{}, Health: Health{Checks: []Check{}}},
	}
	for _, m := range empty {
		if c, err := m.Canonical(); err != nil || string(c) != `{"health":{}}` {
			t.Errorf("Canonical(%+v) = %s, %v", m, c, err)
		}
	}
}

type (
	artifacts []Artifact
	secrets   []Secret
	links     []Link
	checks    []Check
)

func (s artifacts) reverse() { reverse(s) }
func (s secrets) reverse()   { reverse(s) }
func (s links) reverse()     { reverse(s) }
func (s checks) reverse()    { reverse(s) }

func reverse[E any](s []E) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

func TestCanonicalTiesAreOrdered(t *testing.T) {
	a := &Manifest{Artifacts: []Artifact{{Name: "x", Size: 2}, {Name: "x", Size: 1}}}
	b := &Manifest{Artifacts: []Artifact{{Name: "x", Size: 1}, {Name: "x", Size: 2}}}
	ca, _ := a.Canonical()
	cb, _ := b.Canonical()
	if !bytes.Equal(ca, cb) {
		t.Errorf("duplicate names: %s != %s", ca, cb)
	}
}

func TestCanonicalDoesNotMutate(t *testing.T) {
	m := golden()
	if _, err := m.Canonical(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, golden()) {
		t.Errorf("Canonical changed its manifest: %+v", m)
	}
}

func TestCanonicalTooLarge(t *testing.T) {
	// Under the limit as input, over it once durations and absent fields
	// are written out: Canonical must refuse rather than produce bytes
	// Parse rejects.
	big := strings.Repeat("x", MaxManifestBytes-20)
	m := &Manifest{Name: big, ConfirmTimeout: Duration(time.Hour)}
	_, err := m.Canonical()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Canonical = %v, want ErrInvalid", err)
	}
	if _, err := m.ID(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ID = %v, want ErrInvalid", err)
	}
}

func TestNilManifest(t *testing.T) {
	var m *Manifest
	if _, err := m.Canonical(); err == nil {
		t.Error("Canonical(nil) succeeded")
	}
	if _, err := m.ID(); err == nil {
		t.Error("ID(nil) succeeded")
	}
	if got := fields(t, m.Validate(ValidateOptions{})); len(got) != 1 {
		t.Errorf("Validate(nil) = %q", got)
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in   string
		want fs.FileMode
		ok   bool
	}{
		{"0644", 0o644, true},
		{"0755", 0o755, true},
		{"0000", 0, true},
		{"0777", 0o777, true},
		{"0400", 0o400, true},
		{"", 0, false},
		{"644", 0, false},
		{"00644", 0, false},
		{"1644", 0, false},
		{"4755", 0, false},
		{"0648", 0, false},
		{"0o64", 0, false},
		{"-644", 0, false},
		{"0x1f", 0, false},
		{"064 ", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
