package tailnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
	"github.com/slipway-dev/slipway/test/nspawn"
)

const (
	adminToken = "tailnet-e2e-admin-token-0123456789abcdef"
	nodeBin    = "/opt/slipway/bin"
	// pollInterval is the agents' fallback poll: far longer than any wait
	// of this suite, so a node that switches within the suite's waits was
	// woken by the server's serf event (gossip mode never long-polls).
	pollInterval = "10m"
)

// tsEnv keeps tsnet quiet and local: no log upload, no local addresses.
var tsEnv = []string{"TS_NO_LOGS_NO_SUPPORT=true", "TS_DEBUG_OMIT_LOCAL_ADDRS=true"}

// server is slipway-server with its own tsnet node ("slipway") and serf
// member; its admin API also listens on loopback for the CLI.
type server struct {
	t      *testing.T
	dir    string
	admin  string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	client *api.Client
}

func startServer(t *testing.T, dir, controlURL, keyring string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, admin: freeAddr(t)}
	must(t, os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600))
	cfg := fmt.Sprintf(`listen = %q
state_dir = %q
metrics_listen = %q
offline_after = "1m"
[[admin_token]]
name = "e2e"
role = "admin"
file = %q
[tailscale]
enabled = true
hostname = "slipway"
control_url = %q
listen = ":80"
[gossip]
enabled = true
bind = "0.0.0.0:7946"
keyring_file = %q
`, s.admin, filepath.Join(dir, "state"), freeAddr(t), filepath.Join(dir, "admin.token"), controlURL, keyring)
	must(t, os.WriteFile(filepath.Join(dir, "server.toml"), []byte(cfg), 0o600))
	c, err := api.NewClient("http://"+s.admin, adminToken)
	must(t, err)
	s.client = c
	t.Cleanup(s.stop)
	s.start()
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.stop()
	s.log = &bytes.Buffer{}
	s.cmd = exec.Command(filepath.Join(binDir, "slipway-server"), "--config", filepath.Join(s.dir, "server.toml"), "--log-format", "json")
	s.cmd.Env = append(os.Environ(), tsEnv...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// A killed test process takes its server along.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(s.t, s.cmd.Start())
	waitFor(s.t, time.Minute, "slipway-server ready (on the tailnet)", func() error {
		hc := http.Client{Timeout: 2 * time.Second}
		resp, err := hc.Get("http://" + s.admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		if !strings.Contains(s.log.String(), "serving the API on the tailnet") {
			return errors.New("not on the tailnet yet")
		}
		return nil
	})
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
	if s.t.Failed() {
		s.t.Logf("slipway-server log:\n%s", tail(s.log.String(), 80))
	}
}

func (s *server) slipway(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "slipway"), args...)
	cmd.Env = append(os.Environ(), "SLIPWAY_SERVER=http://"+s.admin, "SLIPWAY_TOKEN="+adminToken, "HOME="+s.dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *server) node(t *testing.T, name string) api.Node {
	t.Helper()
	n, err := s.client.Node(context.Background(), name)
	must(t, err)
	return n
}

// waitNodes waits until every named node satisfies ok.
func (s *server) waitNodes(t *testing.T, timeout time.Duration, what string, names []string, ok func(api.Node) bool) {
	t.Helper()
	waitFor(t, timeout, what, func() error {
		for _, name := range names {
			n, err := s.client.Node(context.Background(), name)
			if err != nil {
				return err
			}
			if !ok(n) {
				return fmt.Errorf("%s: state %s liveness %q desired %s actual %s", name, n.State, n.Liveness, n.Desired, n.Actual)
			}
		}
		return nil
	})
}

// agentNode is a systemd-nspawn node running slipway-agent as a service,
// with its own tsnet node and serf member.
type agentNode struct {
	*nspawn.Node
	t *testing.T
}

func (n *agentNode) sh(script string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := n.Exec(ctx, "/bin/sh", "-c", script)
	if err != nil {
		n.t.Fatalf("%s: sh %q: %v\n%s", n.Name, script, err, stderr)
	}
	return out
}

func startAgent(t *testing.T, raw *nspawn.Node, controlURL string, tags []string) *agentNode {
	t.Helper()
	n := &agentNode{Node: raw, t: t}
	n.sh("mkdir -p /etc/slipway")
	tagList, _ := json.Marshal(tags)
	cfg := fmt.Sprintf(`server = "http://slipway"
node_name = %q
metrics_listen = "" # the nodes share one network namespace
log_level = "debug" # the wake-up is logged at debug
[labels]
role = "web"
[tailscale]
enabled = true
control_url = %q
tags = %s
[gossip]
enabled = true
keyring_file = "/etc/slipway/gossip.key"
poll_interval = %q
`, raw.Name, controlURL, tagList, pollInterval)
	must(t, raw.WriteFile("/etc/slipway/agent.toml", []byte(cfg), 0o600))
	unit := "[Unit]\nDescription=Slipway agent\n[Service]\nType=notify\nNotifyAccess=main\n" +
		"Environment=" + strings.Join(tsEnv, " ") + "\n" +
		"ExecStart=" + nodeBin + "/slipway-agent --config /etc/slipway/agent.toml --log-format json run\n" +
		"Restart=always\nRestartSec=2s\n"
	must(t, raw.WriteFile("/etc/systemd/system/slipway-agent.service", []byte(unit), 0o644))
	n.sh("cp /keys/gossip.key /etc/slipway/gossip.key && chmod 600 /etc/slipway/gossip.key && systemctl daemon-reload && systemctl start --no-block slipway-agent.service")
	return n
}

func (n *agentNode) journal() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, _ := n.Exec(ctx, "journalctl", "-u", "slipway-agent", "--no-pager", "-n", "300", "-o", "cat")
	return out
}

// agentStatus is `slipway-agent status --json` in the node.
func (n *agentNode) agentStatus() map[string]any {
	n.t.Helper()
	var v map[string]any
	must(n.t, json.Unmarshal([]byte(n.sh(nodeBin+"/slipway-agent status --json")), &v))
	return v
}

func writeRelease(t *testing.T, dir, name, msg, confirm, minHealthy string) string {
	t.Helper()
	rel := filepath.Join(dir, name)
	must(t, os.MkdirAll(filepath.Join(rel, "units"), 0o755))
	toml := fmt.Sprintf(`name = "web"
target = "role=web"
[strategy]
kind = "all-at-once"
[health]
min_healthy_time = %q
confirm_timeout = %q
`, minHealthy, confirm)
	must(t, os.WriteFile(filepath.Join(rel, "slipway.toml"), []byte(toml), 0o644))
	unit := "[Service]\nExecStart=/bin/sleep infinity\n# " + msg + "\n"
	must(t, os.WriteFile(filepath.Join(rel, "units", "tn-web.service"), []byte(unit), 0o644))
	return rel
}

func TestTailnetFleet(t *testing.T) {
	needSuite(t)
	ctx := context.Background()
	control := meshtest.Control(t, mesh.DefaultAgentTag)

	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	must(t, os.MkdirAll(keys, 0o755))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyring := filepath.Join(keys, "gossip.key")
	must(t, os.WriteFile(keyring, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o644))

	srvDir := filepath.Join(dir, "server")
	must(t, os.MkdirAll(srvDir, 0o755))
	s := startServer(t, srvDir, control, keyring)

	raws := nspawn.BootAllT(t, []string{"tn-a", "tn-b", "tn-untagged"}, nspawn.Options{
		Network: nspawn.NetworkNamespacePrefix + netnsDir,
		Binds: []nspawn.Bind{
			{Host: binDir, Node: nodeBin, ReadOnly: true},
			{Host: keys, Node: "/keys", ReadOnly: true},
		},
	})
	// Node names carry a random suffix (tn-a-1f2e3d): A and B below.
	agents := map[string]*agentNode{}
	var names []string
	start := time.Now()
	for _, raw := range raws[:2] {
		agents[raw.Name] = startAgent(t, raw, control, []string{mesh.DefaultAgentTag})
		names = append(names, raw.Name)
	}
	nameA, nameB := names[0], names[1]
	untagged := startAgent(t, raws[2], control, []string{})
	defer func() {
		if t.Failed() {
			for _, a := range []*agentNode{untagged, agents[nameA], agents[nameB]} {
				t.Logf("%s agent journal:\n%s", a.Name, tail(a.journal(), 40))
			}
		}
	}()

	t.Run("tagged agents enrol over the tailnet without a join token and join serf", func(t *testing.T) {
		s.waitNodes(t, 2*time.Minute, "both agents enrolled and alive", names, func(n api.Node) bool {
			return n.State == api.NodeNew && n.Liveness == api.LivenessAlive
		})
		t.Logf("REPORT agent services started → enrolled over the tailnet and alive in serf: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("a node without the agent tag is refused and audited", func(t *testing.T) {
		waitFor(t, time.Minute, "the untagged node's refusal in the audit log", func() error {
			evs, err := s.client.Events(ctx, 0, 1000)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if e.Action == "auth.denied" && strings.Contains(e.Detail, untagged.Name) {
					return nil
				}
			}
			return errors.New("no auth.denied event naming " + untagged.Name)
		})
		if _, err := s.client.Node(ctx, untagged.Name); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("%s is a node: %v", untagged.Name, err)
		}
		untagged.sh("systemctl stop slipway-agent.service")
	})

	t.Run("deploy: the serf wake-up beats the poll interval; pull and confirm over the tailnet", func(t *testing.T) {
		rel := writeRelease(t, dir, "v1", "v1", "20s", "1s")
		start := time.Now()
		if out, err := s.slipway("deploy", "--detach", rel); err != nil {
			t.Fatalf("slipway deploy: %v\n%s", err, out)
		}
		// poll_interval is 10m and gossip mode never holds a long-poll:
		// only the server's desired-changed event can make the agents
		// fetch within this wait.
		s.waitNodes(t, 2*time.Minute, "both nodes converged", names, func(n api.Node) bool { return n.State == api.NodeConverged })
		t.Logf("REPORT publish → both nodes confirmed over the tailnet (poll_interval %s): %s", pollInterval, time.Since(start).Round(time.Millisecond))
		for _, name := range names {
			a := agents[name]
			a.t = t
			if st := strings.TrimSpace(a.sh("systemctl is-active tn-web.service")); st != "active" {
				t.Errorf("%s: tn-web.service %s", name, st)
			}
			if j := a.journal(); !strings.Contains(j, "desired-changed: polling now") {
				t.Errorf("%s: the agent's log does not mention a wake-up:\n%s", name, tail(j, 20))
			}
		}
	})

	t.Run("node A cannot read node B's generation", func(t *testing.T) {
		// A tagged agent node of the tailnet asking for tn-b's desired
		// generation (an agent acts only for its own name).
		spy := meshtest.Node(t, ctx, control, "tn-spy", mesh.DefaultAgentTag)
		c, err := api.NewClient("http://slipway", "", api.WithDialer(spy.DialContext))
		must(t, err)
		_, _, err = c.Desired(ctx, nameB, "", 0)
		if !errors.Is(err, api.ErrForbidden) {
			t.Fatalf("tn-spy reading %s's desired generation: %v, want 403", nameB, err)
		}
		waitFor(t, 10*time.Second, "the refusal in the audit log", func() error {
			evs, err := s.client.Events(ctx, 0, 1000)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if e.Action == "auth.denied" && e.Actor == "node:tn-spy" && strings.Contains(e.Target, nameB) {
					return nil
				}
			}
			return errors.New("no auth.denied by node:tn-spy for " + nameB)
		})
	})

	t.Run("a stopped serf member shows as failed, then alive again; a stopped agent as left", func(t *testing.T) {
		b := agents[nameB]
		b.t = t
		b.sh("systemctl kill --signal=SIGSTOP slipway-agent.service")
		start := time.Now()
		s.waitNodes(t, time.Minute, "B failed", []string{nameB}, func(n api.Node) bool { return n.Liveness == api.LivenessFailed })
		t.Logf("REPORT agent frozen (SIGSTOP) → server shows its member failed: %s (serf LAN defaults)", time.Since(start).Round(time.Millisecond))
		if n := s.node(t, nameA); n.Liveness != api.LivenessAlive {
			t.Errorf("A's liveness %q while B is stopped", n.Liveness)
		}
		b.sh("systemctl kill --signal=SIGCONT slipway-agent.service")
		s.waitNodes(t, time.Minute, "B alive again", []string{nameB}, func(n api.Node) bool { return n.Liveness == api.LivenessAlive })

		a := agents[nameA]
		a.t = t
		a.sh("systemctl stop slipway-agent.service")
		s.waitNodes(t, time.Minute, "A left", []string{nameA}, func(n api.Node) bool { return n.Liveness == api.LivenessLeft })
		a.sh("systemctl start --no-block slipway-agent.service")
		s.waitNodes(t, 2*time.Minute, "A alive again", []string{nameA}, func(n api.Node) bool { return n.Liveness == api.LivenessAlive })
	})

	t.Run("server gone from the tailnet after a switch: agents revert after confirm_timeout", func(t *testing.T) {
		rel := writeRelease(t, dir, "v2", "v2", "6s", "3s")
		if out, err := s.slipway("deploy", "--detach", rel); err != nil {
			t.Fatalf("slipway deploy: %v\n%s", err, out)
		}
		for _, name := range names {
			a := agents[name]
			a.t = t
			waitFor(t, time.Minute, name+" switching to v2", func() error {
				if out := a.sh("grep -c v2 /etc/systemd/system/tn-web.service || true"); strings.TrimSpace(out) != "1" {
					return errors.New("not switched yet")
				}
				return nil
			})
		}
		s.stop() // the server (and its tailnet node) is gone
		start := time.Now()
		for _, name := range names {
			a := agents[name]
			waitFor(t, time.Minute, name+" reverted to v1", func() error {
				st := a.agentStatus()
				res, _ := st["last_result"].(map[string]any)
				if res == nil || res["outcome"] != "reverted" {
					return fmt.Errorf("status %v", st["last_result"])
				}
				return nil
			})
			if out := a.sh("cat /etc/systemd/system/tn-web.service"); !strings.Contains(out, "v1") {
				t.Errorf("%s: unit after the revert:\n%s", name, out)
			}
		}
		t.Logf("REPORT server stopped during verify → both agents reverted: %s (min_healthy_time 3s + confirm_timeout 6s)", time.Since(start).Round(time.Millisecond))
		s.start()
		s.waitNodes(t, 2*time.Minute, "the restarted server sees both nodes failed (reverted v2)", names, func(n api.Node) bool {
			return n.State == api.NodeFailed
		})
	})
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
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

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
