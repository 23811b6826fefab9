package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/cmdexit"
	"github.com/slipway-dev/slipway/shared/cmdexit/cmdexittest"
)

func TestMain(m *testing.M) {
	cmdexittest.RunMain(main)
	os.Exit(m.Run())
}

// systemBus starts a private dbus-daemon and returns its address, for
// DBUS_SYSTEM_BUS_ADDRESS: `run` connects to systemd's bus first, and the
// agent here has no units to start, so an empty bus does.
func systemBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("no dbus-daemon (Debian: dbus)")
	}
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--print-address=1", "--address=unix:path="+filepath.Join(t.TempDir(), "bus"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	return strings.TrimSpace(addr)
}

// startAgent runs `slipway-agent run` (this test binary's main) against a
// server address nobody answers, and waits until it retries its enrolment.
func startAgent(t *testing.T) *cmdexittest.Proc {
	t.Helper()
	bus := systemBus(t)
	dir := t.TempDir()
	jt := filepath.Join(dir, "join-token")
	if err := os.WriteFile(jt, []byte("swj_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.toml")
	toml := fmt.Sprintf("server = \"http://127.0.0.1:1\"\nnode_name = \"web-1\"\nmetrics_listen = \"\"\nlog_level = \"debug\"\n"+
		"state_dir = %q\nunit_dir = %q\nsecrets_dir = %q\njoin_token_file = %q\n",
		filepath.Join(dir, "state"), filepath.Join(dir, "units"), filepath.Join(dir, "secrets"), jt)
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := cmdexittest.Start(t, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + bus}, "run", "--config", cfg, "--log-format", "json")
	p.WaitStderr("cannot enrol yet", 20*time.Second)
	return p
}

// Ctrl-C stops `slipway-agent run` with exit status 130; SIGTERM (systemd
// stopping the service) with 0. Neither prints an error line.
func TestSignalExitStatus(t *testing.T) {
	for _, tt := range []struct {
		sig  syscall.Signal
		want int
	}{
		{syscall.SIGINT, cmdexit.Interrupted},
		{syscall.SIGTERM, 0},
	} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			p := startAgent(t)
			p.Signal(tt.sig)
			code := p.Wait(30 * time.Second)
			_, log := p.Output()
			if code != tt.want {
				t.Fatalf("exit %d after %v, want %d:\n%s", code, tt.sig, tt.want, log)
			}
			if strings.Contains(log, "slipway-agent: error") {
				t.Errorf("an error line for a signal:\n%s", log)
			}
		})
	}
}

// The daemon's log lines name each key once: daemon=slipway-agent from
// the root logger, component=daemon from the daemon's.
func TestLogKeysOnce(t *testing.T) {
	p := startAgent(t)
	p.Signal(syscall.SIGTERM)
	p.Wait(30 * time.Second)
	_, log := p.Output()
	for _, want := range []string{`"daemon":"slipway-agent"`, `"component":"daemon"`} {
		if !strings.Contains(log, want) {
			t.Errorf("no line with %s:\n%s", want, log)
		}
	}
	if problems, lines := cmdexittest.LogProblems(log); len(problems) > 0 || lines < 3 {
		t.Fatalf("%d JSON lines; problems:\n%s", lines, strings.Join(problems, "\n"))
	}
}
