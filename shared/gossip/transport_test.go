package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// loopbackNet is a Net on the host's loopback sockets that records its
// calls and the listeners it opened. blockDials makes DialContext wait for
// its context (a peer that never answers).
type loopbackNet struct {
	blockDials bool

	mu    sync.Mutex
	calls []string
	pcs   []net.PacketConn
	lns   []net.Listener
}

func (n *loopbackNet) record(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, fmt.Sprintf(format, args...))
}

func (n *loopbackNet) ListenPacket(network, addr string) (net.PacketConn, error) {
	n.record("ListenPacket %s %s", network, addr)
	pc, err := net.ListenPacket(network, addr)
	if err == nil {
		n.mu.Lock()
		n.pcs = append(n.pcs, pc)
		n.mu.Unlock()
	}
	return pc, err
}

func (n *loopbackNet) Listen(network, addr string) (net.Listener, error) {
	n.record("Listen %s %s", network, addr)
	ln, err := net.Listen(network, addr)
	if err == nil {
		n.mu.Lock()
		n.lns = append(n.lns, ln)
		n.mu.Unlock()
	}
	return ln, err
}

func (n *loopbackNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.record("DialContext %s %s", network, addr)
	if n.blockDials {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (n *loopbackNet) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.calls, "\n")
}

// transportLoops maps each goroutine running a transport loop to its
// state, e.g. "readPackets [select]".
func transportLoops() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		for _, loop := range []string{"readPackets", "acceptStreams"} {
			if strings.Contains(g, "gossip.(*netTransport)."+loop+"(") {
				_, state, _ := strings.Cut(head, " [")
				out = append(out, loop+" ["+state)
			}
		}
	}
	return out
}

func transportGoroutines() int { return len(transportLoops()) }

func noTransportGoroutines(t *testing.T) {
	t.Helper()
	eventually(t, 5*time.Second, "transport goroutines gone", func() bool { return transportGoroutines() == 0 })
}

func TestNetTransportPackets(t *testing.T) {
	fn := &loopbackNet{}
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := newNetTransport(fn, netip.AddrPortFrom(lo, 0), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := newNetTransport(fn, netip.AddrPortFrom(lo, 0), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	if a.addr.Port() == 0 || a.addr.Port() == b.addr.Port() {
		t.Fatalf("ports: a %v, b %v", a.addr, b.addr)
	}
	t.Logf("calls:\n%s", fn)

	// Advertise: bound address unless configured.
	tests := []struct {
		name   string
		ip     string
		port   int
		wantIP string
		wantP  int
	}{
		{"bound", "", 0, "127.0.0.1", int(a.addr.Port())},
		{"configured", "100.64.0.9", 7946, "100.64.0.9", 7946},
		{"configured ip, bound port", "100.64.0.9", 0, "100.64.0.9", int(a.addr.Port())},
	}
	for _, tt := range tests {
		ip, port, err := a.FinalAdvertiseAddr(tt.ip, tt.port)
		if err != nil || ip.String() != tt.wantIP || port != tt.wantP || len(ip) != 4 {
			t.Errorf("%s: FinalAdvertiseAddr(%q, %d) = %v (%d bytes), %d, %v; want %s, %d", tt.name, tt.ip, tt.port, ip, len(ip), port, err, tt.wantIP, tt.wantP)
		}
	}
	if _, _, err := a.FinalAdvertiseAddr("not-an-ip", 1); err == nil {
		t.Error("FinalAdvertiseAddr accepted a host name")
	}

	// A datagram arrives with its sender and a receipt time.
	before := time.Now()
	sent, err := a.WriteToAddress([]byte("ping"), memberlist.Address{Addr: b.addr.String(), Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if string(p.Buf) != "ping" || p.From.String() != a.addr.String() {
			t.Errorf("got %q from %v; want ping from %v", p.Buf, p.From, a.addr)
		}
		if p.Timestamp.Before(before) || sent.Before(before) {
			t.Errorf("timestamps: sent %v, received %v, before %v", sent, p.Timestamp, before)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet")
	}
	if _, err := a.WriteTo([]byte("x"), "localhost:1"); err == nil {
		t.Error("WriteTo accepted a host name")
	}

	// A stream reaches the other side.
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: b.addr.String()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-b.StreamCh():
		buf := make([]byte, 5)
		if _, err := s.Read(buf); err != nil || string(buf) != "hello" {
			t.Errorf("stream read %q, %v", buf, err)
		}
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
	}
}

func TestNetTransportShutdown(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	t.Run("aborts a dial in flight", func(t *testing.T) {
		fn := &loopbackNet{blockDials: true}
		tr, err := newNetTransport(fn, netip.AddrPortFrom(lo, 0), testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := tr.DialTimeout("127.0.0.1:1", time.Minute)
			errc <- err
		}()
		eventually(t, 5*time.Second, "dial started", func() bool { return strings.Contains(fn.String(), "DialContext tcp 127.0.0.1:1") })
		if err := tr.Shutdown(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("dial after shutdown: %v; want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("dial not aborted by Shutdown")
		}
		if err := tr.Shutdown(); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
		noTransportGoroutines(t)
	})
	t.Run("listeners closed under it", func(t *testing.T) {
		fn := &loopbackNet{}
		tr, err := newNetTransport(fn, netip.AddrPortFrom(lo, 0), testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		// The node goes away first (its listeners close).
		fn.mu.Lock()
		for _, pc := range fn.pcs {
			pc.Close()
		}
		for _, ln := range fn.lns {
			ln.Close()
		}
		fn.mu.Unlock()
		noTransportGoroutines(t)
		done := make(chan struct{})
		go func() { tr.Shutdown(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown hangs after the listeners closed")
		}
	})
	t.Run("unread packets and streams", func(t *testing.T) {
		// Nobody reads PacketCh or StreamCh (memberlist already gone):
		// the loops blocked on handing over must still end.
		fn := &loopbackNet{}
		tr, err := newNetTransport(fn, netip.AddrPortFrom(lo, 0), testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(tr.addr)); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", tr.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Both loops then wait in the select of their hand-over.
		eventually(t, 5*time.Second, "both loops blocked on hand-over", func() bool {
			l := transportLoops()
			return len(l) == 2 && strings.HasPrefix(l[0], "readPackets [select") && strings.HasPrefix(l[1], "acceptStreams [select") ||
				len(l) == 2 && strings.HasPrefix(l[1], "readPackets [select") && strings.HasPrefix(l[0], "acceptStreams [select")
		})
		if err := tr.Shutdown(); err != nil {
			t.Fatal(err)
		}
		noTransportGoroutines(t)
	})
}

func TestNetTransportBindRejects(t *testing.T) {
	for _, bind := range []netip.AddrPort{{}, netip.MustParseAddrPort("0.0.0.0:0"), netip.MustParseAddrPort("[::]:7946")} {
		if tr, err := newNetTransport(&loopbackNet{}, bind, testLog(t)); err == nil {
			tr.Shutdown()
			t.Errorf("newNetTransport(%v) = nil error", bind)
		}
	}
}

// TestClusterOverNet runs the serf wrapper over a Net (host loopback
// sockets behind the interface): the members form an encrypted cluster, an
// event reaches all, and after Shutdown no transport goroutine is left.
func TestClusterOverNet(t *testing.T) {
	key := newKey(t)
	var ms []member
	var fns []*loopbackNet
	for i := range 3 {
		fn := &loopbackNet{}
		rec := &recorder{}
		a, err := Create(Config{
			NodeName: fmt.Sprintf("node-%d", i), BindAddr: "127.0.0.1:0", Keyring: []string{key}, Net: fn,
			Intervals: TestIntervals(), Log: testLog(t), OnDesiredChanged: rec.on,
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
		fns = append(fns, fn)
	}
	eventually(t, 10*time.Second, "3 alive members", allSee(ms, "node-0=alive node-1=alive node-2=alive"))
	if err := ms[1].PublishDesiredChanged(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "event at every member", func() bool {
		for _, m := range ms {
			if ev, _ := m.rec.get(); len(ev) != 1 {
				return false
			}
		}
		return true
	})
	for i, fn := range fns {
		calls := fn.String()
		if !strings.Contains(calls, "Listen tcp 127.0.0.1:0") || !strings.Contains(calls, "ListenPacket udp 127.0.0.1:") {
			t.Errorf("node-%d did not listen through its Net:\n%s", i, calls)
		}
	}
	if got := ms[0].sconf.MemberlistConfig.UDPBufferSize; got != tailnetPacketSize {
		t.Errorf("UDPBufferSize = %d; want %d", got, tailnetPacketSize)
	}
	for _, m := range ms {
		if err := m.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	noTransportGoroutines(t)
}

// namedNet is a loopbackNet that resolves names from a table.
type namedNet struct {
	loopbackNet
	names map[string]netip.Addr
}

func (n *namedNet) LookupIP(_ context.Context, host string) (netip.Addr, error) {
	n.record("LookupIP %s", host)
	if ip, ok := n.names[host]; ok {
		return ip, nil
	}
	return netip.Addr{}, errors.New("unknown host " + host)
}

func TestJoinResolvesThroughNet(t *testing.T) {
	fn := &namedNet{names: map[string]netip.Addr{"slipway": netip.MustParseAddr("100.64.0.1")}}
	a, err := Create(Config{NodeName: "a", BindAddr: "127.0.0.1:7946", Net: fn})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want string
	}{
		{"ip and port", "100.64.0.2:8000", "100.64.0.2:8000"},
		{"bare ip", "100.64.0.2", "100.64.0.2"},
		{"ipv6", "[fd7a::1]:8000", "[fd7a::1]:8000"},
		{"name and port", "slipway:8000", "100.64.0.1:8000"},
		{"bare name", "slipway", "100.64.0.1:7946"},
	}
	for _, tt := range tests {
		got, err := a.resolve([]string{tt.in})
		if err != nil || len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s: resolve(%q) = %q, %v; want %q", tt.name, tt.in, got, err, tt.want)
		}
	}
	if _, err := a.resolve([]string{"100.64.0.2:1", "nope:1"}); err == nil || !strings.Contains(err.Error(), "nope:1") {
		t.Errorf("resolve of an unknown name: %v", err)
	}
	if calls := fn.String(); calls != "LookupIP slipway\nLookupIP slipway\nLookupIP nope" {
		t.Errorf("calls:\n%s", calls)
	}
	// Without a resolver on the Net, names are left to memberlist.
	b, err := Create(Config{NodeName: "b", BindAddr: "127.0.0.1:7946", Net: &loopbackNet{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.resolve([]string{"slipway:1"}); err != nil || got[0] != "slipway:1" {
		t.Errorf("resolve without a resolver = %q, %v", got, err)
	}
}
