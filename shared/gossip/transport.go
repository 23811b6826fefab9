package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"
)

// tailnetPacketSize caps memberlist's UDP payloads on a Net: a tailnet's
// MTU is 1280, minus 40 bytes of IPv6 (20 for IPv4) and 8 of UDP header.
// memberlist's LAN default (1400) would need IP fragmentation.
const tailnetPacketSize = 1232

// maxPacket is the largest datagram read: a UDP payload's limit.
const maxPacket = 65535

// bindRetries is how often a transport with port 0 tries to find a port
// that is free for both the stream and the packet listener.
const bindRetries = 10

// netTransport is a memberlist.NodeAwareTransport over a Net: one packet
// listener and one stream listener on the same "ip:port", datagrams to
// members with WriteTo, streams with DialContext. It shuts down once and
// waits for its two goroutines.
type netTransport struct {
	net  Net
	log  zerolog.Logger
	addr netip.AddrPort // bound address (port resolved if 0 was asked)

	pc net.PacketConn
	ln net.Listener

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	shutdownCh chan struct{}
	stopDials  context.CancelFunc
	dialCtx    context.Context
	once       sync.Once
	wg         sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*netTransport)(nil)

// newNetTransport listens on bind (a concrete IP and a port; port 0 picks
// one free for both) over n and starts receiving.
func newNetTransport(n Net, bind netip.AddrPort, log zerolog.Logger) (*netTransport, error) {
	if !bind.Addr().IsValid() || bind.Addr().IsUnspecified() {
		return nil, fmt.Errorf("gossip: transport needs a concrete IP to bind, not %v", bind.Addr())
	}
	pc, ln, addr, err := listenBoth(n, bind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &netTransport{
		net: n, log: log, addr: addr, pc: pc, ln: ln,
		packetCh:   make(chan *memberlist.Packet),
		streamCh:   make(chan net.Conn),
		shutdownCh: make(chan struct{}),
		dialCtx:    ctx, stopDials: cancel,
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	t.log.Debug().Str("addr", addr.String()).Msg("gossip transport listening")
	return t, nil
}

// listenBoth opens the stream listener first (with port 0 it picks the
// port) and the packet listener on the same port, retrying with port 0 when
// the packet side of the picked port is taken.
func listenBoth(n Net, bind netip.AddrPort) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	tries := 1
	if bind.Port() == 0 {
		tries = bindRetries
	}
	var err error
	for range tries {
		var ln net.Listener
		ln, err = n.Listen("tcp", bind.String())
		if err != nil {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("gossip: listen tcp %s: %w", bind, err)
		}
		port, perr := portOf(ln.Addr())
		if perr != nil {
			ln.Close()
			return nil, nil, netip.AddrPort{}, fmt.Errorf("gossip: listen tcp %s: %w", bind, perr)
		}
		addr := netip.AddrPortFrom(bind.Addr(), port)
		var pc net.PacketConn
		pc, err = n.ListenPacket("udp", addr.String())
		if err == nil {
			return pc, ln, addr, nil
		}
		ln.Close()
		err = fmt.Errorf("gossip: listen udp %s: %w", addr, err)
	}
	return nil, nil, netip.AddrPort{}, err
}

// portOf reads the port from a listener's address; tsnet's listeners
// have their own net.Addr type, so it goes by the string.
func portOf(a net.Addr) (uint16, error) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return uint16(ta.Port), nil
	}
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return 0, fmt.Errorf("listener address %q: %w", a, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("listener address %q: bad port", a)
	}
	return uint16(port), nil
}

func (t *netTransport) stopping() bool {
	select {
	case <-t.shutdownCh:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr advertises the configured address, or the bound one
// for what is not configured.
func (t *netTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	addr := net.IP(t.addr.Addr().AsSlice())
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, 0, fmt.Errorf("gossip: advertise address %q: %w", ip, err)
		}
		addr = net.IP(a.Unmap().AsSlice())
	}
	if port == 0 {
		port = int(t.addr.Port())
	}
	return addr, port, nil
}

// udpAddr parses a member's "ip:port"; members are always addressed by IP.
func udpAddr(addr string) (*net.UDPAddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("gossip: packet address %q: %w", addr, err)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), nil
}

// errShutdown is what the transport's senders return after Shutdown.
var errShutdown = errors.New("gossip: transport shut down")

// WriteTo sends one datagram to addr ("ip:port") and returns when it left.
func (t *netTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.stopping() {
		return time.Time{}, errShutdown
	}
	ua, err := udpAddr(addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.pc.WriteTo(b, ua)
	return time.Now(), err
}

// WriteToAddress is WriteTo; the member's name is not needed.
func (t *netTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh delivers received datagrams, time-stamped on receipt.
func (t *netTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream to addr over the Net; Shutdown aborts dials in
// flight.
func (t *netTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.dialCtx, timeout)
	defer cancel()
	return t.net.DialContext(ctx, "tcp", addr)
}

// DialAddressTimeout is DialTimeout; the member's name is not needed.
func (t *netTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh delivers accepted streams.
func (t *netTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes both listeners, aborts dials and waits for the receiving
// goroutines. It is safe to call more than once (memberlist calls it on
// Shutdown; Start calls it when serf fails to start).
func (t *netTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.shutdownCh)
		t.stopDials()
		// tsnet's node may already be closed: its listeners then say
		// "closed", which is no news.
		if err := t.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.log.Debug().Err(err).Msg("gossip transport: close stream listener")
		}
		if err := t.pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.log.Debug().Err(err).Msg("gossip transport: close packet listener")
		}
		t.wg.Wait()
		t.log.Debug().Msg("gossip transport stopped")
	})
	return nil
}

// readPackets hands every datagram to memberlist until Shutdown or until
// the packet listener is closed under it (the node went away).
func (t *netTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	var delay time.Duration
	for {
		n, from, err := t.pc.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			if t.stopping() {
				return
			}
			// A tsnet node that closes under the transport ends its
			// packet listener with EOF.
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				t.log.Error().Err(err).Msg("gossip transport: packet listener closed; no more gossip received")
				return
			}
			t.log.Warn().Err(err).Msg("gossip transport: read packet")
			delay = backoff(delay)
			if !t.sleep(delay) {
				return
			}
			continue
		}
		delay = 0
		if n < 1 {
			t.log.Warn().Stringer("from", from).Msg("gossip transport: empty packet")
			continue
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: now}
		select {
		case t.packetCh <- p:
		case <-t.shutdownCh:
			return
		}
	}
}

// acceptStreams hands every accepted stream to memberlist until Shutdown
// or until the listener is closed under it.
func (t *netTransport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.stopping() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				t.log.Error().Err(err).Msg("gossip transport: stream listener closed; no more streams accepted")
				return
			}
			t.log.Warn().Err(err).Msg("gossip transport: accept")
			delay = backoff(delay)
			if !t.sleep(delay) {
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streamCh <- c:
		case <-t.shutdownCh:
			c.Close()
			return
		}
	}
}

// backoff doubles d from 5ms up to 1s (memberlist's accept back-off).
func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

// sleep waits d unless Shutdown comes first; it reports whether to go on.
func (t *netTransport) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-t.shutdownCh:
		return false
	}
}
