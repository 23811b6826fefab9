package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// mountSmall mounts a small file system of kind "tmpfs" (4 MiB) or
// "ext4" (an 8 MiB image on a loop device) on dir (created) until the
// test ends.
func mountSmall(t *testing.T, dir, kind string) {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	switch kind {
	case "tmpfs":
		run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "slipway-e2e-full", dir)
	case "ext4":
		img := filepath.Join(t.TempDir(), "fs.img")
		run("truncate", "-s", "8M", img)
		run("mkfs.ext4", "-q", img)
		run("mount", "-o", "loop", img, dir)
	default:
		t.Fatalf("file system %q", kind)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

// fillUp writes path until the file system is full and returns the bytes
// written.
func fillUp(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		must(t, err)
	}
}

// expectDiskFull checks that err is the server's answer to a write
// refused for lack of space.
func expectDiskFull(t *testing.T, what string, err error) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("%s: %v, want an HTTP answer", what, err)
	}
	if se.Status != http.StatusServiceUnavailable || se.Body.Code != api.CodeUnavailable || se.RetryAfter != 10*time.Second ||
		!strings.Contains(se.Body.Error, "the server's disk is full") || !strings.Contains(se.Body.Error, "no space left on device") {
		t.Fatalf("%s: answer %d %+v Retry-After %s, want 503 unavailable, Retry-After 10s, naming the full disk", what, se.Status, se.Body, se.RetryAfter)
	}
}

// TestServerDiskFull runs slipway-server with its state directory on a
// 4 MiB tmpfs, and on an 8 MiB ext4 file system on a loop device, fills the file system and checks that writes are refused
// with 503 + Retry-After naming the cause (the store's and a blob
// upload's), that reads still answer and nothing half-written is left,
// that writes succeed again once space is freed, and that the store opens
// whole (its open-time check passes) after a SIGKILL and a restart, with
// an audit log that holds exactly the writes that were answered as done.
func TestServerDiskFull(t *testing.T) {
	for _, kind := range []string{"tmpfs", "ext4"} {
		t.Run(kind, func(t *testing.T) { serverDiskFull(t, kind) })
	}
}

func serverDiskFull(t *testing.T, kind string) {
	ctx := context.Background()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	mountSmall(t, state, kind)
	s := startServer(t, dir, freeAddr(t))
	created := 0
	newToken := func() error {
		_, err := s.client.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "10m"})
		if err == nil {
			created++
		}
		return err
	}
	must(t, newToken())
	filled := fillUp(t, filepath.Join(state, "filler"))
	t.Logf("filled the %s with %d bytes", kind, filled)

	// The store's file has free pages left: writes fit until they need it
	// to grow.
	var err error
	for i := 0; i < 5000 && err == nil; i++ {
		err = newToken()
	}
	if err == nil {
		t.Fatalf("5000 writes on a full disk all succeeded")
	}
	t.Logf("REPORT writes that still fitted in store.db's free pages: %d; then: %v", created-1, err)
	expectDiskFull(t, "join token", err)
	expectDiskFull(t, "join token again", newToken())
	blob := make([]byte, 256<<10)
	_, _ = rand.Read(blob)
	sum := sha256.Sum256(blob)
	expectDiskFull(t, "blob upload", s.client.PutBlob(ctx, hex.EncodeToString(sum[:]), bytes.NewReader(blob), int64(len(blob))))
	if left, _ := filepath.Glob(filepath.Join(state, "blobs", ".upload-*")); len(left) > 0 {
		t.Errorf("a refused upload left %v", left)
	}
	if _, err := s.client.Nodes(ctx); err != nil {
		t.Errorf("a read while the disk is full: %v", err)
	}

	// Restarted while the disk is full, it starts, reads, and refuses
	// writes the same way.
	s.stop()
	s.start()
	if _, err := s.client.Nodes(ctx); err != nil {
		t.Errorf("a read after a restart on the full disk: %v", err)
	}
	expectDiskFull(t, "join token after a restart", newToken())

	must(t, os.Remove(filepath.Join(state, "filler")))
	must(t, newToken())
	must(t, s.client.PutBlob(ctx, hex.EncodeToString(sum[:]), bytes.NewReader(blob), int64(len(blob))))

	s.stop() // SIGKILL
	if !strings.Contains(s.log.String(), "the server's disk is full") {
		t.Errorf("the server did not log the full disk")
	}
	s.start()
	evs := s.allEvents(t)
	n := 0
	for _, e := range evs {
		if e.Action == "jointoken.create" {
			n++
		}
	}
	if n != created {
		t.Errorf("the audit log holds %d jointoken.create events after the restart, %d writes were answered as done", n, created)
	}
	if ok, err := s.client.HasBlob(ctx, hex.EncodeToString(sum[:])); err != nil || !ok {
		t.Errorf("the blob uploaded after space came back: %v %v", ok, err)
	}
}

// TestServerDiskFullDuringConfirm: the server's disk fills up while a
// real node switches to a release. The agent's confirm and reports are
// answered 503 (disk full) past the release's 5 s confirm_timeout; the
// agent counts that as a reachable server and keeps the release (no
// revert); once space is freed the confirm goes through and the rollout
// succeeds.
func TestServerDiskFullDuringConfirm(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	mountSmall(t, state, "tmpfs")
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	fleet, names := s.bootFleet(t, releases, "dfconf")
	n := fleet[0]
	w := &node{t: t, releases: releases}
	toml := "name = \"app\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"20s\"\nconfirm_timeout = \"5s\"\n"
	mk := func(version string) string {
		w.write(version, rel{toml: toml, units: map[string]string{"app.service": rolloutUnit(version, "")}})
		return filepath.Join(releases, version)
	}
	v1 := s.waitRollout(t, s.deployWith(t, mk("v1"), api.Strategy{}), 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if v1.State != api.RolloutSucceeded {
		t.Fatalf("v1: %s (%s)", v1.State, v1.Reason)
	}
	s.waitFleet(t, time.Minute, api.NodeConverged, names)

	id := s.deployWith(t, mk("v2"), api.Strategy{})
	fillUp(t, filepath.Join(state, "filler"))
	var err error
	for i := 0; i < 5000 && err == nil; i++ { // use up store.db's free pages
		_, err = s.client.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "10m"})
	}
	expectDiskFull(t, "join token", err)
	var confirming time.Time
	waitFor(t, time.Minute, "the agent to wait for the confirm", func() error {
		j, _ := n.statusJSON()["switch_in_progress"].(map[string]any)
		if j == nil || j["phase"] != "confirm" {
			return fmt.Errorf("switch in progress: %v", j)
		}
		confirming = time.Now()
		return nil
	})
	for time.Since(confirming) < 15*time.Second { // three confirm_timeouts
		st := n.statusJSON()
		if j, _ := st["switch_in_progress"].(map[string]any); j == nil || j["phase"] != "confirm" {
			t.Fatalf("%s after %s of a full server disk: switch in progress %v, last result %v", n.Name, time.Since(confirming).Round(time.Second), j, st["last_result"])
		}
		time.Sleep(time.Second)
	}
	must(t, os.Remove(filepath.Join(state, "filler")))
	ro := s.waitRollout(t, id, 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("v2 after space came back: %s (%s)", ro.State, ro.Reason)
	}
	s.waitFleet(t, time.Minute, api.NodeConverged, names)
	st := n.statusJSON()
	cur, _ := st["current"].(map[string]any)
	last, _ := st["last_result"].(map[string]any)
	if cur["id"] != ro.Manifest || last["outcome"] != "switched" {
		t.Errorf("the agent runs %v, last result %v; want v2 %s, switched", cur["id"], last, ro.Manifest)
	}
	// The agent's confirm was refused for the full disk, and it waited.
	full := grepLines(n.sh("journalctl --no-pager -o cat -u slipway-agent.service"), "the server's disk is full")
	if !strings.Contains(full, `"status":503`) || !strings.Contains(full, `"retry_after":10000`) {
		t.Errorf("the agent's journal shows no confirm answered 503 for the full disk:\n%s", full)
	}
	s.stop()
	t.Logf("REPORT the server refused %d writes for a full disk (%d of them the agent's confirms); the agent waited %s in its confirm phase (confirm_timeout 5s) with no revert",
		strings.Count(s.log.String(), "the server's disk is full"), strings.Count(full, "\n")+1, time.Since(confirming).Round(time.Second))
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
