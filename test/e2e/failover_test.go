package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// sockProxy forwards connections from a unix socket to the server's agent
// socket: a second way to the same server (as a second slipway-server on
// the same store would be) that the test can cut.
type sockProxy struct {
	l        net.Listener
	target   string
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func startSockProxy(t testing.TB, path, target string) *sockProxy {
	t.Helper()
	l, err := net.Listen("unix", path)
	must(t, err)
	must(t, os.Chmod(path, 0o666))
	p := &sockProxy{l: l, target: target}
	go p.serve()
	t.Cleanup(p.kill)
	return p
}

func (p *sockProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		up, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// kill closes the listener and every connection through it, as a server
// that dies does.
func (p *sockProxy) kill() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestAgentFailsOverToSecondServer: an agent on a real systemd node given
// [a dead address, proxy 1, proxy 2] (both proxies in front of the one real
// server) enrols and deploys through proxy 1; proxy 1 is killed while the
// node verifies the next release, and the node confirms through proxy 2:
// the release stays confirmed, no revert.
func TestAgentFailsOverToSecondServer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	target := filepath.Join(s.sockDir, "agent.sock")
	p1 := startSockProxy(t, filepath.Join(s.sockDir, "p1.sock"), target)
	p2 := startSockProxy(t, filepath.Join(s.sockDir, "p2.sock"), target)
	raw := nspawn.BootAllT(t, []string{"failover-a"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	servers := "unix:///run/slipway-server/dead.sock,unix:///run/slipway-server/p1.sock,unix:///run/slipway-server/p2.sock"
	n := startAgentAt(t, raw[0], s, releases, servers)
	names := []string{raw[0].Name}
	s.waitFleet(t, time.Minute, api.NodeNew, names)
	writer := &node{t: t, releases: releases}
	withHealth := func(minHealthy, confirm string) string {
		return strings.Replace(strings.Replace(webTOML, `min_healthy_time = "1s"`, `min_healthy_time = "`+minHealthy+`"`, 1),
			"[health]\n", "[health]\nconfirm_timeout = \""+confirm+"\"\n", 1)
	}

	writer.write("v1", rel{toml: withHealth("1s", "20s"), units: gen2Units(), web: true})
	if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "v1")); err != nil {
		t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
	}
	s.waitFleet(t, 2*time.Minute, api.NodeConverged, names)
	if p1.accepted.Load() == 0 || p2.accepted.Load() != 0 {
		t.Fatalf("connections: proxy 1 %d, proxy 2 %d; want the agent on proxy 1 only (past the dead address, sticky)", p1.accepted.Load(), p2.accepted.Load())
	}

	u := gen2Units()
	u["web.service"] = webUnit("v3")
	writer.write("v3", rel{toml: withHealth("4s", "15s"), units: u, web: true})
	if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "v3")); err != nil {
		t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
	}
	waitFor(t, time.Minute, "the node to switch to v3", func() error {
		got, err := n.tryGet("http://127.0.0.1:8080/")
		if err == nil && got != "v3" {
			err = fmt.Errorf("web says %q", got)
		}
		return err
	})
	killed := time.Now()
	p1.kill() // mid-rollout: the node is verifying v3; its confirm must go through proxy 2
	nodes := s.waitFleet(t, time.Minute, api.NodeConverged, names)
	t.Logf("REPORT proxy 1 killed during verification → confirmed through proxy 2: %s", time.Since(killed).Round(time.Millisecond))
	if nd := nodes[0]; nd.Confirmed != nd.Desired || nd.Actual != nd.Desired {
		t.Fatalf("desired %s actual %s confirmed %s", nd.Desired, nd.Actual, nd.Confirmed)
	}
	if p2.accepted.Load() == 0 {
		t.Fatal("no connection through proxy 2")
	}
	st := n.statusJSON()
	if r, _ := st["last_result"].(map[string]any); r == nil || r["outcome"] != "switched" {
		t.Fatalf("last result %v, want switched (no revert)", r)
	}
	if got := n.get("http://127.0.0.1:8080/"); got != "v3" {
		t.Fatalf("web says %q, want v3", got)
	}
	logs := n.sh("journalctl -u slipway-agent.service --no-pager -o cat")
	if !strings.Contains(logs, "the server does not answer; using the next one") {
		t.Errorf("no failover in the agent's log:\n%s", tail(logs, 40))
	}
	// The CLI given the dead address first reaches the server too.
	out, stderr, err := s.slipway("--server", "unix://"+filepath.Join(s.sockDir, "dead.sock")+","+s.url(), "nodes")
	if err != nil || !strings.Contains(out, raw[0].Name) {
		t.Fatalf("slipway --server dead,real nodes: %v\n%s\n%s", err, out, stderr)
	}
	if _, err := s.client.Nodes(context.Background()); err != nil {
		t.Fatal(err)
	}
}
