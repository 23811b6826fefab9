package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, want := range []string{"one", "two"} {
		if err := WriteFile(p, []byte(want), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
}

func TestSymlinkReplacesLinkNotTarget(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("A"), 0o644)
	os.WriteFile(b, []byte("B"), 0o644)
	l := filepath.Join(dir, "cur")
	if err := Symlink("a", l); err != nil {
		t.Fatal(err)
	}
	if err := Symlink("b", l); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(l); got != "b" {
		t.Fatalf("link -> %q", got)
	}
	if got, _ := os.ReadFile(a); string(got) != "A" {
		t.Fatalf("old target changed: %q", got)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Fatal("write into a missing dir succeeded")
	}
}
