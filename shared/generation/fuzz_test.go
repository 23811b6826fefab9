package generation

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func fuzzSeeds() []string {
	return append(slices.Clone(validSeeds),
		allFieldsJSON,
		`{"confirm_timeout":"3600s","health":{"min_healthy_time":".5s","healthy_deadline":"1h1m"}}`,
		`{"name":"\u2028\u2029<>&\u0000\ud800"}`,
		`{"artifacts":[{"name":"b","size":-0,"sha256":""},{"name":"a","size":0,"sha256":""}]}`,
		`{"health":{"checks":[{"name":"x","kind":"exec","command":[]},{"name":"x","kind":"exec"}]}}`,
		`{"units":{"a.service":"x","a.service":"y"}}`,
		`{"NAME":"x"}`,
		`{"nixos":{"toplevel":"","substituters":[]}}`,
	)
}

// FuzzParseCanonical checks the round-trip invariant: whatever Parse
// accepts, Canonical encodes into bytes that Parse accepts and Canonical
// reproduces byte for byte.
func FuzzParseCanonical(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "parse manifest: ") {
				t.Fatalf("Parse error %q does not wrap ErrInvalid with its prefix", err)
			}
			return
		}
		c1, err := m.Canonical()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonical: %v", err)
			}
			return
		}
		m2, err := Parse(c1)
		if err != nil {
			t.Fatalf("Parse(canonical) = %v\ninput:     %q\ncanonical: %q", err, b, c1)
		}
		c2, err := m2.Canonical()
		if err != nil {
			t.Fatalf("Canonical of the reparsed manifest: %v", err)
		}
		if !bytes.Equal(c1, c2) {
			t.Fatalf("canonical form is not stable\ninput: %q\nfirst:  %q\nsecond: %q", b, c1, c2)
		}
		id1, _ := m.ID()
		id2, _ := m2.ID()
		if id1 != id2 {
			t.Fatalf("ID %s != %s", id1, id2)
		}
	})
}

// FuzzValidate checks that Validate never panics on what Parse accepts and
// reports only *FieldErrors.
func FuzzValidate(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		for _, opts := range []ValidateOptions{{}, {LinkPrefixes: []string{"/etc"}}, {LinkPrefixes: []string{}}} {
			fields(t, m.Validate(opts))
		}
	})
}

// FuzzValidateFields puts one arbitrary string and number into every
// field, including values Parse can never produce (invalid UTF-8), and
// checks that Validate does not panic, that the name helpers agree with
// their rules, and that a manifest Validate accepts survives the
// canonical round trip.
func FuzzValidateFields(f *testing.F) {
	f.Add("web.service", int64(0))
	f.Add("web@.service", int64(1))
	f.Add("/etc/web", int64(-1))
	f.Add("a/b", int64(MaxArtifactBytes+1))
	f.Add("0644", int64(time.Hour))
	f.Add("localhost:80", int64(1000))
	f.Add("\xff\x00", int64(-1<<63))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		m := &Manifest{
			Artifacts:      []Artifact{{Mode: s, Name: s, SHA256: s, Size: n, URL: s}},
			ConfirmTimeout: Duration(n),
			Files:          map[string]File{s: {Artifact: s, Content: s, Mode: s}, s + "/" + s: {}},
			Health: Health{
				Checks: []Check{
					{Command: []string{s}, FailureThreshold: int(n), InitialDelay: Duration(n / 2), Interval: Duration(n), Kind: s, Name: s, Target: s, Timeout: Duration(n)},
					{Kind: CheckUnit, Target: s}, {Kind: CheckHTTP, Target: s}, {Kind: CheckTCP, Target: s},
					{Kind: CheckExec, Command: []string{s, s}},
				},
				HealthyDeadline: Duration(n),
				MinHealthyTime:  Duration(-n),
			},
			Links:   []Link{{Artifact: s, File: s, Path: s}, {Path: "/" + s, File: s}},
			Name:    s,
			NixOS:   &NixOS{Substituters: []string{s}, Toplevel: s, TrustedPublicKeys: []string{s}},
			Secrets: []Secret{{Ciphertext: s, Group: s, Mode: s, Name: s, Owner: s}},
			Units:   map[string]string{s: s},
		}
		fields(t, m.Validate(ValidateOptions{LinkPrefixes: []string{s}}))

		if ValidUnitName(s) == nil && (len(s) > 255 || strings.ContainsAny(s, "/\x00 ") || strings.HasPrefix(s, ReservedUnitPrefix)) {
			t.Errorf("ValidUnitName accepts %q", s)
		}
		if mode, err := ParseMode(s); err == nil && (len(s) != 4 || mode > 0o777) {
			t.Errorf("ParseMode(%q) = %v", s, mode)
		}

		// A manifest that validates survives the round trip.
		small := &Manifest{Name: s, Units: map[string]string{"a.service": s}, Files: map[string]File{s: {Content: s}}}
		if small.Validate(ValidateOptions{}) == nil {
			c1, err := small.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			m2, err := Parse(c1)
			if err != nil {
				t.Fatalf("Parse(canonical of a valid manifest): %v", err)
			}
			if c2, _ := m2.Canonical(); !bytes.Equal(c1, c2) {
				t.Fatalf("round trip: %q != %q", c1, c2)
			}
		}
	})
}
