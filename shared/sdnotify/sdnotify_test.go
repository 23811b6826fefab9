package sdnotify

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestNotifierSends(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	var logged bytes.Buffer
	Notifier(zerolog.New(&logged))("READY=1")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 128)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Errorf("systemd got %q, want READY=1", got)
	}
	if logged.Len() != 0 {
		t.Errorf("a sent state logged %q", logged.String())
	}
}

func TestNotifierLogsFailure(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	var logged bytes.Buffer
	Notifier(zerolog.New(&logged))("RELOADING=1\nMONOTONIC_USEC=1")
	if s := logged.String(); !strings.Contains(s, `"state":"RELOADING=1"`) || !strings.Contains(s, "sd_notify failed") {
		t.Errorf("logged %q, want a warning naming RELOADING=1", s)
	}
}

func TestWatchdogPeriod(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"200000", strconv.Itoa(os.Getpid()), 200 * time.Millisecond},
		{"200000", strconv.Itoa(os.Getpid() + 1), 0}, // another process's watchdog
		{"bad", "", 0},
	}
	for _, tt := range tests {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		if got := WatchdogPeriod(); got != tt.want {
			t.Errorf("WatchdogPeriod() with WATCHDOG_USEC=%q WATCHDOG_PID=%q = %s, want %s", tt.usec, tt.pid, got, tt.want)
		}
	}
}

func TestReloading(t *testing.T) {
	s := Reloading()
	usec, ok := strings.CutPrefix(s, "RELOADING=1\nMONOTONIC_USEC=")
	if !ok {
		t.Fatalf("Reloading() = %q", s)
	}
	if n, err := strconv.ParseInt(usec, 10, 64); err != nil || n <= 0 {
		t.Errorf("MONOTONIC_USEC=%q, want a positive number", usec)
	}
}
