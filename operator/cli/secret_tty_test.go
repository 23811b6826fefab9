//go:build linux

package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/shared/seal"
)

// echoOff waits until the terminal's echo is off (want false) or on.
func waitEcho(t *testing.T, tty *os.File, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if (tio.Lflag&unix.ECHO != 0) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal echo never became %v", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A secret typed at a real terminal (a pty) is read without echo, up to
// Enter, and sealed without the newline.
func TestSecretEncryptTerminalNoEcho(t *testing.T) {
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	admin, _ := seal.GenerateIdentity()
	dir := t.TempDir()
	e := testEnv(nil)
	e.stdinTerminal, e.readPassword = stdinTerminal, readPassword
	old := os.Stdin
	os.Stdin = tty
	defer func() { os.Stdin = old }()
	done := make(chan result, 1)
	go func() {
		done <- runCLI(context.Background(), e, "secret", "encrypt", "pw", "--dir", dir, "--recipient", admin.Recipient().String())
	}()
	waitEcho(t, tty, false)
	if _, err := ptm.Write([]byte("hunter2\n")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.transcript())
	}
	waitEcho(t, tty, true) // restored
	tty.Close()
	shown, _ := io.ReadAll(ptm) // ends with EIO once the tty is closed
	if strings.Contains(string(shown), "hunter2") {
		t.Fatalf("the terminal echoed the secret: %q", shown)
	}
	if !strings.Contains(r.stderr, "not shown as you type") {
		t.Errorf("no prompt:\n%s", r.transcript())
	}
	if got, ok := opens(t, filepath.Join(dir, "secrets", "pw.age"), idFile(t, admin)); !ok || got != "hunter2" {
		t.Fatalf("sealed %q (%v), want the typed line without its newline", got, ok)
	}
}

// Ctrl-C while the secret is being typed: readPassword returns the
// context's error and turns echo back on.
func TestReadPasswordCanceled(t *testing.T) {
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	defer tty.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := readPassword(ctx, int(tty.Fd()))
		done <- err
	}()
	waitEcho(t, tty, false)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("readPassword after cancel: %v", err)
	}
	waitEcho(t, tty, true)
}
