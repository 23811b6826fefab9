package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/generation"
)

// FuzzLoadTOML loads a release whose slipway.toml is the fuzzed input, in a
// directory that has units/, files/, secrets/ and a bin/web for artifacts to
// name. Load must never panic; what it accepts must be a valid manifest, and
// what it rejects must say which release.
func FuzzLoadTOML(f *testing.F) {
	f.Add([]byte(fullTOML))
	f.Add([]byte("name = \"web\"\n"))
	f.Add([]byte("name = \"web\"\n[[artifact]]\nname = \"w\"\npath = \"bin/web\"\n"))
	f.Add([]byte("name = \"web\"\nartifact = [{name = \"w\", path = \"../x\"}]\n"))
	f.Add([]byte("name = \"web\"\n[strategy]\nkind = \"rolling\"\ncanary_percent = 200\n"))
	f.Add([]byte("name = \"web\"\n[[secret]]\nname = \"db-password\"\n[[link]]\npath = \"/etc/x\"\nfile = \"web/config.toml\"\n"))
	f.Add([]byte("name = \"web\"\n[health]\nconfirm_timeout = \"1s\"\n[[health.check]]\nname = \"x\"\nexec = []\n"))
	f.Add([]byte("[nixos]\ntoplevel = 1\n"))
	f.Add([]byte("a = [[1], {b = 2}]\n\"\\u0000\" = 1\n"))

	dir := f.TempDir()
	writeFull(f, dir, makeAgeFiles(f))
	config := filepath.Join(dir, "slipway.toml")

	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(config, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Load(dir)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "release "+dir+": ") {
				t.Fatalf("error %q does not name the release", err)
			}
			var fe *generation.FieldError
			if errors.As(err, &fe) && fe == nil {
				t.Fatal("nil *FieldError in the error chain")
			}
			return
		}
		if r.Manifest == nil {
			t.Fatal("Load returned no manifest and no error")
		}
		if err := r.Manifest.Validate(generation.ValidateOptions{}); err != nil {
			t.Fatalf("Load accepted a manifest that does not validate: %v", err)
		}
		if _, err := r.Manifest.Canonical(); err != nil {
			t.Fatalf("Canonical: %v", err)
		}
	})
}
