package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadKeyring(t *testing.T) {
	dir := t.TempDir()
	key := func() string {
		b := make([]byte, 32)
		rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	k1, k2 := key(), key()
	tests := []struct {
		name, text string
		want       []string
		wantErr    string
	}{
		{"one", k1 + "\n", []string{k1}, ""},
		{"two, comments", "# primary first\n" + k1 + "\n\n  " + k2 + "  \n", []string{k1, k2}, ""},
		{"empty", "\n# nothing\n", nil, "no key"},
		{"huge", strings.Repeat("A", 70<<10), nil, "longer than"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(p, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadKeyring(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ReadKeyring = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if got, err := ReadKeyring(""); got != nil || err != nil {
		t.Fatalf("no file: %q, %v", got, err)
	}
	if _, err := ReadKeyring(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}
