// Package demo holds `make demo`'s script and releases; this test keeps
// the releases loadable.
package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/release"
)

// copyTree copies the release directory src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-r", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// The releases as checked in lack only bin/web (README: "complete but for
// one file"); without it the load fails naming it, with it every release
// loads as deploy and diff load it.
func TestReleasesCompleteButTheArtifact(t *testing.T) {
	dirs, err := filepath.Glob("releases/*")
	if err != nil || len(dirs) != 3 {
		t.Fatalf("releases: %v %v", dirs, err)
	}
	for _, d := range dirs {
		t.Run(filepath.Base(d), func(t *testing.T) {
			work := t.TempDir()
			copyTree(t, d, work)
			if err := os.RemoveAll(filepath.Join(work, "bin")); err != nil {
				t.Fatal(err)
			}
			_, err := release.Load(work)
			if err == nil || !strings.Contains(err.Error(), `artifact "web": path "bin/web": no such file`) {
				t.Fatalf("without bin/web: %v; the README promises that error", err)
			}
			// What run.sh and the README add: any executable will do here.
			if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(work, "bin", "web"), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rel, err := release.Load(work)
			if err != nil {
				t.Fatalf("with bin/web: %v", err)
			}
			if rel.Name != "web" || len(rel.Manifest.Units) == 0 {
				t.Fatalf("release %q with %d units", rel.Name, len(rel.Manifest.Units))
			}
		})
	}
}

// run.sh copies exactly what the README tells an operator to add.
func TestRunShAddsTheArtifact(t *testing.T) {
	b, err := os.ReadFile("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `cp "$BIN/slipway-testsvc" "$r/bin/web"`) {
		t.Fatal("run.sh no longer copies slipway-testsvc to bin/web: update the README's demo release line and this test")
	}
}
