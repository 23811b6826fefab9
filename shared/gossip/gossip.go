// Package gossip wraps hashicorp/serf for slipway: membership and liveness,
// tags carrying a node's labels and generation, and the "desired-changed"
// event that wakes the agents a publish targets. Gossip is a hint, never an
// authority, and never carries secrets or manifests.
//
// Use: Create → Start → Join; Leave (graceful) or Shutdown.
package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
)

// EventDesiredChanged is the user event sent when a desired generation is
// published; its payload is a JSON list of target node names ([] = all).
const EventDesiredChanged = "desired-changed"

// Tag keys in serf's (512-byte) tag map.
const (
	tagGeneration  = "gen"
	tagLabelPrefix = "l:"
)

// ErrNotStarted is returned by operations that need Start first.
var ErrNotStarted = errors.New("gossip: not started")

// ErrKeyring is returned by Join when the members it contacted could not
// read this member's gossip or it theirs: the keyrings (or whether there is
// one) differ from the cluster's.
var ErrKeyring = errors.New("gossip: keyring does not match the cluster's")

// Member statuses.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusFailed  = "failed"
	StatusLeaving = "leaving"
	StatusLeft    = "left"
)

// Intervals are gossip's timers; zero fields keep serf's LAN defaults.
// Tests shrink them (TestIntervals).
type Intervals struct {
	Gossip           time.Duration // memberlist gossip (default 200ms)
	Probe            time.Duration // failure-detector probe (default 1s)
	ProbeTimeout     time.Duration // probe ack wait (default 500ms)
	SuspicionMult    int           // suspicion timeout multiplier (default 4)
	TCPTimeout       time.Duration // push/pull and fallback probes (default 10s)
	Reap             time.Duration // reaping failed/left members (default 15s)
	Reconnect        time.Duration // retrying failed members (default 30s)
	ReconnectTimeout time.Duration // forget failed members after (default 24h)
	Tombstone        time.Duration // forget left members after (default 24h)
}

// TestIntervals are aggressive timers for loopback tests.
func TestIntervals() Intervals {
	return Intervals{
		Gossip: 5 * time.Millisecond, Probe: 50 * time.Millisecond, ProbeTimeout: 25 * time.Millisecond,
		SuspicionMult: 1, TCPTimeout: 200 * time.Millisecond,
		Reap: time.Second, Reconnect: 100 * time.Millisecond, ReconnectTimeout: time.Minute, Tombstone: time.Minute,
	}
}

// Net is the network gossip runs over when it is not the host's: a tsnet
// node (*mesh.Node) satisfies it. ListenPacket and Listen get a concrete
// "ip:port"; DialContext gets a member's "ip:port".
type Net interface {
	ListenPacket(network, addr string) (net.PacketConn, error)
	Listen(network, addr string) (net.Listener, error)
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// resolver is what a Net may also do (*mesh.Node does): resolve a tailnet
// host name without the host's DNS, so Join takes "slipway:7946".
type resolver interface {
	LookupIP(ctx context.Context, host string) (netip.Addr, error)
}

// Config configures one member.
type Config struct {
	NodeName      string
	BindAddr      string            // "ip:port" to listen on (UDP and TCP); port 0 picks one
	AdvertiseAddr string            // "ip:port" others should use; "" = BindAddr
	Keyring       []string          // base64 AES keys (16, 24 or 32 bytes); the first encrypts; empty = no encryption
	Labels        map[string]string // initial labels
	Generation    string            // initial current generation
	Intervals     Intervals
	Log           zerolog.Logger

	// Net, when set, carries gossip over it (a tsnet node: *mesh.Node,
	// whose userspace network has no kernel interface) instead of
	// memberlist's own UDP and TCP sockets; BindAddr must then be the
	// node's tailnet IPv4 and a port. Its transport listens for datagrams
	// and streams on that address, sends datagrams of at most 1232 bytes
	// (the tailnet MTU) and dials streams through the node, time-stamps
	// every packet on receipt, and on Shutdown closes both listeners,
	// aborts dials and waits for its goroutines. Members are addressed by
	// tailnet IP ("ip:port"); Join also takes a tailnet name
	// ("slipway:7946"), resolved from the node's network map.
	Net Net

	// OnDesiredChanged is called (on one goroutine, in order) for every
	// desired-changed event, including ones this member sent.
	OnDesiredChanged func(DesiredChanged)
	// OnMember is called for every membership change (join, leave,
	// failed, update, reap).
	OnMember func(Member)
}

// DesiredChanged is a received desired-changed event.
type DesiredChanged struct {
	Targets []string // node names; empty = every node
	LTime   uint64   // serf Lamport time of the event
}

// Concerns reports whether the event targets node.
func (e DesiredChanged) Concerns(node string) bool {
	if len(e.Targets) == 0 {
		return true
	}
	for _, t := range e.Targets {
		if t == node {
			return true
		}
	}
	return false
}

// Member is one cluster member as this member sees it.
type Member struct {
	Name       string
	Addr       string // "ip:port"
	Status     string // StatusAlive, StatusSuspect, StatusFailed, StatusLeaving, StatusLeft
	Labels     map[string]string
	Generation string
}

// Peer is this process in the serf cluster: its own member, which
// joins, tags itself, sends and receives events (Members lists the others).
type Peer struct {
	cfg   Config
	sconf *serf.Config
	log   zerolog.Logger
	bind  netip.AddrPort // with cfg.Net: where the transport listens

	mu      sync.Mutex
	serf    *serf.Serf
	events  chan serf.Event
	done    chan struct{}
	labels  map[string]string
	gen     string
	stopped bool
}

// Create validates cfg and prepares a member; Start brings it up.
func Create(cfg Config) (*Peer, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("gossip: node name is required")
	}
	host, port, err := splitAddr(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind address: %w", err)
	}
	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = cfg.NodeName
	ml := sc.MemberlistConfig
	ml.BindAddr, ml.BindPort = host, port
	ml.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		ahost, aport, err := splitAddr(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("gossip: advertise address: %w", err)
		}
		ml.AdvertiseAddr, ml.AdvertisePort = ahost, aport
	}
	if len(cfg.Keyring) > 0 {
		kr, err := keyring(cfg.Keyring)
		if err != nil {
			return nil, err
		}
		ml.Keyring = kr
		ml.GossipVerifyIncoming, ml.GossipVerifyOutgoing = true, true
	}
	var bind netip.AddrPort
	if cfg.Net != nil {
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("gossip: bind address %q: with Net it must be the node's tailnet IP and a port", cfg.BindAddr)
		}
		bind = netip.AddrPortFrom(ip.Unmap(), uint16(port))
		ml.UDPBufferSize = tailnetPacketSize
	}
	setIntervals(sc, cfg.Intervals)

	lg := cfg.Log.With().Str("component", "gossip").Str("node", cfg.NodeName).Logger()
	std := log.New(serfLog{lg}, "", 0)
	sc.Logger, ml.Logger = std, std
	sc.CoalescePeriod = 0 // membership events as they happen

	p := &Peer{cfg: cfg, sconf: sc, log: lg, bind: bind, labels: cloneMap(cfg.Labels), gen: cfg.Generation}
	sc.Tags = p.tags()
	if err := checkTags(sc.Tags); err != nil {
		return nil, err
	}
	return p, nil
}

// keyring decodes the base64 keys; the first one encrypts.
func keyring(keyring []string) (*memberlist.Keyring, error) {
	keys := make([][]byte, len(keyring))
	for i, k := range keyring {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring key %d: not base64: %w", i+1, err)
		}
		keys[i] = b
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	return kr, nil
}

// setIntervals sets the timers iv gives in sc and its memberlist config.
func setIntervals(sc *serf.Config, iv Intervals) {
	ml := sc.MemberlistConfig
	setDur(&ml.GossipInterval, iv.Gossip)
	setDur(&ml.ProbeInterval, iv.Probe)
	setDur(&ml.ProbeTimeout, iv.ProbeTimeout)
	setDur(&ml.TCPTimeout, iv.TCPTimeout)
	if iv.SuspicionMult > 0 {
		ml.SuspicionMult = iv.SuspicionMult
	}
	setDur(&sc.ReapInterval, iv.Reap)
	setDur(&sc.ReconnectInterval, iv.Reconnect)
	setDur(&sc.ReconnectTimeout, iv.ReconnectTimeout)
	setDur(&sc.TombstoneTimeout, iv.Tombstone)
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// Start creates the serf member and starts delivering events.
func (p *Peer) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serf != nil {
		return errors.New("gossip: already started")
	}
	var tr *netTransport
	if p.cfg.Net != nil {
		var err error
		if tr, err = newNetTransport(p.cfg.Net, p.bind, p.log); err != nil {
			return fmt.Errorf("gossip: start %s: %w", p.cfg.NodeName, err)
		}
		p.sconf.MemberlistConfig.Transport = tr
	}
	p.events = make(chan serf.Event, 256)
	p.sconf.EventCh = p.events
	s, err := serf.Create(p.sconf)
	if err != nil {
		if tr != nil {
			tr.Shutdown()
		}
		return fmt.Errorf("gossip: start %s: %w", p.cfg.NodeName, err)
	}
	p.serf = s
	p.done = make(chan struct{})
	go p.loop(s)
	return nil
}

func (p *Peer) loop(s *serf.Serf) {
	defer close(p.done)
	for {
		select {
		case <-s.ShutdownCh():
			return
		case ev := <-p.events:
			p.handle(ev)
		}
	}
}

func (p *Peer) handle(ev serf.Event) {
	switch e := ev.(type) {
	case serf.UserEvent:
		if e.Name != EventDesiredChanged {
			p.log.Debug().Str("event", e.Name).Msg("ignored user event")
			return
		}
		var targets []string
		if len(e.Payload) > 0 {
			if err := json.Unmarshal(e.Payload, &targets); err != nil {
				p.log.Warn().Err(err).Msg("bad desired-changed payload; treating as all nodes")
				targets = nil
			}
		}
		if p.cfg.OnDesiredChanged != nil {
			p.cfg.OnDesiredChanged(DesiredChanged{Targets: targets, LTime: uint64(e.LTime)})
		}
	case serf.MemberEvent:
		for _, m := range e.Members {
			p.log.Debug().Str("event", e.Type.String()).Str("member", m.Name).Msg("member")
			if p.cfg.OnMember != nil {
				p.cfg.OnMember(p.member(m, ""))
			}
		}
	}
}

func (p *Peer) started() (*serf.Serf, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serf == nil {
		return nil, ErrNotStarted
	}
	return p.serf, nil
}

// Join contacts existing members ("ip:port"; "name:port" too, resolved
// by the Net if it can, else by the host's DNS) and returns how many
// answered.
func (p *Peer) Join(addrs ...string) (int, error) {
	s, err := p.started()
	if err != nil {
		return 0, err
	}
	if addrs, err = p.resolve(addrs); err != nil {
		return 0, err
	}
	n, err := s.Join(addrs, true)
	if err != nil {
		msg := joinErrors(err)
		if strings.Contains(msg, "no installed keys could decrypt") || strings.Contains(msg, "encryption is configured but") {
			return n, fmt.Errorf("%w: join: %s", ErrKeyring, msg)
		}
		return n, &joinError{msg: msg, err: err}
	}
	return n, nil
}

// joinError prints memberlist's join errors on one line and unwraps to
// them.
type joinError struct {
	msg string
	err error
}

func (e *joinError) Error() string { return "gossip: join: " + e.msg }
func (e *joinError) Unwrap() error { return e.err }

// resolve turns "name:port" into "ip:port" with the Net's resolver (a tsnet
// node knows its tailnet's names; the host may not). Without one, names
// are left to memberlist, which asks the host's DNS.
func (p *Peer) resolve(addrs []string) ([]string, error) {
	r, ok := p.cfg.Net.(resolver)
	if !ok {
		return addrs, nil
	}
	out := make([]string, len(addrs))
	for i, addr := range addrs {
		out[i] = addr
		if _, err := netip.ParseAddr(addr); err == nil {
			continue // a bare IP: memberlist adds the port
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil { // a bare name: the default port, as memberlist does
			host, port = addr, strconv.Itoa(p.sconf.MemberlistConfig.BindPort)
		}
		if _, err := netip.ParseAddr(host); err == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.sconf.MemberlistConfig.TCPTimeout)
		ip, err := r.LookupIP(ctx, host)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("gossip: join %s: %w", addr, err)
		}
		out[i] = net.JoinHostPort(ip.String(), port)
	}
	return out, nil
}

// joinErrors puts memberlist's multi-line list of join errors ("1 error
// occurred:\n\t* failed to join …") on one line.
func joinErrors(err error) string {
	me, ok := err.(interface{ WrappedErrors() []error })
	if !ok {
		return err.Error()
	}
	var msgs []string
	for _, e := range me.WrappedErrors() {
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

// Leave tells the cluster this member is leaving, then shuts it down.
func (p *Peer) Leave() error {
	s, err := p.started()
	if err != nil {
		return err
	}
	lerr := s.Leave()
	if err := p.Shutdown(); lerr == nil {
		lerr = err
	}
	if lerr != nil {
		return fmt.Errorf("gossip: leave: %w", lerr)
	}
	return nil
}

// Shutdown stops the member without telling anyone: the others will see it
// fail.
func (p *Peer) Shutdown() error {
	s, err := p.started()
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	p.mu.Unlock()
	err = s.Shutdown()
	<-p.done
	return err
}

// Addr is the address other members join ("ip:port").
func (p *Peer) Addr() string {
	s, err := p.started()
	if err != nil {
		return ""
	}
	m := s.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// Members lists the members this one knows, sorted by name.
func (p *Peer) Members() []Member {
	s, err := p.started()
	if err != nil {
		return nil
	}
	suspect := map[string]bool{}
	for _, n := range s.Memberlist().Members() {
		if n.State == memberlist.StateSuspect {
			suspect[n.Name] = true
		}
	}
	var out []Member
	for _, m := range s.Members() {
		st := ""
		if suspect[m.Name] && m.Status == serf.StatusAlive {
			st = StatusSuspect
		}
		out = append(out, p.member(m, st))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (p *Peer) member(m serf.Member, status string) Member {
	if status == "" {
		status = m.Status.String() // alive, leaving, left, failed
	}
	out := Member{Name: m.Name, Addr: net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))), Status: status, Generation: m.Tags[tagGeneration]}
	for k, v := range m.Tags {
		if l, ok := strings.CutPrefix(k, tagLabelPrefix); ok {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[l] = v
		}
	}
	return out
}

// SetTags replaces this member's labels and current generation and gossips
// them.
func (p *Peer) SetTags(labels map[string]string, generation string) error {
	s, err := p.started()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.labels, p.gen = cloneMap(labels), generation
	tags := p.tags()
	p.mu.Unlock()
	if err := checkTags(tags); err != nil {
		return err
	}
	if err := s.SetTags(tags); err != nil {
		// serf applied the tags and queued their broadcast; it only
		// stopped waiting for the queue to drain (BroadcastTimeout, 5 s),
		// which many members updating at once (a fleet-wide release)
		// often outlast. Gossip still spreads them.
		if strings.Contains(err.Error(), "timeout waiting for update broadcast") {
			p.log.Debug().Err(err).Msg("tags applied; their broadcast is still queued")
			return nil
		}
		return fmt.Errorf("gossip: set tags: %w", err)
	}
	return nil
}

func (p *Peer) tags() map[string]string {
	t := map[string]string{}
	if p.gen != "" {
		t[tagGeneration] = p.gen
	}
	for k, v := range p.labels {
		t[tagLabelPrefix+k] = v
	}
	return t
}

// serf encodes tags with msgpack and refuses more than 512 bytes; check
// early with a conservative estimate.
func checkTags(t map[string]string) error {
	n := 0
	for k, v := range t {
		n += len(k) + len(v) + 10
	}
	if n > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: labels and generation too large for serf tags (%d > %d bytes)", n, memberlist.MetaMaxSize)
	}
	return nil
}

// PublishDesiredChanged sends the desired-changed event naming targets
// (none = every node). If the names do not fit one event, it names none and
// every agent checks: a spurious wake-up costs one poll. The event only
// makes an agent poll the server now instead of at its next interval.
func (p *Peer) PublishDesiredChanged(targets ...string) error {
	s, err := p.started()
	if err != nil {
		return err
	}
	payload := []byte("[]")
	if len(targets) > 0 {
		b, err := json.Marshal(targets)
		if err != nil {
			return err
		}
		// serf checks name+payload and then the encoded message against
		// the limit; the encoding adds the Lamport time and field names.
		if len(b)+len(EventDesiredChanged)+userEventOverhead <= p.sconf.UserEventSizeLimit {
			payload = b
		}
	}
	err = s.UserEvent(EventDesiredChanged, payload, false)
	if err != nil && string(payload) != "[]" && strings.Contains(err.Error(), "exceeds") {
		err = s.UserEvent(EventDesiredChanged, []byte("[]"), false) // every agent checks
	}
	if err != nil {
		return fmt.Errorf("gossip: desired-changed: %w", err)
	}
	return nil
}

// userEventOverhead bounds what serf's encoding adds to a user event's name
// and payload (message type, LTime, field names).
const userEventOverhead = 64

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// serfLog routes serf's and memberlist's log lines to zerolog: "[ERR]" and
// "[WARN]" keep their level, the rest is debug.
type serfLog struct{ log zerolog.Logger }

func (l serfLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	ev := l.log.Debug()
	switch {
	case strings.Contains(msg, "[ERR]"):
		ev = l.log.Error()
	case strings.Contains(msg, "[WARN]"):
		ev = l.log.Warn()
	}
	ev.Msg(msg)
	return len(p), nil
}
