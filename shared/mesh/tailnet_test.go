package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"
)

// startTailnet runs DERP+STUN and a test control server on loopback and
// returns the control URL. No t.Parallel: the netns switch is process-wide.
func startTailnet(t *testing.T) string {
	t.Helper()
	netns.SetEnabled(false)
	t.Cleanup(func() { netns.SetEnabled(true) })
	envknob.SetenvForTest(t, "TS_DEBUG_OMIT_LOCAL_ADDRS", "true")
	derpMap := integration.RunDERPAndSTUN(t, logger.Discard, "127.0.0.1")
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: "mesh.test",
		TagOwners:      map[string][]string{DefaultAgentTag: nil},
	}
	control.HTTPTestServer = httptest.NewUnstartedServer(control)
	control.HTTPTestServer.Start()
	t.Cleanup(control.HTTPTestServer.Close)
	return control.HTTPTestServer.URL
}

func startNode(t *testing.T, ctx context.Context, controlURL, name string, tags ...string) *Node {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name) // before Cleanup(Close)
	n, err := Up(ctx, Config{Hostname: name, ControlURL: controlURL, StateDir: dir, Tags: tags, Ephemeral: true, Store: new(mem.Store)})
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestTailnetAgentAuthorisation runs a server node and three agent nodes on
// a real (loopback) tailnet; the server decides every agent request from
// WhoIs alone, the way httpapi does with the tailscale option.
func TestTailnetAgentAuthorisation(t *testing.T) {
	if testing.Short() {
		t.Skip("tailnet test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	controlURL := startTailnet(t)

	start := time.Now()
	srvNode := startNode(t, ctx, controlURL, "slipway")
	agentA := startNode(t, ctx, controlURL, "agent-a", DefaultAgentTag)
	agentB := startNode(t, ctx, controlURL, "agent-b", DefaultAgentTag)
	stranger := startNode(t, ctx, controlURL, "stranger")
	t.Logf("4 nodes up in %v", time.Since(start))

	authz, err := NewAuthorizer("", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var audit []string // what the server would audit: one line per decision
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/nodes/{name}/desired", func(w http.ResponseWriter, r *http.Request) {
		id, err := srvNode.Whois(r.Context(), r.RemoteAddr)
		if err != nil {
			t.Logf("whois %s: %v", r.RemoteAddr, err)
		}
		d := authz.Agent(id, r.PathValue("name"))
		mu.Lock()
		audit = append(audit, fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, d))
		mu.Unlock()
		if !d.Allow {
			http.Error(w, d.Reason, d.Status)
			return
		}
		fmt.Fprintf(w, "desired for %s", d.Actor)
	})
	ln, err := srvNode.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	get := func(n *Node, node string) (int, string) {
		t.Helper()
		tr := &http.Transport{DialContext: n.DialContext}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		// By MagicDNS name, as agents reach the server.
		t0 := time.Now()
		resp, err := c.Get("http://slipway/v1/agent/nodes/" + node + "/desired")
		if err != nil {
			t.Fatalf("GET as %s for %s: %v", n.srv.Hostname, node, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		t.Logf("%s -> %s: %d in %v", n.srv.Hostname, node, resp.StatusCode, time.Since(t0))
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	tests := []struct {
		name   string
		from   *Node
		node   string
		status int
		audit  string
	}{
		{"agent A own route", agentA, "agent-a", 200, `GET /v1/agent/nodes/agent-a/desired allow actor=node:agent-a`},
		{"agent B own route", agentB, "agent-b", 200, `GET /v1/agent/nodes/agent-b/desired allow actor=node:agent-b`},
		{"agent A asks for B", agentA, "agent-b", 403, `GET /v1/agent/nodes/agent-b/desired deny status=403 actor=node:agent-a reason="node agent-a may not act for node agent-b"`},
		{"untagged node", stranger, "stranger", 403, `GET /v1/agent/nodes/stranger/desired deny status=403 actor=tailnet:`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(tt.from, tt.node)
			if status != tt.status {
				t.Fatalf("status %d (%s); want %d", status, body, tt.status)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(audit) != i+1 {
				t.Fatalf("audit has %d lines; want %d: %q", len(audit), i+1, audit)
			}
			if got := audit[i]; !strings.HasPrefix(got, tt.audit) {
				t.Errorf("audit line\n got %s\nwant %s…", got, tt.audit)
			}
		})
	}
	for _, l := range audit {
		t.Logf("audit: %s", l)
	}

	// WhoIs of an address that is not a tailnet peer.
	if _, err := srvNode.Whois(ctx, net.JoinHostPort("127.0.0.1", "1")); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("whois of loopback address: %v; want ErrNoIdentity", err)
	}
}

// TestTailnetPackets: a node knows its tailnet IPv4 and its peers' by name,
// and datagrams between
// two nodes' packet listeners arrive from the sender's tailnet address,
// which WhoIs names (gossip runs on this).
func TestTailnetPackets(t *testing.T) {
	if testing.Short() {
		t.Skip("tailnet test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	controlURL := startTailnet(t)
	a := startNode(t, ctx, controlURL, "node-a", DefaultAgentTag)
	b := startNode(t, ctx, controlURL, "node-b", DefaultAgentTag)

	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	aIP, err := a.IPv4()
	if err != nil || !cgnat.Contains(aIP) {
		t.Fatalf("node-a IPv4 = %v, %v; want an address in %v", aIP, err, cgnat)
	}
	bIP, err := b.IPv4()
	if err != nil || !cgnat.Contains(bIP) || bIP == aIP {
		t.Fatalf("node-b IPv4 = %v, %v (node-a %v)", bIP, err, aIP)
	}

	// Names resolve from the network map, as MagicDNS would.
	for _, tt := range []struct {
		host string
		want netip.Addr
	}{
		{"node-a", aIP}, {"node-a.mesh.test", aIP}, {"NODE-A.mesh.test.", aIP}, {"node-b", bIP}, {"100.64.0.99", netip.MustParseAddr("100.64.0.99")},
	} {
		if got, err := b.LookupIP(ctx, tt.host); err != nil || got != tt.want {
			t.Errorf("LookupIP(%q) = %v, %v; want %v", tt.host, got, err, tt.want)
		}
	}
	for _, host := range []string{"node-c", "node-a.other.test", "mesh"} {
		if got, err := b.LookupIP(ctx, host); !errors.Is(err, ErrUnknownHost) {
			t.Errorf("LookupIP(%q) = %v, %v; want ErrUnknownHost", host, got, err)
		}
	}

	if pc, err := b.ListenPacket("udp", ":9000"); err == nil {
		pc.Close()
		t.Error("ListenPacket without an IP succeeded")
	}
	bAddr := netip.AddrPortFrom(bIP, 9000)
	pcB, err := b.ListenPacket("udp", bAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pcB.Close()
	pcA, err := a.ListenPacket("udp4", netip.AddrPortFrom(aIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pcA.Close()

	// The first datagrams may go before the path is up: resend until one
	// arrives. A peer that came up a moment ago may not have told control
	// its DERP home yet; the first WireGuard handshake then fails ("no UDP
	// or DERP addr") and is retried only after 5s (seen in about one run
	// in three).
	got := make(chan net.Addr, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pcB.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "ping" {
				got <- from
				return
			}
		}
	}()
	t0 := time.Now()
	var from net.Addr
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for from == nil {
		if _, err := pcA.WriteTo([]byte("ping"), net.UDPAddrFromAddrPort(bAddr)); err != nil {
			t.Fatal(err)
		}
		select {
		case from = <-got:
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no datagram from node-a at node-b")
		}
	}
	t.Logf("datagram node-a → node-b in %v, from %v", time.Since(t0), from)
	ap, err := netip.ParseAddrPort(from.String())
	if err != nil || ap.Addr() != aIP {
		t.Fatalf("datagram from %v; want node-a's %v", from, aIP)
	}
	id, err := b.Whois(ctx, from.String())
	if err != nil || id.NodeName != "node-a" || !id.Tagged(DefaultAgentTag) {
		t.Errorf("whois %v = %+v, %v; want tagged node-a", from, id, err)
	}

	// Closing a packet listener frees its port.
	pcB.Close()
	again, err := b.ListenPacket("udp", bAddr.String())
	if err != nil {
		t.Fatalf("listen again on %v after close: %v", bAddr, err)
	}
	again.Close()
}
