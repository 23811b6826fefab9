package stage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/generation"
)

// mapSource serves blobs by sha256 and records what it was asked for.
type mapSource struct {
	blobs   map[string][]byte
	fetched []string
}

func (m *mapSource) Open(_ context.Context, a generation.Artifact) (io.ReadCloser, error) {
	m.fetched = append(m.fetched, a.Name)
	b, ok := m.blobs[a.SHA256]
	if !ok {
		return nil, fmt.Errorf("no blob %s", a.SHA256)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func artifactOf(name string, content []byte) generation.Artifact {
	sum := sha256.Sum256(content)
	return generation.Artifact{Name: name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), Mode: "0755"}
}

// TestStageReusedBlobIsRehashed: a blob already in the store is linked only
// if it still hashes to its sha256; otherwise it is removed, fetched again
// and a warning is logged.
func TestStageReusedBlobIsRehashed(t *testing.T) {
	good := []byte("#!/bin/sh\necho good\n")
	art := artifactOf("web", good)
	tests := []struct {
		name        string
		tamper      func(t *testing.T, p string) // applied to the stored blob after the first stage
		wantFetched []string                     // on the second stage
		wantWarn    bool
	}{
		{"intact blob is reused", func(*testing.T, string) {}, nil, false},
		{"same size, corrupt content is fetched again", func(t *testing.T, p string) {
			bad := bytes.Repeat([]byte("x"), len(good))
			writeOver(t, p, bad)
		}, []string{"web"}, true},
		{"wrong size is fetched again", func(t *testing.T, p string) {
			writeOver(t, p, []byte("short"))
		}, []string{"web"}, true},
		{"symlink in its place is fetched again", func(t *testing.T, p string) {
			must(t, os.Remove(p))
			other := filepath.Join(filepath.Dir(p), "..", "elsewhere")
			must(t, os.WriteFile(other, good, 0o644))
			must(t, os.Symlink(other, p))
		}, []string{"web"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			logs := &bytes.Buffer{}
			src := &mapSource{blobs: map[string][]byte{art.SHA256: good}}
			s := &Stager{Layout: Layout{Dir: filepath.Join(root, "state")}, Blobs: src, Log: zerolog.New(logs)}
			m := &generation.Manifest{Artifacts: []generation.Artifact{art}}
			if _, err := s.Stage(context.Background(), 1, m); err != nil {
				t.Fatalf("first stage: %v", err)
			}
			tt.tamper(t, s.Layout.Blob(art.SHA256))
			src.fetched = nil
			st, err := s.Stage(context.Background(), 2, m)
			if err != nil {
				t.Fatalf("second stage: %v", err)
			}
			if fmt.Sprint(src.fetched) != fmt.Sprint(tt.wantFetched) {
				t.Errorf("fetched %v, want %v", src.fetched, tt.wantFetched)
			}
			if got := st.BlobsFetched; got != len(tt.wantFetched) {
				t.Errorf("stats: %d blobs fetched, want %d", got, len(tt.wantFetched))
			}
			for _, p := range []string{
				s.Layout.Blob(art.SHA256),
				filepath.Join(s.Layout.GenDir(2), "artifacts", "web"),
			} {
				b, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(b, good) {
					t.Errorf("%s: %q, %v; want the good content", p, b, err)
				}
			}
			fi, err := os.Lstat(s.Layout.Blob(art.SHA256))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("store blob is %v, %v; want a regular file", fi, err)
			}
			if warned := strings.Contains(logs.String(), "does not match its sha256"); warned != tt.wantWarn {
				t.Errorf("warning logged = %v, want %v; logs:\n%s", warned, tt.wantWarn, logs)
			}
		})
	}
}

func writeOver(t *testing.T, p string, b []byte) {
	t.Helper()
	must(t, os.Chmod(p, 0o644))
	must(t, os.WriteFile(p, b, 0o644))
}

// BenchmarkReuseBlob100MB measures re-hashing a 100 MB store blob, the
// cost staging now pays for each reused artifact.
func BenchmarkReuseBlob100MB(b *testing.B) {
	content := bytes.Repeat([]byte("slipway!"), 100<<20/8)
	art := artifactOf("big", content)
	s := &Stager{Layout: Layout{Dir: b.TempDir()}, Log: zerolog.Nop()}
	if err := os.MkdirAll(s.Layout.Store(), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(s.Layout.Blob(art.SHA256), content, 0o555); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(content)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ok, err := s.reuseBlob(s.Layout.Blob(art.SHA256), art, 0o555)
		if err != nil || !ok {
			b.Fatalf("reuse: %v, %v", ok, err)
		}
	}
}
