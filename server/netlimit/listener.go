// Package netlimit bounds what network peers can take from slipway-server:
// a listener wrapper that caps concurrent connections in total and per
// client address, and per-address token buckets for rate limits. It never
// reads or writes a connection's bytes: refusing with an HTTP answer is
// the caller's job (see Refusal).
package netlimit

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Caps configures a Limiter.
type Caps struct {
	// Total is the most connections served at once over every listener
	// wrapped by the Limiter (< 1: no cap).
	Total int
	// PerAddress is the most connections served at once from one client
	// IP address (< 1: no cap). Unix-socket peers and addresses in Exempt
	// count only towards Total.
	PerAddress int
	Exempt     []netip.Prefix
	// Refusing is how many refused connections may wait at once for their
	// answer (Refusal); beyond it a connection over a cap is closed at
	// once. < 1: every connection over a cap is closed at once.
	Refusing int
}

// Limiter counts connections over the listeners it wraps.
type Limiter struct {
	caps Caps
	// OnDrop, when set, is called for each connection closed at once
	// because it is over a cap and Refusing is full (for a log line).
	OnDrop func(addr string, reason Reason)

	mu       sync.Mutex
	total    int
	refusing int
	per      map[netip.Addr]int
}

// New returns a Limiter with caps.
func New(caps Caps) *Limiter {
	return &Limiter{caps: caps, per: map[netip.Addr]int{}}
}

// Reason says which cap refused a connection.
type Reason int

// Reasons.
const (
	// OverTotal: the server serves Caps.Total connections already.
	OverTotal Reason = iota + 1
	// OverPerAddress: the client's address has Caps.PerAddress already.
	OverPerAddress
)

func (r Reason) String() string {
	switch r {
	case OverTotal:
		return "too many connections to the server"
	case OverPerAddress:
		return "too many connections from this address"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Counts reports the connections served now: in total and from addr.
func (l *Limiter) Counts(addr netip.Addr) (total, fromAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.per[addr.Unmap()]
}

// Wrap returns ln with its connections counted by l.
func (l *Limiter) Wrap(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

// Accept returns the next connection: admitted, or over a cap and marked
// (Refusal) for the server to answer and close, while Refusing allows.
// Other connections over a cap are closed here and not returned.
func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if cc := ln.l.admit(c); cc != nil {
			return cc, nil
		}
	}
}

// peer is the address a connection counts under; ok is false when it
// counts only towards the total (unix sockets, exempt addresses).
func (l *Limiter) peer(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	a := ap.Addr().Unmap()
	for _, p := range l.caps.Exempt {
		if p.Contains(a) {
			return a, false
		}
	}
	return a, true
}

func (l *Limiter) admit(c net.Conn) net.Conn {
	addr, perAddr := l.peer(c)
	l.mu.Lock()
	var reason Reason
	switch {
	case l.caps.Total > 0 && l.total >= l.caps.Total:
		reason = OverTotal
	case perAddr && l.caps.PerAddress > 0 && l.per[addr] >= l.caps.PerAddress:
		reason = OverPerAddress
	}
	if reason == 0 {
		l.total++
		if perAddr {
			l.per[addr]++
		}
		l.mu.Unlock()
		return &conn{Conn: c, release: func() { l.release(addr, perAddr) }}
	}
	if l.refusing < l.caps.Refusing {
		l.refusing++
		l.mu.Unlock()
		return &conn{Conn: c, refused: reason, release: l.releaseRefused}
	}
	l.mu.Unlock()
	if l.OnDrop != nil {
		l.OnDrop(c.RemoteAddr().String(), reason)
	}
	_ = c.Close()
	return nil
}

func (l *Limiter) release(addr netip.Addr, perAddr bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if perAddr {
		if l.per[addr] <= 1 {
			delete(l.per, addr)
		} else {
			l.per[addr]--
		}
	}
}

func (l *Limiter) releaseRefused() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refusing--
}

// conn is a counted connection; Close releases its count once.
type conn struct {
	net.Conn
	refused Reason
	release func()
	closed  atomic.Bool
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}

// Refusal reports whether c (or the connection under it, for a TLS
// connection) is over a cap, and which. The server should answer its
// first request with an error naming the reason (429 for OverPerAddress,
// 503 for OverTotal, with Retry-After) and close it.
func Refusal(c net.Conn) (Reason, bool) {
	for c != nil {
		if cc, ok := c.(*conn); ok {
			return cc.refused, cc.refused != 0
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return 0, false
		}
		c = u.NetConn()
	}
	return 0, false
}
