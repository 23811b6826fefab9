package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/gossip"
)

// wakeLog records the desired-changed events one member receives.
type wakeLog struct {
	mu  sync.Mutex
	evs []gossip.DesiredChanged
}

func (w *wakeLog) on(e gossip.DesiredChanged) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.evs = append(w.evs, e)
}

func (w *wakeLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.evs)
}

// concerning returns the targets of the events that concern node.
func (w *wakeLog) concerning(node string) [][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out [][]string
	for _, e := range w.evs {
		if e.Concerns(node) {
			out = append(out, e.Targets)
		}
	}
	return out
}

func gossipKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// agentMember starts a serf member as an agent would (its name is its
// node name) and joins it to the server's.
func agentMember(t *testing.T, name, key, join string, wl *wakeLog) *gossip.Peer {
	t.Helper()
	a, err := gossip.Create(gossip.Config{NodeName: name, BindAddr: "127.0.0.1:0", Keyring: []string{key}, Intervals: gossip.TestIntervals(), OnDesiredChanged: wl.on})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	if _, err := a.Join(join); err != nil {
		t.Fatalf("%s joins the server: %v", name, err)
	}
	return a
}

// TestGossip runs the server with [gossip] on loopback among agents'
// members: members named like enrolled nodes get their liveness recorded
// (alive; failed when stopped without leaving; left when they leave), a
// member that is no node is ignored, a release wakes exactly its nodes'
// members, the liveness gauge counts them, and the server leaves the
// cluster gracefully when it stops.
func TestGossip(t *testing.T) {
	dir := t.TempDir()
	key := gossipKey(t)
	keyring := filepath.Join(dir, "gossip.keys")
	if err := os.WriteFile(keyring, []byte("# current key\n"+key+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(dir, "state")
	c.AdminTokens = []config.AdminToken{{Name: "ops", Role: api.RoleAdmin, SHA256: httpapi.HashToken(adminToken)}}
	c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", NodeName: "slipway-server", KeyringFile: keyring}
	logs := &syncLog{}
	lv := &LogLevel{}
	lv.Set(zerolog.DebugLevel)
	ready, metricsReady, gossipReady := make(chan string, 1), make(chan string, 1), make(chan string, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, c, LevelLogger(logs, lv, "json"), Options{
			Spec: api.Spec, Ready: func(a string) { ready <- a }, MetricsReady: func(a string) { metricsReady <- a },
			GossipReady: func(a string) { gossipReady <- a }, GossipIntervals: gossip.TestIntervals(),
		})
	}()
	var addr, gaddr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	maddr, gaddr := <-metricsReady, <-gossipReady
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	}()
	admin, err := api.NewClient("http://"+addr, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "web-2"} {
		jt, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.WithToken("").Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: map[string]string{"role": "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	liveness := func(name string) string {
		t.Helper()
		n, err := admin.Node(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return n.Liveness
	}

	wl1, wl2, wlx := &wakeLog{}, &wakeLog{}, &wakeLog{}
	web1 := agentMember(t, "web-1", key, gaddr, wl1)
	web2 := agentMember(t, "web-2", key, gaddr, wl2)
	stranger := agentMember(t, "stranger", key, gaddr, wlx)
	waitFor(t, "web-1 and web-2 alive", func() bool { return liveness("web-1") == api.LivenessAlive && liveness("web-2") == api.LivenessAlive })
	waitFor(t, "the stranger ignored", func() bool {
		return strings.Contains(logs.String(), `"member":"stranger"`) && strings.Contains(logs.String(), "not an enrolled node")
	})
	if ns, err := admin.Nodes(ctx); err != nil || len(ns) != 2 {
		t.Fatalf("nodes: %+v %v", ns, err)
	}

	// A release for web-1 wakes web-1, and names no one else.
	manifest := json.RawMessage(`{"name":"web","units":{"web.service":"[Service]\nExecStart=/bin/true\n"}}`)
	t0 := time.Now()
	if _, err := admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifest, Strategy: &api.Strategy{Kind: api.StrategyCanary, Canary: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-1 woken", func() bool { return len(wl1.concerning("web-1")) > 0 })
	t.Logf("desired-changed at web-1 %v after the release", time.Since(t0))
	if got := wl1.concerning("web-1"); fmt.Sprint(got) != "[[web-1]]" {
		t.Errorf("web-1 received %v, want one event naming web-1", got)
	}
	// Every member receives the event; it concerns web-1 only.
	waitFor(t, "the event at web-2 and the stranger", func() bool { return wl2.count() > 0 && wlx.count() > 0 })
	if got := wl2.concerning("web-2"); len(got) != 0 {
		t.Errorf("web-2 (not in the canary wave) woken: %v", got)
	}
	if got := wlx.concerning("stranger"); len(got) != 0 {
		t.Errorf("the stranger woken: %v", got)
	}

	// Stopped without leaving: failed. Leaving: left.
	if err := web1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-1 failed", func() bool { return liveness("web-1") == api.LivenessFailed })
	if err := web2.Leave(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-2 left", func() bool { return liveness("web-2") == api.LivenessLeft })
	n1, _ := admin.Node(ctx, "web-1")
	if n1.LivenessSince.Before(t0) || n1.State == api.NodeOffline {
		t.Errorf("web-1: liveness since %v (before %v?), state %s (gossip must not change it)", n1.LivenessSince, t0, n1.State)
	}
	fams := scrape(t, maddr)
	for l, want := range map[string]float64{"failed": 1, "left": 1, "alive": 0, "unknown": 0} {
		if got := metric(fams, "slipway_nodes_by_liveness", map[string]string{"liveness": l}); got != want {
			t.Errorf("slipway_nodes_by_liveness{liveness=%q} = %v, want %v", l, got, want)
		}
	}

	// The server leaves gracefully: the stranger sees it left.
	stop()
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	waitFor(t, "the server left", func() bool {
		return slices.ContainsFunc(stranger.Members(), func(m gossip.Member) bool {
			return m.Name == "slipway-server" && m.Status == gossip.StatusLeft
		})
	})
}

// TestGossipKeyring: gossip does not start without a usable keyring.
func TestGossipKeyring(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"missing file", "", "no such file"},
		{"no key", "# nothing here\n\n", "holds no key"},
		{"not base64", "not base64!\n", "not base64"},
		{"wrong length", base64.StdEncoding.EncodeToString([]byte("short")) + "\n", "keyring"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.content != "" {
				if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c := config.Default()
			c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", "", t.TempDir()
			c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", NodeName: "slipway-server", KeyringFile: p}
			err := Serve(context.Background(), c, zerolog.Nop(), Options{Spec: api.Spec})
			if err == nil || !strings.Contains(err.Error(), "gossip") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Serve: %v; want a gossip error with %q", err, tc.want)
			}
		})
	}
}

// fakePublisher records what it sends; it refuses events naming more than
// max nodes (as serf refuses events too large), or everything with err.
type fakePublisher struct {
	max  int
	err  error
	sent [][]string
}

func (p *fakePublisher) PublishDesiredChanged(targets ...string) error {
	if p.err != nil {
		return p.err
	}
	if len(targets) > p.max {
		return fmt.Errorf("encoded user event exceeds configured limit")
	}
	p.sent = append(p.sent, targets)
	return nil
}

// TestWakeups: the desired-changed event names the nodes; one too large is
// sent naming none (every agent wakes); a failure is logged, never
// returned; nothing is sent before a member is set or after shutdown.
func TestWakeups(t *testing.T) {
	logs := &syncLog{}
	w := &wakeups{log: zerolog.New(logs)}
	w.onDesired([]string{"web-1"}) // no member yet: dropped
	p := &fakePublisher{max: 2}
	w.set(p)
	w.onDesired([]string{"web-1", "web-2"})
	w.onDesired([]string{"web-1", "web-2", "web-3"})
	if got := fmt.Sprint(p.sent); got != "[[web-1 web-2] []]" {
		t.Errorf("sent %s, want the two nodes, then an event naming none", got)
	}
	p.err = fmt.Errorf("serf is shut down")
	w.onDesired([]string{"web-1"})
	if !strings.Contains(logs.String(), "desired-changed event not sent") {
		t.Errorf("failure not logged:\n%s", logs)
	}
	p.err = nil
	w.set(nil)
	w.onDesired([]string{"web-1"})
	if len(p.sent) != 2 {
		t.Errorf("sent after shutdown: %v", p.sent)
	}
}
