package gendiff

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/slipway-dev/slipway/shared/generation"
)

func fuzzSeeds(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, m := range []*generation.Manifest{
		base(),
		with(func(m *generation.Manifest) { m.Artifacts = append(m.Artifacts, m.Artifacts[0]) }), // duplicate name
		with(func(m *generation.Manifest) {
			m.Links = append(m.Links, generation.Link{Path: "/etc/web/tls.pem", Artifact: "web"})
		}),
		{NixOS: &generation.NixOS{Toplevel: "/nix/store/abc", Substituters: []string{"https://c"}}},
	} {
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(`{}`),
		[]byte(`{"units":{"a.service":"files/x artifacts/y /etc/z"},"files":{"x":{"artifact":"y"}},"artifacts":[{"name":"y","sha256":"","size":0}],"links":[{"path":"/etc/z","file":"x"}]}`),
		[]byte(`{"secrets":[{"name":"s","ciphertext":"c"},{"name":"s","ciphertext":"d"}]}`),
	)
}

// FuzzCompareSelf checks that a manifest compared with itself changes
// nothing, for any manifest Parse accepts; and, for any manifest that also
// validates, that neither does its canonical form (the server canonicalises
// what it publishes). An invalid manifest with two entries of one key (two
// links of one path) may compare changed with its canonical form, as the
// agent's unit rule depends on the order of such entries too.
func FuzzCompareSelf(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := generation.Parse(b)
		if err != nil {
			return
		}
		if d := Compare(m, m); !d.Empty() {
			t.Fatalf("Compare(m, m) = %+v\nmanifest: %s", d, b)
		}
		if m.Validate(generation.ValidateOptions{}) != nil {
			return
		}
		c, err := m.Canonical()
		if err != nil {
			return
		}
		m2, err := generation.Parse(c)
		if err != nil {
			t.Fatalf("Parse(Canonical): %v", err)
		}
		if d := Compare(m, m2); !d.Empty() {
			t.Fatalf("Compare(m, canonical m) = %+v\nmanifest: %s", d, b)
		}
	})
}

// FuzzComparePair checks Compare on any two manifests: it does not panic,
// what one direction adds the other removes, and manifests with the same
// canonical form compare empty.
func FuzzComparePair(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, a := range seeds {
		for _, b := range seeds {
			f.Add(a, b)
		}
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ma, err := generation.Parse(a)
		if err != nil {
			return
		}
		mb, err := generation.Parse(b)
		if err != nil {
			return
		}
		ab, ba := Compare(ma, mb), Compare(mb, ma)
		for _, s := range []struct {
			name   string
			ab, ba Section
		}{
			{"units", ab.Units, ba.Units}, {"files", ab.Files, ba.Files}, {"artifacts", ab.Artifacts, ba.Artifacts},
			{"secrets", ab.Secrets, ba.Secrets}, {"links", ab.Links, ba.Links}, {"checks", ab.Checks, ba.Checks},
		} {
			if !slices.Equal(s.ab.Added, s.ba.Removed) || !slices.Equal(s.ab.Removed, s.ba.Added) {
				t.Fatalf("%s: a→b %+v, b→a %+v", s.name, s.ab, s.ba)
			}
			if len(s.ab.Changed) != len(s.ba.Changed) {
				t.Fatalf("%s: changed a→b %+v, b→a %+v", s.name, s.ab.Changed, s.ba.Changed)
			}
		}
		if ma.Validate(generation.ValidateOptions{}) != nil || mb.Validate(generation.ValidateOptions{}) != nil {
			return
		}
		ca, errA := ma.Canonical()
		cb, errB := mb.Canonical()
		if errA == nil && errB == nil && bytes.Equal(ca, cb) && !ab.Empty() {
			t.Fatalf("same canonical form, diff %+v", ab)
		}
	})
}
