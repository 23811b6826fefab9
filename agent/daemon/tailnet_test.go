package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"tailscale.com/ipn/store/mem"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/api/apitest"
	"github.com/slipway-dev/slipway/shared/gossip"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
)

// Real-tailnet tests (shared/mesh/meshtest): no t.Parallel.

// tailnetServer serves the fake server's handler on the tsnet node
// "slipway" (port 80), authorising agents by WhoIs.
func tailnetServer(t *testing.T, ctx context.Context, control string) (*fakeServer, *mesh.Node) {
	t.Helper()
	sn := meshtest.Node(t, ctx, control, "slipway")
	ln, err := sn.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer(t, joinToken)
	srv.whois = sn.Whois
	// Agent requests carry no node token here: the spec's tailnet
	// alternative ({}) stands for the caller's WhoIs identity.
	srv.spec = apitest.New(t, apitest.Tailnet())
	hs := &http.Server{Handler: srv.handler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return srv, sn
}

// tailnetNode is a node whose daemon has its own tsnet node called
// hostname on control and talks to http://slipway, without a join token.
func tailnetNode(t *testing.T, srv *fakeServer, control, name, hostname string) *node {
	t.Helper()
	n := newNode(t, srv, "http://slipway")
	n.cfg.Name = name
	n.cfg.JoinTokenFile = ""
	n.cfg.Tailscale = &mesh.Config{Hostname: hostname, ControlURL: control, StateDir: filepath.Join(t.TempDir(), "tailscale"),
		Tags: []string{mesh.DefaultAgentTag}, Ephemeral: true, Store: new(mem.Store)}
	return n
}

func tailnetCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// The daemon brings up its own tsnet node, enrols over it without a join
// token (the server knows it by WhoIs), and switches, downloads a blob,
// reports and is confirmed, all over the tailnet. It enrols again at every
// start. A node token the server returns is stored; when the server issues
// none, the token file of an earlier enrolment (revoked) is removed.
func TestTailnetEnrolWithoutJoinToken(t *testing.T) {
	ctx := tailnetCtx(t)
	control := meshtest.Control(t)
	srv, _ := tailnetServer(t, ctx, control)

	for _, tt := range []struct {
		name    string
		noToken bool
	}{{"web-1", false}, {"web-2", true}} {
		t.Run(tt.name, func(t *testing.T) {
			srv.mu.Lock()
			srv.noTailnetToken = tt.noToken
			srv.enrolls = nil
			srv.mu.Unlock()
			n := tailnetNode(t, srv, control, tt.name, tt.name)
			if err := os.MkdirAll(filepath.Dir(n.cfg.TokenFile), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(n.cfg.TokenFile, []byte("swn_revoked-s3cret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			art := srv.addBlob([]byte("web binary " + tt.name))
			id1 := srv.publish(webManifest(tt.name, art), "r-"+tt.name)
			n.start()
			r := n.waitReport("idle on the desired generation", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
			if r.Current != 1 || r.LastGood != 1 || r.Outcome != "switched" {
				t.Fatalf("report %+v", r)
			}
			if err := n.stop(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(n.cfg.TokenFile)
			switch {
			case tt.noToken && !errors.Is(err, os.ErrNotExist):
				t.Fatalf("token file after an enrolment without a node token: %q, %v", b, err)
			case !tt.noToken && strings.TrimSpace(string(b)) != "node-token-"+tt.name+"-s3cret":
				t.Fatalf("token file holds %q, %v", b, err)
			}

			// A restart enrols again.
			n.skipReports()
			n.start()
			n.waitReport("a report after the restart", func(api.Report) bool { return true })
			if err := n.stop(); err != nil {
				t.Fatal(err)
			}
			srv.mu.Lock()
			enrolls := slices.Clone(srv.enrolls)
			srv.mu.Unlock()
			if len(enrolls) != 2 {
				t.Fatalf("%d enrolments, want one per start", len(enrolls))
			}
			for _, e := range enrolls {
				if e.Name != tt.name || e.JoinToken != "" || e.Labels["role"] != "web" {
					t.Fatalf("enrolment %+v, want %s without a join token", e, tt.name)
				}
			}
			logs := n.logs.String()
			for _, want := range []string{"bringing up the tailnet node", "on the tailnet", "enrolled", "stopped"} {
				if !strings.Contains(logs, want) {
					t.Errorf("log lacks %q", want)
				}
			}
			if strings.Contains(logs, "does not call this node") || strings.Contains(logs, "does not carry a tag") || strings.Contains(logs, "s3cret") {
				t.Fatalf("identity check failed, or a token was logged:\n%s", logs)
			}
		})
	}
}

// A node whose tailnet name is not its node name is refused at enrolment
// with an error that says why; the start-up check logs it first.
func TestTailnetWrongName(t *testing.T) {
	ctx := tailnetCtx(t)
	control := meshtest.Control(t)
	srv, _ := tailnetServer(t, ctx, control)
	n := tailnetNode(t, srv, control, "web-3", "not-web-3")
	n.start()
	err := n.runErr()
	if !errors.Is(err, ErrTailnetEnrollRefused) || !errors.Is(err, ErrEnrollRefused) || !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("Run: %v, want ErrTailnetEnrollRefused wrapping ErrForbidden", err)
	}
	if !strings.Contains(err.Error(), `tailnet host name must be "web-3"`) {
		t.Fatalf("error does not say why: %v", err)
	}
	if !strings.Contains(n.logs.String(), "the tailnet does not call this node by its node name") {
		t.Fatal("the identity mismatch was not logged at start")
	}
}

// While the control server cannot be reached the daemon is ready
// (READY=1), logs that it waits, and stops at once on SIGTERM.
func TestTailnetWaitLoggedAndBounded(t *testing.T) {
	meshtest.Control(t) // the netns and environment settings of a test tailnet
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	srv := newFakeServer(t, joinToken)
	n := tailnetNode(t, srv, dead, "web-4", "web-4")
	n.cfg.TailnetWaitLog = 50 * time.Millisecond
	var mu sync.Mutex
	var notified []string
	n.cfg.Notify = func(s string) { mu.Lock(); notified = append(notified, s); mu.Unlock() }
	n.start()
	waitFor(t, "progress logs", func() bool { return n.logs.count("still waiting for the tailnet") >= 2 })
	mu.Lock()
	ready := slices.Contains(notified, "READY=1")
	mu.Unlock()
	if !ready {
		t.Fatal("not ready while waiting for the tailnet")
	}
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if e, _, _, _, _ := srv.counts(); e != 0 {
		t.Fatalf("%d enrolments without a tailnet", e)
	}
}

// Gossip over the tailnet: the agent's member binds the tsnet node's IPv4,
// joins the server's member by its MagicDNS name (resolved on the
// tailnet), and a desired-changed event from the server wakes it.
func TestTailnetGossip(t *testing.T) {
	ctx := tailnetCtx(t)
	control := meshtest.Control(t)
	srv, sn := tailnetServer(t, ctx, control)
	ip, err := sn.IPv4()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 32)
	rand.Read(b)
	key := base64.StdEncoding.EncodeToString(b)
	keyring := filepath.Join(t.TempDir(), "gossip.keyring")
	if err := os.WriteFile(keyring, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := tailnetNode(t, srv, control, "web-5", "web-5")
	server, err := gossip.Create(gossip.Config{NodeName: "slipway", BindAddr: net.JoinHostPort(ip.String(), "7946"), Net: sn, Keyring: []string{key},
		Intervals: gossip.TestIntervals(), Log: zerolog.New(n.logs).With().Str("member", "server").Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Shutdown() })
	n.cfg.Gossip = &Gossip{Bind: "0.0.0.0:7946", KeyringFile: keyring, Join: []string{"slipway:7946"},
		PollInterval: time.Hour, WakeDelay: 20 * time.Millisecond, Intervals: gossip.TestIntervals()}

	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	agent := func() gossip.Member {
		for _, m := range server.Members() {
			if m.Name == "web-5" {
				return m
			}
		}
		return gossip.Member{}
	}
	waitFor(t, "the agent's member alive on the tailnet with generation 1", func() bool {
		m := agent()
		return m.Status == gossip.StatusAlive && m.Generation == id1
	})
	if host, port, _ := net.SplitHostPort(agent().Addr); !strings.HasPrefix(host, "100.") || port != "7946" {
		t.Fatalf("agent member at %s, want its tailnet IPv4 and port 7946", agent().Addr)
	}
	id2 := srv.publish(webManifest("2", art), "r2-web")
	if err := server.PublishDesiredChanged("web-5"); err != nil {
		t.Fatal(err)
	}
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's member left", func() bool { return agent().Status == gossip.StatusLeft })
}
