package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

const fleetAdminToken = "e2e-admin-token-0123456789abcdef"

// server runs slipway-server on the host: the admin API on loopback, the
// agent API also on a unix socket that the nodes get bind-mounted.
type server struct {
	t       testing.TB
	dir     string
	sockDir string
	addr    string
	metrics string // metrics_listen
	// netns, when set, is the network namespace (an `ip netns` name) the
	// server runs in: addr and metrics are addresses in it, and the test
	// reaches the API over the agent socket instead.
	netns  string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	client *api.Client
	env    []string // added to the server's environment at its next start
}

func startServer(t testing.TB, dir, addr string) *server {
	t.Helper()
	return startServerIn(t, dir, addr, "", time.Minute)
}

// startServerIn starts the server in network namespace netns ("" = the
// test's own), with offline_after offline; addr must be an address of that
// namespace.
func startServerIn(t testing.TB, dir, addr, netns string, offline time.Duration) *server {
	t.Helper()
	return startServerConf(t, dir, addr, netns, offline, "")
}

// startServerConf is startServerIn with extra appended to the config
// (TOML: a [store] table, say).
func startServerConf(t testing.TB, dir, addr, netns string, offline time.Duration, extra string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, sockDir: filepath.Join(dir, "sock"), addr: addr, metrics: freeAddr(t), netns: netns}
	must(t, os.MkdirAll(s.sockDir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "admin.token"), []byte(fleetAdminToken+"\n"), 0o600))
	cfg := fmt.Sprintf("listen = %q\nagent_socket = %q\nstate_dir = %q\noffline_after = %q\nmetrics_listen = %q\n[[admin_token]]\nname = \"e2e\"\nrole = \"admin\"\nfile = %q\n",
		addr, filepath.Join(s.sockDir, "agent.sock"), filepath.Join(dir, "state"), offline, s.metrics, filepath.Join(dir, "admin.token"))
	cfg += extra
	must(t, os.WriteFile(filepath.Join(dir, "server.toml"), []byte(cfg), 0o600))
	s.start()
	c, err := api.NewClient(s.url(), fleetAdminToken)
	must(t, err)
	s.client = c
	t.Cleanup(s.stop)
	return s
}

// url is where the test reaches the API: addr, or the agent socket when
// the server runs in another network namespace.
func (s *server) url() string {
	if s.netns != "" {
		return "unix://" + filepath.Join(s.sockDir, "agent.sock")
	}
	return "http://" + s.addr
}

func (s *server) start() {
	s.t.Helper()
	// A subtest that failed before stopping the server leaves it running:
	// stop it, or its process would outlive the test unseen.
	s.stop()
	s.log = &bytes.Buffer{}
	argv := []string{filepath.Join(binDir, "slipway-server"), "--config", filepath.Join(s.dir, "server.toml"), "--log-format", "json"}
	network, addr := "tcp", s.addr
	if s.netns != "" {
		// nsenter execs the server (no fork): its pid is the server's.
		argv = append([]string{"nsenter", "--net=/run/netns/" + s.netns, "--"}, argv...)
		network, addr = "unix", filepath.Join(s.sockDir, "agent.sock")
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = append(os.Environ(), s.env...)
	must(s.t, s.cmd.Start())
	waitFor(s.t, 10*time.Second, "slipway-server to listen", func() error {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
		}
		return err
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
		s.t.Logf("slipway-server log:\n%s", tail(s.log.String(), 60))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// slipway runs the CLI on the host against the server.
func (s *server) slipway(args ...string) (string, string, error) {
	cmd := exec.Command(filepath.Join(binDir, "slipway"), args...)
	cmd.Env = append(os.Environ(), "SLIPWAY_SERVER="+s.url(), "SLIPWAY_TOKEN="+fleetAdminToken, "HOME="+s.dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().String()
}

// fleetNode is a node running slipway-agent as a systemd service.
type fleetNode struct{ *node }

func startAgent(t testing.TB, n *nspawn.Node, s *server, releases string) *fleetNode {
	t.Helper()
	return startAgentAt(t, n, s, releases, "unix:///run/slipway-server/agent.sock")
}

// startAgentAt starts the agent of node n as a systemd service talking to
// the server at serverURL (as the node reaches it).
func startAgentAt(t testing.TB, n *nspawn.Node, s *server, releases, serverURL string) *fleetNode {
	t.Helper()
	jt, err := s.client.CreateJoinToken(context.Background(), api.JoinTokenRequest{TTL: "10m"})
	must(t, err)
	if _, stderr, err := n.Exec(context.Background(), "mkdir", "-p", "/etc/slipway"); err != nil {
		t.Fatalf("mkdir: %v %s", err, stderr)
	}
	must(t, n.WriteFile("/etc/slipway/join-token", []byte(jt.Token+"\n"), 0o600))
	unit := `[Unit]
Description=Slipway agent
After=network.target

[Service]
ExecStart=/opt/slipway/bin/slipway-agent --log-format json run --server ` + serverURL + ` --label role=web --join-token-file /etc/slipway/join-token
Restart=always
RestartSec=1s
`
	must(t, n.WriteFile("/etc/systemd/system/slipway-agent.service", []byte(unit), 0o644))
	fn := &fleetNode{&node{Node: n, t: t, releases: releases}}
	fn.sh("systemctl daemon-reload && systemctl start slipway-agent.service")
	return fn
}

// waitFleet polls the server until every node is in state want.
// bootFleet boots a node for each name, with the agent binaries and the
// server's socket bound in, starts an agent on each and waits until the
// server has them all as new. It returns the nodes and their names in
// boot order.
func (s *server) bootFleet(t testing.TB, releases string, names ...string) ([]*fleetNode, []string) {
	t.Helper()
	return s.bootFleetWith(t, releases, nil, names...)
}

// bootFleetWith is bootFleet with more bind mounts in every node.
func (s *server) bootFleetWith(t testing.TB, releases string, binds []nspawn.Bind, names ...string) ([]*fleetNode, []string) {
	t.Helper()
	raw := nspawn.BootAllT(t, names, nspawn.Options{Binds: append([]nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}, binds...)})
	var fleet []*fleetNode
	var got []string
	for _, n := range raw {
		fleet = append(fleet, startAgent(t, n, s, releases))
		got = append(got, n.Name)
	}
	s.waitFleet(t, time.Minute, api.NodeNew, got)
	return fleet, got
}

func (s *server) waitFleet(t testing.TB, timeout time.Duration, want string, names []string) []api.Node {
	t.Helper()
	var nodes []api.Node
	waitFor(t, timeout, "every node "+want, func() error {
		var err error
		nodes, err = s.client.Nodes(context.Background())
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, n := range nodes {
			got[n.Name] = n.State
		}
		for _, name := range names {
			if got[name] != want {
				return fmt.Errorf("states %v", got)
			}
		}
		return nil
	})
	return nodes
}

// TestFleet runs the coordinator with three real systemd nodes: a deploy
// converges and is confirmed everywhere; a failing release reverts on every
// node and the fleet shows why; the server stopped right after the switch
// makes the nodes revert (magic rollback); a restarted server lost nothing.
func TestFleet(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootAllT(t, []string{"fleet-a", "fleet-b", "fleet-c"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	var fleet []*fleetNode
	var names []string
	for _, n := range raw {
		fleet = append(fleet, startAgent(t, n, s, releases))
		names = append(names, n.Name)
	}
	writer := &node{t: t, releases: releases}
	s.waitFleet(t, time.Minute, api.NodeNew, names)

	confirmTOML := func(minHealthy, confirm string) string {
		return strings.Replace(strings.Replace(webTOML, `min_healthy_time = "1s"`, `min_healthy_time = "`+minHealthy+`"`, 1),
			"[health]\n", "[health]\nconfirm_timeout = \""+confirm+"\"\n", 1)
	}

	t.Run("deploy converges and is confirmed everywhere", func(t *testing.T) {
		writer.t = t
		writer.write("v1", rel{toml: confirmTOML("1s", "20s"), units: gen2Units(), web: true})
		start := time.Now()
		out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "v1"))
		if err != nil {
			t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		nodes := s.waitFleet(t, 2*time.Minute, api.NodeConverged, names)
		t.Logf("REPORT deploy→all %d nodes confirmed: %s", len(names), time.Since(start).Round(time.Millisecond))
		for _, n := range nodes {
			if n.Confirmed != n.Desired || n.Actual != n.Desired {
				t.Errorf("%s: desired %s actual %s confirmed %s", n.Name, n.Desired, n.Actual, n.Confirmed)
			}
		}
		for _, n := range fleet {
			n.t = t
			if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
				t.Errorf("%s: web says %q", n.Name, got)
			}
		}
		out, _, err = s.slipway("status")
		if err != nil || strings.Count(out, "converged") < len(names) {
			t.Errorf("slipway status (%v):\n%s", err, out)
		}
	})

	t.Run("failing release reverts on every node and the fleet says why", func(t *testing.T) {
		writer.t = t
		u := gen2Units()
		u["bad.service"] = "[Service]\nType=oneshot\nExecStart=/bin/false\n"
		writer.write("v2-bad", rel{toml: confirmTOML("1s", "20s"), units: u, web: true})
		start := time.Now()
		if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "v2-bad")); err != nil {
			t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, names)
		t.Logf("REPORT failing release→fleet shows failed: %s", time.Since(start).Round(time.Millisecond))
		out, _, _ := s.slipway("status")
		if !strings.Contains(out, "bad.service") {
			t.Errorf("slipway status does not show the reason:\n%s", out)
		}
		for _, n := range fleet {
			n.t = t
			n.expectActive("web.service", "keep.service")
			if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
				t.Errorf("%s: web says %q after the revert", n.Name, got)
			}
		}
	})

	t.Run("server stopped after the switch: nodes revert after confirm_timeout", func(t *testing.T) {
		writer.t = t
		u := gen2Units()
		u["web.service"] = webUnit("v3")
		writer.write("v3", rel{toml: confirmTOML("3s", "5s"), units: u, web: true})
		if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "v3")); err != nil {
			t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		// Wait until every node runs v3 (verifying), then cut the server off.
		for _, n := range fleet {
			n.t = t
			waitFor(t, time.Minute, n.Name+" to switch to v3", func() error {
				got, err := n.tryGet("http://127.0.0.1:8080/")
				if err == nil && got != "v3" {
					err = fmt.Errorf("web says %q", got)
				}
				return err
			})
		}
		s.stop()
		for _, n := range fleet {
			waitFor(t, time.Minute, n.Name+" to revert", func() error {
				st := n.statusJSON()
				r, _ := st["last_result"].(map[string]any)
				if r == nil || r["outcome"] != "reverted" || !strings.Contains(fmt.Sprint(r["reason"]), "confirm") {
					return fmt.Errorf("last result %v", r)
				}
				return nil
			})
			if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
				t.Errorf("%s: web says %q after the magic rollback, want v2", n.Name, got)
			}
		}
	})

	t.Run("restarted server lost nothing", func(t *testing.T) {
		s.t = t
		s.start()
		rels, err := s.client.Releases(context.Background())
		if err != nil || len(rels) != 3 {
			t.Fatalf("releases after restart: %d, %v", len(rels), err)
		}
		evs, err := s.client.Events(context.Background(), 0, 1000)
		if err != nil || len(evs) == 0 {
			t.Fatalf("events after restart: %v", err)
		}
		// The agents reconnect and report the failed v3 (no confirm).
		s.waitFleet(t, time.Minute, api.NodeFailed, names)
		out, _, _ := s.slipway("status")
		if !strings.Contains(out, "confirm") {
			t.Errorf("slipway status after restart:\n%s", out)
		}
	})
}
