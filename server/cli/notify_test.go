package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestRunNotifiesSystemd runs the slipway-server command with a real
// sd_notify socket, as systemd gives a Type=notify service with
// WatchdogSec: READY=1, WATCHDOG=1 pings, a real SIGHUP brackets its reload
// with RELOADING=1 (and MONOTONIC_USEC) … READY=1, SIGTERM (the context)
// sends STOPPING=1 and the command returns nil.
func TestRunNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	cfg := filepath.Join(dir, "server.toml")
	toml := fmt.Sprintf("listen = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nstate_dir = %q\n", filepath.Join(dir, "state"))
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}

	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed while waiting for %s", want)
				}
				if strings.HasPrefix(m, want) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s from slipway-server", want)
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--config", cfg, "--log-format", "json"}, nil, &bytes.Buffer{}, &stderr, api.Spec)
	}()

	next("READY=1")
	next("WATCHDOG=1")
	next("WATCHDOG=1")
	if err := os.WriteFile(cfg, []byte(toml+"log_level = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m := next("RELOADING=1")
	if !strings.Contains(m, "\nMONOTONIC_USEC=") {
		t.Fatalf("RELOADING without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	cancel()
	next("STOPPING=1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, stderr.String())
		}
	case <-time.After(daemon.ShutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if !strings.Contains(stderr.String(), `"message":"config reloaded"`) || !strings.Contains(stderr.String(), `"previous_log_level":"info"`) {
		t.Fatalf("reload not logged:\n%s", stderr.String())
	}
}
