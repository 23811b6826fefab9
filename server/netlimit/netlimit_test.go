package netlimit

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// fakeListener hands out the conns pushed to it.
type fakeListener struct{ conns chan net.Conn }

func (f *fakeListener) Accept() (net.Conn, error) {
	c, ok := <-f.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (f *fakeListener) Close() error   { return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7420} }

// fakeConn is a connection from remote; it records Close.
type fakeConn struct {
	net.Conn
	remote net.Addr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

func tcp(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// accept pushes a conn from remote through ln and returns what Accept
// gave, or nil when the conn was dropped (Accept would block).
func accept(t *testing.T, f *fakeListener, ln net.Listener, remote net.Addr) (net.Conn, *fakeConn) {
	t.Helper()
	fc := &fakeConn{remote: remote}
	f.conns <- fc
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	select {
	case c := <-got:
		return c, fc
	case <-time.After(200 * time.Millisecond):
		// Dropped: feed the waiting Accept a conn that ends it.
		close(f.conns)
		<-got
		f.conns = make(chan net.Conn, 1)
		return nil, fc
	}
}

func TestCaps(t *testing.T) {
	a1, a2 := "192.0.2.1:1000", "192.0.2.2:1000"
	tests := []struct {
		name    string
		caps    Caps
		remotes []string
		// want per conn: 0 admitted, a Reason (refused and returned), -1 dropped
		want []Reason
	}{
		{"per address: the cap's +1 is refused, another address is not",
			Caps{PerAddress: 2, Refusing: 4}, []string{a1, a1, a1, a2}, []Reason{0, 0, OverPerAddress, 0}},
		{"total", Caps{Total: 2, PerAddress: 10, Refusing: 4}, []string{a1, a2, a2}, []Reason{0, 0, OverTotal}},
		{"refusing full: dropped", Caps{PerAddress: 1, Refusing: 1}, []string{a1, a1, a1}, []Reason{0, OverPerAddress, -1}},
		{"exempt address counts only towards the total", Caps{Total: 3, PerAddress: 1, Refusing: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			[]string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}, []Reason{0, 0, 0, OverTotal}},
		{"IPv4-mapped IPv6 is the IPv4 address", Caps{PerAddress: 1, Refusing: 1}, []string{"[::ffff:192.0.2.1]:1", a1}, []Reason{0, OverPerAddress}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeListener{conns: make(chan net.Conn, 1)}
			l := New(tt.caps)
			var dropped []string
			l.OnDrop = func(addr string, r Reason) { dropped = append(dropped, addr+" "+r.String()) }
			ln := l.Wrap(f)
			for i, remote := range tt.remotes {
				c, fc := accept(t, f, ln, tcp(remote))
				switch want := tt.want[i]; {
				case want < 0:
					if c != nil || !fc.closed || len(dropped) != 1 {
						t.Fatalf("conn %d from %s: got %v (closed %v, drops %q), want it dropped and closed", i, remote, c, fc.closed, dropped)
					}
				case c == nil:
					t.Fatalf("conn %d from %s: dropped, want returned with refusal %v", i, remote, want)
				default:
					if r, _ := Refusal(c); r != want {
						t.Fatalf("conn %d from %s: refusal %v, want %v", i, remote, r, want)
					}
				}
			}
		})
	}
}

func TestCloseReleases(t *testing.T) {
	f := &fakeListener{conns: make(chan net.Conn, 1)}
	l := New(Caps{Total: 1, PerAddress: 1, Refusing: 1})
	ln := l.Wrap(f)
	c, _ := accept(t, f, ln, tcp("192.0.2.1:1"))
	c2, _ := accept(t, f, ln, tcp("192.0.2.1:2"))
	if r, ok := Refusal(c2); !ok || r != OverTotal {
		t.Fatalf("second conn: refusal %v %v, want OverTotal", r, ok)
	}
	_ = c.Close()
	_ = c.Close() // twice: released once
	_ = c2.Close()
	if total, from := l.Counts(netip.MustParseAddr("192.0.2.1")); total != 0 || from != 0 {
		t.Fatalf("after close: total %d, from address %d; want 0 0", total, from)
	}
	c3, _ := accept(t, f, ln, tcp("192.0.2.1:3"))
	if _, refused := Refusal(c3); refused {
		t.Fatal("a conn after the others closed was refused")
	}
}

func TestUnixPeersCountOnlyTowardsTotal(t *testing.T) {
	f := &fakeListener{conns: make(chan net.Conn, 1)}
	l := New(Caps{Total: 2, PerAddress: 1, Refusing: 1})
	ln := l.Wrap(f)
	for i, want := range []bool{false, false, true} {
		c, _ := accept(t, f, ln, &net.UnixAddr{Name: "@", Net: "unix"})
		if _, refused := Refusal(c); refused != want {
			t.Fatalf("unix conn %d: refused %v, want %v", i, refused, want)
		}
	}
}

func TestBuckets(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBuckets(Rate{Rate: 2, Burst: 3, MaxAddresses: 2}, func() time.Time { return now })
	for i := range 3 {
		if _, empty := b.Wait("a"); empty {
			t.Fatalf("spend %d: empty within the burst", i)
		}
		b.Spend("a")
	}
	wait, empty := b.Wait("a")
	if !empty || wait != 500*time.Millisecond {
		t.Fatalf("after the burst: wait %v empty %v, want 500ms true", wait, empty)
	}
	if _, empty := b.Wait("b"); empty {
		t.Fatal("another address is limited by a's spending")
	}
	now = now.Add(250 * time.Millisecond)
	if wait, empty := b.Wait("a"); !empty || wait != 250*time.Millisecond {
		t.Fatalf("half refilled: wait %v empty %v, want 250ms true", wait, empty)
	}
	now = now.Add(250 * time.Millisecond)
	if _, empty := b.Wait("a"); empty {
		t.Fatal("refilled one token: still empty")
	}
	// Two addresses tracked (a, b); b is full, so a third takes its place.
	if _, empty := b.Wait("c"); empty {
		t.Fatal("third address refused though b's bucket is full")
	}
	if n := b.Len(); n != 2 {
		t.Fatalf("tracked %d addresses, want 2", n)
	}
	// a and c are tracked, a is not full: a fourth address finds no room.
	b.Spend("c")
	if _, empty := b.Wait("d"); !empty {
		t.Fatal("fourth address admitted though no bucket is full")
	}
}

func TestAddressKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:80":          "192.0.2.1",
		"[::ffff:192.0.2.1]:80": "192.0.2.1",
		"[2001:db8::1]:443":     "2001:db8::1",
		"@":                     "unix",
		"":                      "unix",
	} {
		if got := AddressKey(in); got != want {
			t.Errorf("AddressKey(%q) = %q, want %q", in, got, want)
		}
	}
}
