package daemon

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/cmdexit/cmdexittest"
	"github.com/slipway-dev/slipway/shared/gossip"
)

// fakeMember stands in for the serf member: it records calls, and send
// delivers a desired-changed event as the member's goroutine would.
type fakeMember struct {
	mu       sync.Mutex
	cfg      gossip.Config // as the daemon created it
	creates  int
	starts   int
	joins    [][]string
	joinFail int      // the next Join calls fail
	tags     []string // generation of every SetTags
	labels   map[string]string
	members  []gossip.Member
	left     bool
}

func (f *fakeMember) create(c gossip.Config) (member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = c
	f.creates++
	return f, nil
}

func (f *fakeMember) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	return nil
}

func (f *fakeMember) Join(addrs ...string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joins = append(f.joins, addrs)
	if f.joinFail > 0 {
		f.joinFail--
		return 0, errors.New("gossip: join: connection refused")
	}
	return len(addrs), nil
}

func (f *fakeMember) SetTags(labels map[string]string, gen string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tags = append(f.tags, gen)
	f.labels = maps.Clone(labels)
	return nil
}

func (f *fakeMember) Members() []gossip.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members)
}

func (f *fakeMember) Leave() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = true
	return nil
}

// send delivers a desired-changed event naming targets (none = all).
func (f *fakeMember) send(targets ...string) {
	f.mu.Lock()
	cb := f.cfg.OnDesiredChanged
	f.mu.Unlock()
	cb(gossip.DesiredChanged{Targets: targets})
}

// generation is the generation the member's tags carry: the last SetTags,
// else the one it was created with (a member created after the first
// switch starts with it and needs no SetTags).
func (f *fakeMember) generation() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.tags) > 0 {
		return f.tags[len(f.tags)-1]
	}
	return f.cfg.Generation
}

func (f *fakeMember) state() (starts, joins int, tags []string, left bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, len(f.joins), slices.Clone(f.tags), f.left
}

func (f *fakeMember) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("fake member: creates=%d starts=%d joins=%q tags=%q labels=%v left=%v", f.creates, f.starts, f.joins, f.tags, f.labels, f.left)
}

// gossipNode is a node whose daemon runs in the gossip fetch mode with a
// fake member; interval is its poll interval.
func gossipNode(t *testing.T, srv *fakeServer, interval time.Duration) (*node, *fakeMember) {
	t.Helper()
	n := newNode(t, srv, srv.start())
	fm := &fakeMember{members: []gossip.Member{{Name: "web-1", Status: gossip.StatusAlive}, {Name: "slipway", Status: gossip.StatusAlive}}}
	n.cfg.Gossip = &Gossip{Bind: "127.0.0.1:0", Join: []string{"192.0.2.1:7946"}, PollInterval: interval, WakeDelay: 100 * time.Millisecond}
	n.cfg.newMember = fm.create
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(fm)
		}
	})
	return n, fm
}

func (f *fakeServer) pollStats() (polls int, waits []time.Duration, times []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls, slices.Clone(f.waits), slices.Clone(f.pollTimes)
}

// A wake-up for this node fetches at once although the poll interval is
// an hour; no poll waits on the server; the member's tags follow the
// switch; the member leaves when the daemon stops.
func TestGossipWakeFetchesAtOnce(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n, fm := gossipNode(t, srv, time.Hour)
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	waitFor(t, "member started and joined", func() bool { s, j, _, _ := fm.state(); return s == 1 && j == 1 })
	fm.mu.Lock()
	cfg := fm.cfg
	joins := slices.Clone(fm.joins)
	fm.mu.Unlock()
	if cfg.NodeName != "web-1" || cfg.BindAddr != "127.0.0.1:0" || cfg.Net != nil || len(cfg.Keyring) != 0 ||
		!reflect.DeepEqual(cfg.Labels, n.cfg.Labels) || !reflect.DeepEqual(joins, [][]string{{"192.0.2.1:7946"}}) {
		t.Fatalf("member created with %+v, joined %q", cfg, joins)
	}
	waitFor(t, "tags carry generation 1", func() bool { return fm.generation() == id1 })

	id2 := srv.publish(webManifest("2", art), "r2-web")
	polls, _, _ := srv.pollStats()
	fm.send("web-1")
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	waitFor(t, "tags carry generation 2", func() bool { return fm.generation() == id2 })
	if p, waits, _ := srv.pollStats(); p <= polls || slices.ContainsFunc(waits, func(w time.Duration) bool { return w != 0 }) {
		t.Fatalf("polls %d (before the wake-up %d), waits %v: want polls without waiting", p, polls, waits)
	}
	fm.mu.Lock()
	labels := fm.labels
	fm.mu.Unlock()
	if !reflect.DeepEqual(labels, n.cfg.Labels) {
		t.Fatalf("tags' labels %v", labels)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, left := fm.state(); !left {
		t.Fatal("the member did not leave")
	}
}

// A burst of events is one poll; events for other nodes wake nothing.
func TestGossipWakeCoalescesAndFilters(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n, fm := gossipNode(t, srv, time.Hour)
	n.cfg.Gossip.WakeDelay = 300 * time.Millisecond
	n.start()
	waitFor(t, "the first poll and the member", func() bool {
		p, _, _ := srv.pollStats()
		s, _, _, _ := fm.state()
		return p >= 1 && s == 1
	})
	before, _, _ := srv.pollStats() // the next poll is an hour away

	// A burst: 20 events that concern web-1 (by name, or all nodes), and
	// some that do not. The poll that serves them says how many it served:
	// all 20 in one, and none of the others.
	for i := range 20 {
		switch i % 3 {
		case 0:
			fm.send("web-1")
		case 1:
			fm.send() // every node
		case 2:
			fm.send("db-1", "web-1")
		}
		fm.send("web-2", "web-10")
	}
	waitFor(t, "the poll serving the burst", func() bool { return n.logs.count(`"events":20,`) == 1 })
	waitFor(t, "its answer", func() bool { p, _, _ := srv.pollStats(); return p >= before+1 })
	if p, _, _ := srv.pollStats(); p != before+1 {
		t.Fatalf("%d polls for one burst, want 1", p-before)
	}

	// Only events for other nodes: no wake-up; the next event for web-1
	// is served alone.
	for range 5 {
		fm.send("web-2")
		fm.send("db-1", "db-2")
	}
	fm.send("web-1")
	waitFor(t, "the poll serving the single event", func() bool { return n.logs.count(`"events":1,`) == 1 })
	waitFor(t, "its answer", func() bool { p, _, _ := srv.pollStats(); return p >= before+2 })
	if p, _, _ := srv.pollStats(); p != before+2 {
		t.Fatalf("%d polls, want %d: events for other nodes woke the daemon", p, before+2)
	}
	if l := n.logs.count("desired-changed: polling now"); l != 2 {
		t.Fatalf("%d wake-up polls, want 2", l)
	}
}

// Without events the daemon polls every poll interval (jittered ±10%),
// without waiting on the server.
func TestGossipPollsAtInterval(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	const interval = 150 * time.Millisecond
	n, _ := gossipNode(t, srv, interval)
	n.start()
	waitFor(t, "five polls", func() bool { p, _, _ := srv.pollStats(); return p >= 5 })
	_, waits, times := srv.pollStats()
	for i, w := range waits {
		if w != 0 {
			t.Fatalf("poll %d waited %s on the server", i, w)
		}
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < interval-interval/10 {
			t.Fatalf("polls %d and %d only %s apart, want at least %s", i-1, i, gap, interval-interval/10)
		}
	}
	// A new generation is picked up by the next poll.
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
}

// A join that fails is retried with backoff and logged; a member that
// finds itself alone joins again. The daemon polls meanwhile.
func TestGossipJoinRetried(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n, fm := gossipNode(t, srv, 100*time.Millisecond)
	fm.joinFail = 3
	fm.members = []gossip.Member{{Name: "web-1", Status: gossip.StatusAlive}, {Name: "slipway", Status: gossip.StatusFailed}}
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	waitFor(t, "a join after three failures", func() bool { return n.logs.count("joined the gossip cluster") >= 1 })
	if c := n.logs.count("cannot join the gossip cluster; retrying"); c != 3 {
		t.Fatalf("%d failed joins logged, want 3", c)
	}
	waitFor(t, "a rejoin while alone", func() bool { return n.logs.count("no other gossip member is alive; joining again") >= 1 })
	waitFor(t, "the rejoin", func() bool { _, j, _, _ := fm.state(); return j >= 5 })
}

// Gossip that cannot start (here: an unreadable keyring) is logged and
// does not stop the daemon: it polls every poll interval.
func TestGossipBrokenStillPolls(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n, fm := gossipNode(t, srv, 100*time.Millisecond)
	n.cfg.Gossip.KeyringFile = filepath.Join(t.TempDir(), "missing.keyring")
	n.start()
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	if !strings.Contains(n.logs.String(), "gossip is off for this run") {
		t.Fatal("the gossip failure was not logged")
	}
	if s, _, _, _ := fm.state(); s != 0 {
		t.Fatalf("member started %d times", s)
	}
}

// Without gossip every poll is a long-poll of PollWait (as before).
func TestLongPollWithoutGossip(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.start()
	waitFor(t, "three polls", func() bool { p, _, _ := srv.pollStats(); return p >= 3 })
	_, waits, _ := srv.pollStats()
	for i, w := range waits {
		if w != n.cfg.PollWait {
			t.Fatalf("poll %d waited %s, want the long-poll's %s", i, w, n.cfg.PollWait)
		}
	}
}

func TestJitter(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Minute); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("jitter(1m) = %s", d)
		}
	}
}

// A real serf member (the server's side) on loopback sends desired-changed
// to the agent's member: the daemon, polling only every hour, fetches at
// once. The cluster sees the agent's labels and generation, and sees it
// leave when it stops.
func TestGossipRealMember(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	b := make([]byte, 32)
	rand.Read(b)
	key := base64.StdEncoding.EncodeToString(b)
	keyring := filepath.Join(t.TempDir(), "gossip.keyring")
	if err := os.WriteFile(keyring, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	server, err := gossip.Create(gossip.Config{NodeName: "slipway", BindAddr: "127.0.0.1:0", Keyring: []string{key},
		Intervals: gossip.TestIntervals(), Log: zerolog.New(n.logs).With().Str("side", "server").Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Shutdown() })
	n.cfg.Gossip = &Gossip{Bind: "127.0.0.1:0", KeyringFile: keyring, Join: []string{server.Addr()},
		PollInterval: time.Hour, WakeDelay: 20 * time.Millisecond, Intervals: gossip.TestIntervals()}

	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	agent := func() gossip.Member {
		for _, m := range server.Members() {
			if m.Name == "web-1" {
				return m
			}
		}
		return gossip.Member{}
	}
	waitFor(t, "the agent's member alive with its labels and generation 1", func() bool {
		m := agent()
		return m.Status == gossip.StatusAlive && m.Generation == id1 && reflect.DeepEqual(m.Labels, n.cfg.Labels)
	})

	id2 := srv.publish(webManifest("2", art), "r2-web")
	if err := server.PublishDesiredChanged("db-1"); err != nil { // not for web-1
		t.Fatal(err)
	}
	if err := server.PublishDesiredChanged("web-1"); err != nil {
		t.Fatal(err)
	}
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	waitFor(t, "the agent's member tagged with generation 2", func() bool { return agent().Generation == id2 })
	if c := n.logs.count("desired-changed: polling now"); c != 1 {
		t.Fatalf("%d wake-up polls, want 1", c)
	}

	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's member left", func() bool { return agent().Status == gossip.StatusLeft })
	// The daemon hands gossip a logger without component and node: the
	// member adds its own, and zerolog would repeat the keys.
	logs := n.logs.String()
	if !strings.Contains(logs, `"component":"gossip","node":"web-1"`) {
		t.Fatalf("no gossip line of web-1's member:\n%s", logs)
	}
	if problems, _ := cmdexittest.LogProblems(logs); len(problems) > 0 {
		t.Fatalf("log lines repeat a key:\n%s", strings.Join(problems, "\n"))
	}
}
