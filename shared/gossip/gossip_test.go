package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// eventually retries cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newKey(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// testLog logs to the test with GOSSIP_DEBUG set. memberlist's suspicion
// timers outlive Shutdown and may log after the test ended, which the
// testing package refuses: the writer goes quiet at Cleanup.
func testLog(t testing.TB) zerolog.Logger {
	if os.Getenv("GOSSIP_DEBUG") == "" {
		return zerolog.Nop()
	}
	w := &quietAfterTest{w: zerolog.NewTestWriter(t)}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return zerolog.New(w)
}

type quietAfterTest struct {
	mu   sync.Mutex
	w    zerolog.TestWriter
	done bool
}

func (q *quietAfterTest) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return len(p), nil
	}
	return q.w.Write(p)
}

// recorder collects desired-changed events with their arrival time.
type recorder struct {
	mu     sync.Mutex
	events []DesiredChanged
	at     []time.Time
}

func (r *recorder) on(e DesiredChanged) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	r.at = append(r.at, time.Now())
}

func (r *recorder) get() ([]DesiredChanged, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]DesiredChanged(nil), r.events...), append([]time.Time(nil), r.at...)
}

type member struct {
	*Peer
	rec *recorder
}

func startCluster(t testing.TB, n int, keyring []string, iv Intervals) []member {
	t.Helper()
	var ms []member
	for i := range n {
		rec := &recorder{}
		a, err := Create(Config{
			NodeName: fmt.Sprintf("node-%d", i), BindAddr: "127.0.0.1:0", Keyring: keyring,
			Labels: map[string]string{"role": "web"}, Generation: "g0",
			Intervals: iv, Log: testLog(t), OnDesiredChanged: rec.on,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Shutdown() })
		if i > 0 {
			if _, err := a.Join(ms[0].Addr()); err != nil {
				t.Fatal(err)
			}
		}
		ms = append(ms, member{a, rec})
	}
	return ms
}

func statuses(a *Peer) string {
	var s []string
	for _, m := range a.Members() {
		s = append(s, m.Name+"="+m.Status)
	}
	return strings.Join(s, " ")
}

func allSee(ms []member, want string) func() bool {
	return func() bool {
		for _, m := range ms {
			if statuses(m.Peer) != want {
				return false
			}
		}
		return true
	}
}

func TestEncryptedClusterMembership(t *testing.T) {
	ms := startCluster(t, 3, []string{newKey(t)}, TestIntervals())
	eventually(t, 5*time.Second, "3 alive members", allSee(ms, "node-0=alive node-1=alive node-2=alive"))
	for _, m := range ms {
		if !m.serf.EncryptionEnabled() {
			t.Fatalf("%s: gossip not encrypted", m.cfg.NodeName)
		}
	}

	// Tags carry labels and the current generation.
	if err := ms[1].SetTags(map[string]string{"role": "db", "zone": "a"}, "g42"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "node-1's tags at node-2", func() bool {
		for _, m := range ms[2].Members() {
			if m.Name == "node-1" {
				return m.Generation == "g42" && m.Labels["role"] == "db" && m.Labels["zone"] == "a" && len(m.Labels) == 2
			}
		}
		return false
	})

	// Stopped without leaving: failed. Leaving: left.
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node-2 failed", allSee(ms[:2], "node-0=alive node-1=alive node-2=failed"))
	if err := ms[1].Leave(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node-1 left", allSee(ms[:1], "node-0=alive node-1=left node-2=failed"))
	t.Logf("node-0 sees: %s", statuses(ms[0].Peer))
}

func TestWrongKeyCannotJoin(t *testing.T) {
	ms := startCluster(t, 1, []string{newKey(t)}, TestIntervals())
	a, err := Create(Config{NodeName: "intruder", BindAddr: "127.0.0.1:0", Keyring: []string{newKey(t)}, Intervals: TestIntervals(), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	if _, err := a.Join(ms[0].Addr()); !errors.Is(err, ErrKeyring) {
		t.Fatalf("join with the wrong key: %v; want ErrKeyring", err)
	}
	if got := statuses(ms[0].Peer); got != "node-0=alive" {
		t.Errorf("members after a refused join: %s", got)
	}
}

func TestCreateRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{BindAddr: "127.0.0.1:0"}},
		{"bad bind", Config{NodeName: "a", BindAddr: "127.0.0.1"}},
		{"bad port", Config{NodeName: "a", BindAddr: "127.0.0.1:x"}},
		{"key not base64", Config{NodeName: "a", BindAddr: "127.0.0.1:0", Keyring: []string{"%%%"}}},
		{"key wrong size", Config{NodeName: "a", BindAddr: "127.0.0.1:0", Keyring: []string{base64.StdEncoding.EncodeToString([]byte("short"))}}},
		{"net, no IP", Config{NodeName: "a", BindAddr: ":7946", Net: &loopbackNet{}}},
		{"net, unspecified IP", Config{NodeName: "a", BindAddr: "0.0.0.0:7946", Net: &loopbackNet{}}},
		{"net, host name", Config{NodeName: "a", BindAddr: "node-a:7946", Net: &loopbackNet{}}},
		{"tags too big", Config{NodeName: "a", BindAddr: "127.0.0.1:0", Labels: map[string]string{"x": strings.Repeat("y", 600)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Create(tt.cfg); err == nil {
				t.Errorf("Create(%+v) = nil error", tt.cfg)
			}
		})
	}
}

func TestConcerns(t *testing.T) {
	tests := []struct {
		name    string
		targets []string
		node    string
		want    bool
	}{
		{"all", nil, "a", true},
		{"named", []string{"a", "b"}, "b", true},
		{"not named", []string{"a", "b"}, "c", false},
	}
	for _, tt := range tests {
		if got := (DesiredChanged{Targets: tt.targets}).Concerns(tt.node); got != tt.want {
			t.Errorf("%s: Concerns(%q) = %v", tt.name, tt.node, got)
		}
	}
}

func TestDesiredChangedReachesMembers(t *testing.T) {
	ms := startCluster(t, 3, []string{newKey(t)}, TestIntervals())
	eventually(t, 5*time.Second, "3 alive members", allSee(ms, "node-0=alive node-1=alive node-2=alive"))
	sent := time.Now()
	if err := ms[0].PublishDesiredChanged("node-1", "node-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "event at every member", func() bool {
		for _, m := range ms {
			if ev, _ := m.rec.get(); len(ev) == 0 {
				return false
			}
		}
		return true
	})
	for _, m := range ms {
		ev, at := m.rec.get()
		if len(ev) != 1 {
			t.Errorf("%s got %d events; want 1", m.cfg.NodeName, len(ev))
		}
		e := ev[0]
		if strings.Join(e.Targets, ",") != "node-1,node-2" {
			t.Errorf("%s: targets %v", m.cfg.NodeName, e.Targets)
		}
		t.Logf("%s: event after %v, concerns me: %v", m.cfg.NodeName, at[0].Sub(sent), e.Concerns(m.cfg.NodeName))
	}
	// Too many names for one event: it names none (everyone checks).
	var many []string
	for i := range 200 {
		many = append(many, fmt.Sprintf("some-rather-long-node-name-%03d", i))
	}
	if err := ms[0].PublishDesiredChanged(many...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "second event at node-2", func() bool { ev, _ := ms[2].rec.get(); return len(ev) == 2 })
	if ev, _ := ms[2].rec.get(); len(ev[1].Targets) != 0 || !ev[1].Concerns("anyone") {
		t.Errorf("oversized target list: got %v; want all nodes", ev[1].Targets)
	}
	// Just under the limit before serf's encoding (name + JSON = 512
	// bytes): the encoded event is over it; it must still go out.
	var edge []string
	for size := 2; ; {
		name := fmt.Sprintf("node-%04d", len(edge))
		if size+len(name)+3 > 512-len(EventDesiredChanged) {
			pad := 512 - len(EventDesiredChanged) - size - 3
			edge = append(edge, strings.Repeat("x", pad))
			break
		}
		edge = append(edge, name)
		size += len(name) + 3
	}
	if b, _ := json.Marshal(edge); len(b)+len(EventDesiredChanged) < 512 {
		edge[len(edge)-1] += strings.Repeat("x", 512-len(b)-len(EventDesiredChanged))
	}
	if b, _ := json.Marshal(edge); len(b)+len(EventDesiredChanged) != 512 {
		t.Fatalf("edge list encodes to %d bytes", len(b))
	}
	if err := ms[0].PublishDesiredChanged(edge...); err != nil {
		t.Fatalf("publish at the size limit: %v", err)
	}
	eventually(t, 5*time.Second, "third event at node-2", func() bool { ev, _ := ms[2].rec.get(); return len(ev) == 3 })
}

func TestJoinErrorIsOneLine(t *testing.T) {
	ms := startCluster(t, 1, nil, TestIntervals())
	_, err := ms[0].Join("127.0.0.1:1") // nobody there
	if err == nil {
		t.Fatal("join of a closed port succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "gossip: join: failed to join 127.0.0.1:1") || errors.Is(err, ErrKeyring) || errors.Unwrap(err) == nil {
		t.Errorf("join error %q (wraps %v)", msg, errors.Unwrap(err))
	}
}
