package tomlconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	type cfg struct {
		Name    string   `toml:"name"`
		Timeout Duration `toml:"timeout"`
	}
	dir := t.TempDir()
	for _, tc := range []struct{ name, file, want string }{
		{"ok", "name = \"x\"\ntimeout = \"90s\"\n", ""},
		{"unknown", "nmae = \"x\"\n", "unknown key(s): nmae"},
		{"bad duration", "timeout = \"soon\"\n", "invalid duration"},
		{"syntax", "name = \n", "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".toml")
			os.WriteFile(p, []byte(tc.file), 0o600)
			c := cfg{Name: "default"}
			err := Load(p, true, &c)
			if tc.want == "" {
				if err != nil || c.Name != "x" || time.Duration(c.Timeout) != 90*time.Second {
					t.Fatalf("%+v %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	c := cfg{Name: "default"}
	if err := Load(filepath.Join(dir, "missing.toml"), false, &c); err != nil || c.Name != "default" {
		t.Fatalf("missing default file: %+v %v", c, err)
	}
	if err := Load(filepath.Join(dir, "missing.toml"), true, &c); err == nil {
		t.Fatal("missing explicit file accepted")
	}
}

func TestChangedKeys(t *testing.T) {
	type cfg struct {
		A string   `toml:"a"`
		B []string `toml:"b,omitempty"`
		C Duration `toml:"c"`
	}
	got := ChangedKeys(cfg{A: "x", B: []string{"1"}}, cfg{A: "y", B: []string{"1"}, C: 5})
	if strings.Join(got, ",") != "a,c" {
		t.Fatalf("ChangedKeys = %v, want [a c]", got)
	}
	if ChangedKeys(cfg{}, 3) != nil {
		t.Fatal("different types compared")
	}
}
