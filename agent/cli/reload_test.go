package cli

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a log sink safe for the reload goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReloadOnSIGHUP sends the test process a real SIGHUP: the daemon's
// log level follows the file, other changed keys are named (never their
// values) as needing a restart, labels are enrolment-time only, and an
// invalid file keeps the running config.
func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	base := "server = \"http://127.0.0.1:7420\"\nstate_dir = \"" + dir + "/state\"\n[labels]\nrole = \"web\"\n"
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_level = \"info\"\n" + base)
	logs := &lockedBuffer{}
	g := &globals{configPath: path, logFormat: "json", stderr: logs, run: &runFlags{}}
	cfg, err := g.config()
	if err != nil {
		t.Fatal(err)
	}
	log := g.logger(cfg)

	var mu sync.Mutex
	var states []string
	notify := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		states = append(states, strings.SplitN(s, "\n", 2)[0])
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.reloadLoop(ctx, hup, cfg, log, notify) }()
	defer func() { cancel(); <-done }()

	reload := func(wantLogs int) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(logs.String(), `"component":"reload"`) < wantLogs {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged:\n%s", logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		// RELOADING=1 … READY=1 bracket every reload.
		deadline = time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(states)
			ok := n > 0 && states[n-1] == "READY=1"
			mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no READY=1 after the reload: %q", states)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	log.Debug().Msg("hidden-before")
	write("log_level = \"debug\"\npoll_wait = \"10s\"\n" + strings.Replace(base, "web", "db", 1))
	reload(3) // labels warning, restart warning, "config reloaded"
	log.Debug().Msg("shown-after")
	out := logs.String()
	if strings.Contains(out, "hidden-before") || !strings.Contains(out, "shown-after") {
		t.Fatalf("log level did not follow the file:\n%s", out)
	}
	if !strings.Contains(out, `"keys":["poll_wait"]`) || !strings.Contains(out, "take effect only when the agent restarts") {
		t.Fatalf("changed key not named:\n%s", out)
	}
	if !strings.Contains(out, "labels are sent to the server only at enrolment") || strings.Contains(out, "10s") || strings.Contains(out, `"db"`) {
		t.Fatalf("labels not explained, or values logged:\n%s", out)
	}

	write("log_level = \"warn\"\nsurprise = 1\n" + base)
	reload(4)
	log.Debug().Msg("still-debug")
	out = logs.String()
	if !strings.Contains(out, "reload: config rejected; keeping the running config") || !strings.Contains(out, "unknown key(s): surprise") {
		t.Fatalf("invalid config not reported:\n%s", out)
	}
	if !strings.Contains(out, "still-debug") {
		t.Fatal("an invalid config changed the log level")
	}

	write("log_level = \"error\"\npoll_wait = \"10s\"\n" + strings.Replace(base, "web", "db", 1))
	reload(7)
	log.Warn().Msg("hidden-warn")
	if strings.Contains(logs.String(), "hidden-warn") {
		t.Fatal("log level error still logs warnings")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"}
	if !slices.Equal(states, want) {
		t.Fatalf("sd_notify states %q, want %q", states, want)
	}
}
