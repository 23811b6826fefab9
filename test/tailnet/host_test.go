package tailnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/types/preftype"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// tailscaledCache holds tailscaled binaries built from the module at the
// version go.mod requires, named by it.
const tailscaledCache = "/var/cache/slipway/tailscaled"

// tailscaledBin returns the real tailscaled, built from the module
// (go build tailscale.com/cmd/tailscaled in this repository, so its version
// is go.mod's) once and cached.
func tailscaledBin(t *testing.T) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "tailscale.com")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m tailscale.com: %v", err)
	}
	bin := filepath.Join(tailscaledCache, "tailscaled-"+strings.TrimSpace(string(out)))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	must(t, os.MkdirAll(tailscaledCache, 0o755))
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	build := exec.Command("go", "build", "-o", tmp, "tailscale.com/cmd/tailscaled")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tailscaled: %v\n%s", err, out)
	}
	must(t, os.Rename(tmp, bin))
	return bin
}

// tailscaled is one real tailscaled run by the test, with its LocalAPI
// socket in dir (which nodes bind at /ts).
type tailscaled struct {
	dir   string
	sock  string
	socks string // SOCKS5 proxy address (userspace networking)
	log   *bytes.Buffer
	lc    *local.Client
}

// startTailscaled runs tailscaled: with tun "" in userspace networking
// with a SOCKS5 proxy on loopback, else with a TUN device of that name.
func startTailscaled(t *testing.T, bin, dir, tun string) *tailscaled {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	ts := &tailscaled{dir: dir, sock: filepath.Join(dir, "tailscaled.sock"), log: &bytes.Buffer{}}
	args := []string{"--state=" + filepath.Join(dir, "tailscaled.state"), "--statedir=" + dir, "--socket=" + ts.sock, "--port=0"}
	if tun == "" {
		ts.socks = freeAddr(t)
		args = append(args, "--tun=userspace-networking", "--socks5-server="+ts.socks)
	} else {
		args = append(args, "--tun="+tun)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), tsEnv...)
	cmd.Stdout, cmd.Stderr = ts.log, ts.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("tailscaled %s log:\n%s", dir, tail(ts.log.String(), 30))
		}
	})
	ts.lc = &local.Client{Socket: ts.sock, UseSocketOnly: true}
	return ts
}

// up logs the daemon in to control as hostname with tags (as `tailscale
// up --login-server=control --hostname=... --advertise-tags=...
// --accept-dns=false --netfilter-mode=off` would) and waits until it runs.
func (ts *tailscaled) up(t *testing.T, control, hostname string, tags ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "tailscaled's LocalAPI", func() error {
		_, err := ts.lc.Status(ctx)
		return err
	})
	prefs := ipn.NewPrefs()
	prefs.ControlURL, prefs.Hostname, prefs.AdvertiseTags = control, hostname, tags
	prefs.WantRunning, prefs.CorpDNS, prefs.NetfilterMode = true, false, preftype.NetfilterOff
	must(t, ts.lc.Start(ctx, ipn.Options{UpdatePrefs: prefs}))
	must(t, ts.lc.StartLoginInteractive(ctx))
	waitFor(t, time.Minute, hostname+" on the tailnet", func() error {
		st, err := ts.lc.Status(ctx)
		if err != nil {
			return err
		}
		if st.BackendState != ipn.Running.String() {
			return errors.New("state " + st.BackendState)
		}
		return nil
	})
}

// hostServer is slipway-server in mode "host" on a TUN tailscaled.
func startHostServer(t *testing.T, dir, sock string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, admin: freeAddr(t)}
	must(t, os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600))
	cfg := fmt.Sprintf(`listen = %q
state_dir = %q
metrics_listen = ""
[[admin_token]]
name = "e2e"
role = "admin"
file = %q
[tailscale]
enabled = true
mode = "host"
socket = %q
listen = ":80"
`, s.admin, filepath.Join(dir, "state"), filepath.Join(dir, "admin.token"), sock)
	must(t, os.WriteFile(filepath.Join(dir, "server.toml"), []byte(cfg), 0o600))
	c, err := api.NewClient("http://"+s.admin, adminToken)
	must(t, err)
	s.client = c
	t.Cleanup(s.stop)
	s.start()
	return s
}

// startHostAgent runs slipway-agent in mode "host" as node name in node
// raw, using the tailscaled whose directory is bound at /ts: through its
// SOCKS5 proxy socks, or ("") over its TUN device.
func startHostAgent(t *testing.T, raw *nspawn.Node, name, socks string) *agentNode {
	t.Helper()
	n := &agentNode{Node: raw, t: t}
	n.sh("mkdir -p /etc/slipway")
	cfg := fmt.Sprintf(`server = "http://slipway"
node_name = %q
metrics_listen = ""
poll_wait = "5s"
[labels]
role = "web"
[tailscale]
enabled = true
mode = "host"
socket = "/ts/tailscaled.sock"
`, name)
	if socks != "" {
		cfg += fmt.Sprintf("proxy = \"socks5://%s\"\n", socks)
	}
	must(t, raw.WriteFile("/etc/slipway/agent.toml", []byte(cfg), 0o600))
	unit := "[Unit]\nDescription=Slipway agent\n[Service]\nType=notify\nNotifyAccess=main\n" +
		"ExecStart=" + nodeBin + "/slipway-agent --config /etc/slipway/agent.toml --log-format json run\n" +
		"Restart=always\nRestartSec=2s\n"
	must(t, raw.WriteFile("/etc/systemd/system/slipway-agent.service", []byte(unit), 0o644))
	n.sh("systemctl daemon-reload && systemctl start --no-block slipway-agent.service")
	return n
}

// TestHostTailscaled: the server and the agents use real tailscaled
// daemons of their hosts instead of tsnet nodes. The server's runs with a
// TUN device (the server listens on its tailnet address, WhoIs through its
// LocalAPI); the agents' run in userspace networking, reached through
// their SOCKS5 proxies. A tagged agent named as its node enrols by its
// tailnet identity and converges; a host whose tailnet name is not the
// node name is refused at agent start; an untagged tailnet node that
// presents a join token is refused without using it up.
func TestHostTailscaled(t *testing.T) {
	needSuite(t)
	bin := tailscaledBin(t)
	ctx := context.Background()
	control := meshtest.Control(t, mesh.DefaultAgentTag)
	dir := t.TempDir()

	start := time.Now()
	srvTS := startTailscaled(t, bin, filepath.Join(dir, "ts-server"), "tsslip0")
	// Tagged as an agent too: the server's host is also a node
	// ("slipway"), whose agent uses the same tailscaled over its TUN device.
	srvTS.up(t, control, "slipway", mesh.DefaultAgentTag)
	t.Logf("REPORT server's tailscaled (TUN) up on the test control: %s", time.Since(start).Round(time.Millisecond))
	srvDir := filepath.Join(dir, "server")
	must(t, os.MkdirAll(srvDir, 0o755))
	s := startHostServer(t, srvDir, srvTS.sock)

	// Nodes are named when they boot (a random suffix): their tailscaled
	// daemons, whose directories they bind at /ts, start after.
	tsDir := func(name string) string {
		d := filepath.Join(dir, "ts-"+name)
		must(t, os.MkdirAll(d, 0o755))
		return d
	}
	boot := func(name, tsdir string) *nspawn.Node {
		return nspawn.BootT(t, name, nspawn.Options{
			Network: nspawn.NetworkNamespacePrefix + netnsDir,
			Binds: []nspawn.Bind{
				{Host: binDir, Node: nodeBin, ReadOnly: true},
				{Host: tsdir, Node: "/ts"},
			},
		})
	}
	goodDir, wrongDir := tsDir("good"), tsDir("wrong")
	goodRaw, wrongRaw, tunRaw := boot("th-good", goodDir), boot("th-wrong", wrongDir), boot("th-tun", srvTS.dir)
	good, wrong := goodRaw.Name, wrongRaw.Name
	goodTS := startTailscaled(t, bin, goodDir, "")
	goodTS.up(t, control, good, mesh.DefaultAgentTag)
	wrongTS := startTailscaled(t, bin, wrongDir, "")
	wrongTS.up(t, control, "not-"+wrong, mesh.DefaultAgentTag)
	raws := map[string]*nspawn.Node{good: goodRaw, wrong: wrongRaw}

	agentStart := time.Now()
	goodAgent := startHostAgent(t, raws[good], good, goodTS.socks)
	wrongAgent := startHostAgent(t, raws[wrong], wrong, wrongTS.socks)
	tunAgent := startHostAgent(t, tunRaw, "slipway", "")
	defer func() {
		if t.Failed() {
			for _, a := range []*agentNode{goodAgent, wrongAgent, tunAgent} {
				t.Logf("%s agent journal:\n%s", a.Name, tail(a.journal(), 40))
			}
		}
	}()

	t.Run("a tagged agent enrols by its tailnet identity through tailscaled's SOCKS5 proxy", func(t *testing.T) {
		s.waitNodes(t, 2*time.Minute, "the agent enrolled", []string{good}, func(n api.Node) bool { return n.State == api.NodeNew })
		t.Logf("REPORT agent service started → enrolled by tailnet identity through the host's tailscaled: %s", time.Since(agentStart).Round(time.Millisecond))
		goodAgent.t = t
		j := goodAgent.journal()
		for _, want := range []string{"using the host's tailscaled", `"proxy":true`, "enrolled by the tailnet identity"} {
			if !strings.Contains(j, want) {
				t.Errorf("agent journal lacks %q", want)
			}
		}
	})

	t.Run("an agent on a host with a TUN tailscaled enrols by its tailnet identity", func(t *testing.T) {
		s.waitNodes(t, 2*time.Minute, "the agent enrolled", []string{"slipway"}, func(n api.Node) bool { return n.State == api.NodeNew })
		tunAgent.t = t
		j := tunAgent.journal()
		for _, want := range []string{`"proxy":false`, `"tun":true`, "enrolled by the tailnet identity"} {
			if !strings.Contains(j, want) {
				t.Errorf("agent journal lacks %q", want)
			}
		}
	})

	t.Run("deploy over the host tailnets", func(t *testing.T) {
		rel := writeRelease(t, dir, "hv1", "hv1", "20s", "1s")
		start := time.Now()
		if out, err := s.slipway("deploy", "--detach", rel); err != nil {
			t.Fatalf("slipway deploy: %v\n%s", err, out)
		}
		s.waitNodes(t, 2*time.Minute, "both nodes converged", []string{good, "slipway"}, func(n api.Node) bool { return n.State == api.NodeConverged })
		t.Logf("REPORT publish → both nodes confirmed through their hosts' tailscaled (userspace+SOCKS5, TUN) by a host-mode server: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("a host whose tailnet name is not node_name is refused at agent start", func(t *testing.T) {
		wrongAgent.t = t
		waitFor(t, time.Minute, "the refusal in the agent's journal", func() error {
			if j := wrongAgent.journal(); !strings.Contains(j, fmt.Sprintf(`slipway-agent: error: the host's tailnet identity does not fit this node: the host's tailnet name is "not-%s", not node_name "%s"`, wrong, wrong)) {
				return errors.New("not refused yet")
			}
			return nil
		})
		// The refusal is logged before the process exits and systemd
		// restarts it after RestartSec: wait for the restart.
		waitFor(t, time.Minute, "the agent to exit and be restarted", func() error {
			if n := strings.TrimSpace(wrongAgent.sh("systemctl show -p NRestarts --value slipway-agent.service")); n == "0" {
				return fmt.Errorf("the agent did not exit (NRestarts %s)", n)
			}
			return nil
		})
		if j := wrongAgent.journal(); !strings.Contains(j, "slipway-agent: hint: bring the host onto the tailnet as this node: tailscale up --hostname=<node_name>") {
			t.Errorf("no hint in the journal:\n%s", tail(j, 20))
		}
		if j := wrongAgent.journal(); strings.Contains(j, "enrol") {
			t.Errorf("the refused agent tried to enrol:\n%s", tail(j, 20))
		}
		if _, err := s.client.Node(ctx, wrong); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("%s is a node: %v", wrong, err)
		}
		wrongAgent.sh("systemctl stop slipway-agent.service")
	})

	t.Run("an untagged tailnet node with a join token is refused and the token stays unused", func(t *testing.T) {
		jt, err := s.client.CreateJoinToken(ctx, api.JoinTokenRequest{})
		must(t, err)
		stranger := meshtest.Node(t, ctx, control, "th-stranger")
		c, err := api.NewClient("http://slipway", "", api.WithDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return stranger.DialContext(ctx, network, addr)
		}))
		must(t, err)
		_, err = c.Enroll(ctx, api.EnrollRequest{Name: "th-stranger", JoinToken: jt.Token})
		if !errors.Is(err, api.ErrForbidden) {
			t.Fatalf("untagged node enrolling with a join token: %v, want 403", err)
		}
		if _, err := s.client.Node(ctx, "th-stranger"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("th-stranger is a node: %v", err)
		}
		// The same token still enrols a node on the server's loopback
		// listener: it was not used up.
		anon, err := api.NewClient("http://"+s.admin, "")
		must(t, err)
		if resp, err := anon.Enroll(ctx, api.EnrollRequest{Name: "th-later", JoinToken: jt.Token}); err != nil || resp.NodeToken == "" {
			t.Fatalf("the join token after the refusal: %+v %v", resp, err)
		}
	})
}
