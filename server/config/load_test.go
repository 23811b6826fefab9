package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadText loads a config file holding text, over the defaults, and
// validates it.
func loadText(t *testing.T, text string) (Server, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, true)
	if err == nil {
		err = c.Validate()
	}
	return c, err
}

// checkErr fails t unless err is nil (want "") or names want; it reports
// whether an error was wanted (the case ends there).
func checkErr(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
	return true
}
