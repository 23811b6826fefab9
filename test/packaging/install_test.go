// Package packaging installs Slipway's .deb packages on fresh systemd
// nodes (test/nspawn) and runs them as the packages set them up: the
// server's hardened unit, the agent's unit, their sd_notify readiness,
// watchdog and reload, enrolment over the agent socket, a deployment, the
// metrics endpoints, graceful stops, removal and purge.
//
// The packages are built from this tree by TestMain (packaging.Build over
// freshly built binaries), never taken from dist/. The tests need root;
// with SLIPWAY_E2E=1 (make test, CI) a missing prerequisite fails instead
// of skipping.
package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/packaging"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"

	"github.com/slipway-dev/slipway/shared/metricshttp/metricstest"
)

// version is what the test packages and binaries say they are.
const version = "v0.0.0-e2e"

var (
	distDir string // slipway-agent_*.deb, slipway-server_*.deb, slipway_*.deb
	toolDir string // slipway-testsvc: an HTTP client for nodes without curl
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "slipway-packaging-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, tools := filepath.Join(dir, "bin"), filepath.Join(dir, "tools")
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	var ldflags []string
	for _, p := range []string{"agent/cli", "operator/cli", "server/daemon"} {
		ldflags = append(ldflags, "-X github.com/slipway-dev/slipway/"+p+".Version="+version)
	}
	for _, b := range []struct {
		out  string
		pkgs []string
	}{
		{bin, []string{"./agent/cmd/slipway-agent", "./server/cmd/slipway-server", "./operator/cmd/slipway"}},
		{tools, []string{"./test/cmd/slipway-testsvc"}},
	} {
		cmd := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags", strings.Join(ldflags, " "), "-o", b.out + "/"}, b.pkgs...)...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "packaging e2e: build: %v\n%s", err, out)
			return 1
		}
	}
	distDir, toolDir = filepath.Join(dir, "dist"), tools
	if _, err := packaging.Build(packaging.Options{BinDir: bin, OutDir: distDir, Version: version}); err != nil {
		fmt.Fprintf(os.Stderr, "packaging e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// node is a booted node with helpers that fail the test.
type node struct {
	*nspawn.Node
	t *testing.T
}

// sh runs a shell script in the node and returns its stdout.
func (n *node) sh(script string) string {
	n.t.Helper()
	out, err := n.try(script)
	if err != nil {
		n.t.Fatalf("%s: sh %q: %v", n.Name, script, err)
	}
	return out
}

func (n *node) try(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, stderr, err := n.Exec(ctx, "/bin/sh", "-c", script)
	if err != nil {
		return out, fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, out, stderr)
	}
	return out, nil
}

// show reads unit properties with systemctl show.
func (n *node) show(unit string, props ...string) map[string]string {
	n.t.Helper()
	out := n.sh("systemctl show " + unit + " -p " + strings.Join(props, ","))
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// running checks a Type=notify unit is up the way systemd sees it.
func (n *node) running(unit string) map[string]string {
	n.t.Helper()
	p := n.show(unit, "ActiveState", "SubState", "Type", "MainPID", "NRestarts", "WatchdogUSec")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" {
		n.t.Fatalf("%s on %s: %v\n%s", unit, n.Name, p, n.journal(unit))
	}
	return p
}

func (n *node) journal(unit string) string {
	out, _ := n.try("journalctl -u " + unit + " --no-pager")
	return out
}

// metrics GETs a metrics endpoint inside the node and parses it with
// Prometheus' text parser.
func (n *node) metrics(addr string) metricstest.Families {
	n.t.Helper()
	out := n.sh("/opt/slipway/tools/slipway-testsvc -get http://" + addr + "/metrics")
	return metricstest.Parse(n.t, strings.NewReader(out))
}

// value returns the value of the series of name whose labels include want.
func value(t *testing.T, fams metricstest.Families, name string, want map[string]string) float64 {
	t.Helper()
	return fams.MustValue(t, name, want)
}

func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// exposure runs systemd-analyze security on a unit and returns its score.
func (n *node) exposure(unit string) (float64, string) {
	n.t.Helper()
	out, _ := n.try("systemd-analyze security --no-pager " + unit) // exits non-zero above its threshold
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		n.t.Fatalf("systemd-analyze security %s: no score in\n%s", unit, out)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f, m[2]
}

const (
	serverEnv = "SLIPWAY_SERVER=http://127.0.0.1:7420 SLIPWAY_TOKEN_FILE=/etc/slipway/admin.token "
	sockDir   = "/run/slipway-sock" // bind-mounted into both nodes
)

// TestInstallPackages: slipway-server (and the CLI) on one fresh node,
// slipway-agent on another, installed with dpkg -i, configured as an
// operator would, run by systemd; the agent enrols over the server's agent
// socket (a host directory bind-mounted into both nodes), switches to a
// release under the agent unit's sandbox, and both daemons report ready,
// keep the watchdog fed, reload on SIGHUP, stop cleanly, and uninstall.
func TestInstallPackages(t *testing.T) {
	sock := t.TempDir()
	nodes := nspawn.BootAllT(t, []string{"pkg-server", "pkg-agent"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: distDir, Node: "/opt/slipway/dist", ReadOnly: true},
		{Host: toolDir, Node: "/opt/slipway/tools", ReadOnly: true},
		{Host: sock, Node: sockDir},
	}})
	srv, agt := &node{nodes[0], t}, &node{nodes[1], t}

	// --- The server package: installed, it runs at once on the defaults.
	t.Logf("%s", srv.sh("dpkg -i /opt/slipway/dist/slipway-server_*.deb /opt/slipway/dist/slipway_*.deb 2>&1"))
	if out := srv.sh("systemctl is-enabled slipway-server; id -un slipway; stat -c '%U %a' /var/lib/slipway-server/"); out != "enabled\nslipway\nslipway 750\n" {
		t.Fatalf("after install: %q", out)
	}
	srv.running("slipway-server")
	if out, err := srv.try("systemd-analyze verify /lib/systemd/system/slipway-server.service 2>&1"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify slipway-server.service: %v\n%s", err, out)
	}
	score, verdict := srv.exposure("slipway-server.service")
	t.Logf("REPORT systemd-analyze security slipway-server.service: %.1f %s", score, verdict)
	if score > 2.0 {
		t.Errorf("slipway-server.service exposure %.1f %s: the sandbox got weaker", score, verdict)
	}

	// Configure: the agent socket in the bind-mounted directory (a drop-in
	// makes it writable under ProtectSystem=strict), a shorter watchdog to
	// see it fed, then an admin token applied by a reload (no restart).
	srv.sh(`set -e
mkdir -p /etc/systemd/system/slipway-server.service.d
printf '[Service]\nReadWritePaths=` + sockDir + `\nWatchdogSec=3s\n' >/etc/systemd/system/slipway-server.service.d/e2e.conf
chown slipway:slipway ` + sockDir + `
sed -i 's|^#agent_socket = .*|agent_socket = "` + sockDir + `/agent.sock"|' /etc/slipway/server.toml
systemctl daemon-reload
systemctl restart slipway-server || { journalctl -u slipway-server -n 20 --no-pager >&2; exit 1; }
systemctl enable --now slipway-server`)
	before := srv.running("slipway-server")
	if before["WatchdogUSec"] != "3s" {
		t.Fatalf("WatchdogUSec %q", before["WatchdogUSec"])
	}
	if _, err := srv.try(serverEnv + "slipway nodes"); err == nil {
		t.Fatal("admin API open without an admin token")
	}
	srv.sh(`set -e
umask 027
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/slipway/admin.token
chgrp slipway /etc/slipway/admin.token
printf '[[admin_token]]\nname = "ops"\nrole = "admin"\nfile = "/etc/slipway/admin.token"\n' >>/etc/slipway/server.toml
systemctl reload slipway-server`)
	after := srv.running("slipway-server")
	if after["MainPID"] != before["MainPID"] || after["NRestarts"] != "0" {
		t.Fatalf("reload restarted the server: %v → %v", before, after)
	}
	srv.sh(serverEnv + "slipway nodes")
	if !strings.Contains(srv.journal("slipway-server"), `"message":"config reloaded"`) {
		t.Fatalf("no reload in the journal:\n%s", srv.journal("slipway-server"))
	}
	join := strings.TrimSpace(srv.sh(serverEnv + "slipway token create --ttl 10m 2>/dev/null"))
	if !strings.HasPrefix(join, "swj_") {
		t.Fatalf("join token %q", join)
	}

	// --- The agent package: installed, nothing runs until configured.
	t.Logf("%s", agt.sh("dpkg -i /opt/slipway/dist/slipway-agent_*.deb 2>&1"))
	if out, _ := agt.try("systemctl is-enabled slipway-agent slipway-agent-recover; systemctl is-active slipway-agent"); out != "disabled\ndisabled\ninactive\n" {
		t.Fatalf("agent after install: %q", out)
	}
	if out, err := agt.try("systemd-analyze verify /lib/systemd/system/slipway-agent.service /lib/systemd/system/slipway-agent-recover.service 2>&1"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify agent units: %v\n%s", err, out)
	}
	score, verdict = agt.exposure("slipway-agent.service")
	t.Logf("REPORT systemd-analyze security slipway-agent.service: %.1f %s (root, sandboxed only where switching cannot break)", score, verdict)
	if score > 7.0 {
		t.Errorf("slipway-agent.service exposure %.1f %s: the sandbox got weaker", score, verdict)
	}
	if err := agt.WriteFile("/etc/slipway/join-token", []byte(join+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agt.sh(`set -e
sed -i -e 's|^#server = .*|server = "unix://` + sockDir + `/agent.sock"|' -e 's|^#join_token_file = |join_token_file = |' /etc/slipway/agent.toml
mkdir -p /etc/systemd/system/slipway-agent.service.d
printf '[Service]\nWatchdogSec=3s\n' >/etc/systemd/system/slipway-agent.service.d/e2e.conf
systemctl daemon-reload
systemctl enable --now slipway-agent`)
	agentUp := agt.running("slipway-agent")

	nodesJSON := func() map[string]api.Node {
		var ns []api.Node
		if err := json.Unmarshal([]byte(srv.sh(serverEnv+"slipway nodes --json")), &ns); err != nil {
			t.Fatal(err)
		}
		out := map[string]api.Node{}
		for _, n := range ns {
			out[n.Name] = n
		}
		return out
	}
	waitFor(t, time.Minute, agt.Name+" to enrol", func() error {
		n, ok := nodesJSON()[agt.Name]
		if !ok || n.State != api.NodeNew {
			return fmt.Errorf("nodes: %+v", nodesJSON())
		}
		if n.AgentVersion != version {
			t.Fatalf("agent version %q, want %q", n.AgentVersion, version)
		}
		return nil
	})

	// --- A release, switched by the packaged agent under its sandbox: a
	// unit, a file linked into /etc, an exec health check.
	srv.sh(`set -e
mkdir -p /root/hello/units /root/hello/files/hello
cat >/root/hello/slipway.toml <<'EOF'
name = "hello"
[health]
min_healthy_time = "1s"
healthy_deadline = "1m"
[[health.check]]
name = "conf-linked"
exec = ["/bin/sh", "-c", "grep -q hello /etc/hello/hello.conf"]
interval = "200ms"
[[link]]
path = "/etc/hello/hello.conf"
file = "hello/hello.conf"
EOF
printf '[Service]\nExecStart=/bin/sleep infinity\n' >/root/hello/units/hello.service
echo 'greeting = "hello"' >/root/hello/files/hello/hello.conf
` + serverEnv + `slipway deploy /root/hello >/dev/null`)
	waitFor(t, 2*time.Minute, agt.Name+" to converge", func() error {
		if n := nodesJSON()[agt.Name]; n.State != api.NodeConverged {
			return fmt.Errorf("state %s (%+v)", n.State, n.Report)
		}
		return nil
	})
	if out := agt.sh("systemctl is-active hello.service; cat /etc/hello/hello.conf"); out != "active\ngreeting = \"hello\"\n" {
		t.Fatalf("after the switch: %q", out)
	}

	// --- Metrics, on each daemon's own loopback address.
	am := agt.metrics("127.0.0.1:9432")
	for name, want := range map[string]float64{"slipway_agent_current_generation": 1} {
		if got := value(t, am, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := value(t, am, "slipway_agent_switches_total", map[string]string{"outcome": "switched"}); got != 1 {
		t.Errorf("agent switches_total{switched} = %v", got)
	}
	for _, r := range []string{"unit_failed", "health_check", "no_confirm", "interrupted", "other"} {
		if got := value(t, am, "slipway_agent_reverts_total", map[string]string{"reason": r}); got != 0 {
			t.Errorf("agent reverts_total{%s} = %v", r, got)
		}
	}
	sm := srv.metrics("127.0.0.1:9431")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"slipway_nodes", map[string]string{"state": "converged"}, 1},
		{"slipway_node_desired_matches_actual", map[string]string{"node": agt.Name}, 1},
		{"slipway_releases_total", nil, 1},
		{"slipway_http_requests_total", map[string]string{"route": api.RouteEnroll, "code": "200"}, 1},
	} {
		if got := value(t, sm, c.name, c.labels); got != c.want {
			t.Errorf("server %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// --- The watchdog (3s) stays fed: nothing restarts over 7s.
	start := time.Now()
	for time.Since(start) < 7*time.Second {
		for _, c := range []struct {
			n    *node
			unit string
		}{{srv, "slipway-server"}, {agt, "slipway-agent"}} {
			if p := c.n.running(c.unit); p["NRestarts"] != "0" {
				t.Fatalf("%s restarted: %v\n%s", c.unit, p, c.n.journal(c.unit))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}

	// --- SIGHUP to the agent: log_level re-read, no restart.
	agt.sh(`sed -i 's|^#log_level = .*|log_level = "debug"|' /etc/slipway/agent.toml && systemctl reload slipway-agent`)
	if p := agt.running("slipway-agent"); p["MainPID"] != agentUp["MainPID"] {
		t.Fatalf("reload restarted the agent: %v → %v", agentUp, p)
	}
	if j := agt.journal("slipway-agent"); !strings.Contains(j, `"log_level":"debug","previous_log_level":"info"`) {
		t.Fatalf("agent reload not in the journal:\n%s", j)
	}

	// --- Graceful stops: exit status 0; the agent's units keep running.
	agt.sh("systemctl stop slipway-agent")
	if p := agt.show("slipway-agent", "ActiveState", "Result", "ExecMainStatus"); p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Fatalf("agent after stop: %v\n%s", p, agt.journal("slipway-agent"))
	}
	if out := agt.sh("systemctl is-active hello.service"); out != "active\n" {
		t.Fatalf("stopping the agent stopped its units: %q", out)
	}
	srv.sh("systemctl stop slipway-server")
	if p := srv.show("slipway-server", "ActiveState", "Result", "ExecMainStatus"); p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Fatalf("server after stop: %v\n%s", p, srv.journal("slipway-server"))
	}
	if j := srv.journal("slipway-server"); !strings.Contains(j, `"message":"stopped"`) {
		t.Fatalf("no clean stop in the journal:\n%s", j)
	}

	// --- Remove and purge: configuration goes with purge, state stays.
	agt.sh("dpkg -r slipway-agent >/dev/null")
	if out := agt.sh("dpkg-query -W -f='${Status}' slipway-agent; echo; ls /etc/slipway; test ! -e /lib/systemd/system/slipway-agent.service && echo unit-gone"); out != "deinstall ok config-files\nagent.toml\njoin-token\nunit-gone\n" {
		t.Fatalf("after dpkg -r slipway-agent: %q", out)
	}
	agt.sh("dpkg --purge slipway-agent >/dev/null 2>&1")
	if out := agt.sh("test ! -e /etc/slipway/agent.toml && echo conf-gone; test -e /var/lib/slipway/state.db && echo state-kept"); out != "conf-gone\nstate-kept\n" {
		t.Fatalf("after dpkg --purge slipway-agent: %q", out)
	}
	srv.sh("dpkg --purge slipway-server slipway >/dev/null 2>&1")
	if out := srv.sh("test ! -e /etc/slipway/server.toml && echo conf-gone; test -e /var/lib/slipway-server/store.db && echo state-kept; test ! -e /lib/systemd/system/slipway-server.service && echo unit-gone"); out != "conf-gone\nstate-kept\nunit-gone\n" {
		t.Fatalf("after dpkg --purge slipway-server: %q", out)
	}
}
