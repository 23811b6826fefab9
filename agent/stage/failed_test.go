package stage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/generation"
)

// TestFailedStageRemovesWhatItFetched: a staging that fails after it
// fetched blobs (a later artifact cannot be fetched; a file cannot be
// written) removes the blobs it fetched, as well as its temporary
// directory, and keeps the blobs that were in the store before (another
// generation links them). Found on a real node with a full disk: the
// fetched blob of a failed staging kept its space.
func TestFailedStageRemovesWhatItFetched(t *testing.T) {
	old, fresh, missing := artifactOf("old", []byte("old blob\n")), artifactOf("fresh", []byte("fresh blob\n")), artifactOf("missing", []byte("nowhere\n"))
	tests := []struct {
		name string
		m    *generation.Manifest
		want string // in the error
	}{
		{"a later artifact cannot be fetched", &generation.Manifest{Artifacts: []generation.Artifact{old, fresh, missing}}, `artifact "missing"`},
		{"a file cannot be written", &generation.Manifest{Artifacts: []generation.Artifact{old, fresh},
			Files: map[string]generation.File{"bad": {Content: "x", Mode: "not-a-mode"}}}, `files["bad"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &mapSource{blobs: map[string][]byte{old.SHA256: []byte("old blob\n"), fresh.SHA256: []byte("fresh blob\n")}}
			s := &Stager{Layout: Layout{Dir: filepath.Join(t.TempDir(), "state")}, Blobs: src, Log: zerolog.Nop()}
			if _, err := s.Stage(context.Background(), 1, &generation.Manifest{Artifacts: []generation.Artifact{old}}); err != nil {
				t.Fatal(err)
			}
			_, err := s.Stage(context.Background(), 2, tt.m)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Stage = %v, want an error naming %s", err, tt.want)
			}
			if _, err := os.Stat(s.Layout.Blob(old.SHA256)); err != nil {
				t.Errorf("the blob generation 1 links is gone: %v", err)
			}
			if _, err := os.Lstat(s.Layout.Blob(fresh.SHA256)); !os.IsNotExist(err) {
				t.Errorf("the blob the failed staging fetched is still there (%v)", err)
			}
			left, _ := filepath.Glob(filepath.Join(s.Layout.Generations(), ".stage-*"))
			if len(left) > 0 || s.Exists(2) {
				t.Errorf("left behind: %v, generation 2 exists: %v", left, s.Exists(2))
			}
		})
	}
}
