package daemon

// Gossip ([gossip]): the server as a serf member (shared/gossip).
//
//   - Liveness: the status of every member whose name is an enrolled node
//     (agents' members are named like their nodes) goes into the registry
//     (registry.SetLiveness), which stores it only when it changes. The
//     member list is read whenever a membership event arrives and every
//     probe interval (suspect has no event of its own), and compared with
//     what was last recorded: a steady cluster costs no store access at
//     all. Members that are not nodes are ignored (logged once, at debug).
//   - Wake-ups: registry.Config.OnDesired hands the nodes of every
//     committed change of desired generations to wakeups, which sends one
//     desired-changed event naming them. A failed send is logged; the
//     agents then find the change at their next poll.
//   - Shutdown: the member stops recording, then leaves the cluster
//     gracefully, so agents see the server "left", not "failed".
//   - With [tailscale] on, gossip runs over the server's tailnet node
//     (gossip.Config.Net) on its tailnet IPv4 and gossip.bind's port.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/gossip"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// publisher sends desired-changed events; *gossip.Peer is one.
type publisher interface {
	PublishDesiredChanged(targets ...string) error
}

// wakeups publishes desired-changed events once a gossip member is set;
// before (and after shutdown) it drops them: agents poll anyway.
type wakeups struct {
	mu  sync.Mutex
	pub publisher
	log zerolog.Logger
}

// set starts (p) or stops (nil) publishing.
func (w *wakeups) set(p publisher) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pub = p
}

// onDesired is registry.Config.OnDesired. An event naming the nodes that
// serf refuses (too large once encoded) is sent naming none, which wakes
// every agent: a spurious wake-up costs one poll.
func (w *wakeups) onDesired(nodes []string) {
	w.mu.Lock()
	p := w.pub
	w.mu.Unlock()
	if p == nil {
		return
	}
	err := p.PublishDesiredChanged(nodes...)
	if err != nil && len(nodes) > 0 {
		w.log.Debug().Err(err).Int("nodes", len(nodes)).Msg("desired-changed naming the nodes not sent; waking every agent instead")
		err = p.PublishDesiredChanged()
	}
	if err != nil {
		w.log.Warn().Err(err).Strs("nodes", nodes).Msg("desired-changed event not sent; the agents see the change at their next poll")
		return
	}
	w.log.Debug().Strs("nodes", nodes).Msg("desired-changed event sent")
}

// livenessSink is the registry's part the gossip member feeds;
// *registry.Registry has it.
type livenessSink interface {
	SetLiveness(ctx context.Context, name, status string, at time.Time) (bool, error)
}

// gossipMember is the server's serf member and what it feeds.
type gossipMember struct {
	agent *gossip.Peer
	reg   livenessSink
	self  string
	poll  time.Duration
	log   zerolog.Logger

	kick chan struct{} // a membership event: read the members now
	stop chan struct{}
	done chan struct{}

	// Owned by the loop goroutine.
	recorded map[string]string // member → liveness the registry holds
	ignored  map[string]bool   // members that are not nodes (logged once)
}

// gossipOptions are the test seams of startGossip.
type gossipOptions struct {
	intervals gossip.Intervals
	node      *mesh.Node // [tailscale]: gossip over this tailnet node
}

// gossipOnHost makes a member bound to every address advertise the host
// tailscaled's IPv4 (ip; invalid: unchanged) unless gossip.advertise says
// otherwise: agents reach it on the tailnet.
func gossipOnHost(c config.Gossip, ip netip.Addr) config.Gossip {
	host, port, err := net.SplitHostPort(c.Bind)
	if err != nil || !ip.IsValid() || c.Advertise != "" || (host != "" && !net.ParseIP(host).IsUnspecified()) {
		return c
	}
	c.Advertise = net.JoinHostPort(ip.String(), port)
	return c
}

// startGossip starts the member, begins recording liveness and joins
// gossip.join (retried in the background until one answers).
func startGossip(c config.Gossip, reg livenessSink, o gossipOptions, log zerolog.Logger) (*gossipMember, error) {
	var keys []string
	if !c.InsecureNoEncryption {
		var err error
		if keys, err = gossip.ReadKeyring(c.KeyringFile); err != nil {
			return nil, err
		}
	} else {
		log.Warn().Msg("gossip runs unencrypted (gossip.insecure_no_encryption): anyone who reaches it can join the cluster and read or send its messages")
	}
	bind := c.Bind
	var gnet gossip.Net
	if o.node != nil {
		ip, err := o.node.IPv4()
		if err != nil {
			return nil, fmt.Errorf("gossip over the tailnet: %w", err)
		}
		_, port, err := net.SplitHostPort(c.Bind)
		if err != nil {
			return nil, fmt.Errorf("gossip.bind: %w", err)
		}
		p, _ := strconv.Atoi(port) // validated by config
		bind = netip.AddrPortFrom(ip, uint16(p)).String()
		gnet = o.node
	}
	g := &gossipMember{
		reg: reg, self: c.NodeName, log: log.With().Str("component", "gossip").Logger(),
		poll: o.intervals.Probe, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		recorded: map[string]string{}, ignored: map[string]bool{},
	}
	if g.poll <= 0 {
		g.poll = time.Second // memberlist's LAN probe interval
	}
	a, err := gossip.Create(gossip.Config{
		NodeName: c.NodeName, BindAddr: bind, AdvertiseAddr: c.Advertise, Keyring: keys,
		Intervals: o.intervals, Log: log, Net: gnet,
		OnMember: func(gossip.Member) {
			select {
			case g.kick <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err := a.Start(); err != nil {
		return nil, err
	}
	g.agent = a
	go g.loop()
	if len(c.Join) > 0 {
		go g.join(c.Join)
	}
	g.log.Info().Str("bind", bind).Str("addr", a.Addr()).Str("node_name", c.NodeName).Bool("encrypted", len(keys) > 0).Bool("tailnet", gnet != nil).Msg("gossip member started")
	return g, nil
}

// join joins addrs, retrying with backoff until one answers or the member
// stops. A keyring mismatch is retried too (the other side may be
// rotating keys) but logged as an error.
func (g *gossipMember) join(addrs []string) {
	wait := time.Second
	for {
		n, err := g.agent.Join(addrs...)
		if err == nil {
			g.log.Info().Int("joined", n).Strs("join", addrs).Msg("joined the gossip cluster")
			return
		}
		ev := g.log.Warn()
		if errors.Is(err, gossip.ErrKeyring) {
			ev = g.log.Error()
		}
		ev.Err(err).Strs("join", addrs).Dur("retry_in", wait).Msg("gossip join failed")
		select {
		case <-g.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func (g *gossipMember) loop() {
	defer close(g.done)
	t := time.NewTicker(g.poll)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-g.kick:
		case <-t.C:
		}
		g.record()
	}
}

// liveness maps a member status to a node liveness; "" for leaving (a
// moment before left: keep what is recorded).
func liveness(status string) string {
	switch status {
	case gossip.StatusAlive:
		return api.LivenessAlive
	case gossip.StatusSuspect:
		return api.LivenessSuspect
	case gossip.StatusFailed:
		return api.LivenessFailed
	case gossip.StatusLeft:
		return api.LivenessLeft
	}
	return ""
}

// record writes the liveness of every member whose status differs from
// what was last recorded for it.
func (g *gossipMember) record() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	var failed int
	var firstErr error
	for _, m := range g.agent.Members() {
		l := liveness(m.Status)
		if m.Name == g.self || l == "" || g.recorded[m.Name] == l {
			continue
		}
		_, err := g.reg.SetLiveness(ctx, m.Name, l, now)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			if !g.ignored[m.Name] {
				g.ignored[m.Name] = true
				g.log.Debug().Str("member", m.Name).Str("addr", m.Addr).Msg("gossip member is not an enrolled node; ignored")
			}
		case err != nil:
			failed++
			if firstErr == nil {
				firstErr = err
			}
		default:
			g.recorded[m.Name] = l
			delete(g.ignored, m.Name)
		}
	}
	if failed > 0 {
		g.log.Warn().Err(firstErr).Int("members", failed).Msg("node liveness not recorded; retried at the next probe")
	}
}

// shutdown stops recording (before the store closes) and leaves the
// cluster gracefully. nil does nothing.
func (g *gossipMember) shutdown() {
	if g == nil {
		return
	}
	close(g.stop)
	<-g.done
	if err := g.agent.Leave(); err != nil {
		g.log.Warn().Err(err).Msg("gossip leave")
		return
	}
	g.log.Info().Msg("left the gossip cluster")
}
