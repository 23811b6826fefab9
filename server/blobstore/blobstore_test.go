package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func TestPutVerifies(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sha, body string
		size            int64
		want            error
	}{
		{"ok", sum("hello"), "hello", 5, nil},
		{"wrong hash", sum("other"), "hello", 5, ErrMismatch},
		{"short", sum("hello"), "hell", 5, ErrMismatch},
		{"long", sum("hello"), "hello!", 5, ErrMismatch},
		{"bad name", "../../etc/passwd", "x", 1, ErrBadName},
		{"too large", sum("hello"), "hello", 100, ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Put(tc.sha, strings.NewReader(tc.body), tc.size, 10)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Put: %v, want %v", err, tc.want)
			}
		})
	}
	ok, size, err := s.Has(sum("hello"))
	if !ok || size != 5 || err != nil {
		t.Fatalf("Has: %v %d %v", ok, size, err)
	}
	if ok, _, _ := s.Has(sum("other")); ok {
		t.Fatal("rejected blob is present")
	}
	f, err := s.Open(sum("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	if _, err := s.Open(sum("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open missing: %v", err)
	}
	ents, _ := os.ReadDir(s.dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temp files: %v", ents)
	}
}

// TestOpenRemovesStaleUploads: temporary upload files a crash left behind
// are removed at Open; blobs and anything else in the directory stay.
func TestOpenRemovesStaleUploads(t *testing.T) {
	dir := t.TempDir()
	blob := "sha256-" + sum("hello")
	files := map[string]bool{ // name -> kept by Open
		".upload-123456":  false,
		".upload-":        false,
		blob:              true,
		"README":          true,
		"x.upload-123456": true,
	}
	for name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("hello"), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".upload-dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	files[".upload-dir"] = true // not a temp file Put writes: left alone
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, kept := range files {
		_, err := os.Lstat(filepath.Join(dir, name))
		if got := err == nil; got != kept {
			t.Errorf("%s: present = %v, want %v (err %v)", name, got, kept, err)
		}
	}
	if ok, size, err := s.Has(sum("hello")); !ok || size != 5 || err != nil {
		t.Errorf("Has(blob) = %v, %d, %v; want the blob kept", ok, size, err)
	}
}
