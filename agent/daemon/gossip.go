package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/gossip"
)

// member is what the daemon needs of its serf member; *gossip.Peer has it.
type member interface {
	Start() error
	Join(addrs ...string) (int, error)
	SetTags(labels map[string]string, generation string) error
	Members() []gossip.Member
	Leave() error
}

func newGossipMember(c gossip.Config) (member, error) {
	a, err := gossip.Create(c)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// tailnet is what gossip needs of the tsnet node; *mesh.Node has it.
type tailnet interface {
	gossip.Net
	IPv4() (netip.Addr, error)
}

// onDesiredChanged is the member's event callback: an event that concerns
// this node wakes the loop (a burst coalesces into one poll: see waitWake).
func (d *Daemon) onDesiredChanged(ev gossip.DesiredChanged) {
	if !ev.Concerns(d.cfg.Name) {
		d.log.Trace().Strs("targets", ev.Targets).Msg("desired-changed for other nodes")
		return
	}
	d.gmu.Lock()
	d.wakes++
	d.gmu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// takeWakes returns how many wake-ups arrived since the last call and
// forgets them: the poll about to start serves them.
func (d *Daemon) takeWakes() int {
	d.gmu.Lock()
	defer d.gmu.Unlock()
	n := d.wakes
	d.wakes = 0
	select {
	case <-d.wake:
	default:
	}
	return n
}

func (d *Daemon) pendingWakes() int {
	d.gmu.Lock()
	defer d.gmu.Unlock()
	return d.wakes
}

// waitWake waits for the (jittered) poll interval, or for a wake-up plus
// WakeDelay, during which further wake-ups join it, or until ctx ends.
func (d *Daemon) waitWake(ctx context.Context) {
	if d.pendingWakes() > 0 {
		// Events arrived during the last poll or switch: they may announce
		// something the poll did not see yet.
		sleep(ctx, d.cfg.Gossip.WakeDelay)
		return
	}
	t := time.NewTimer(jitter(d.cfg.Gossip.PollInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-d.wake:
			if d.pendingWakes() == 0 {
				continue // served by the poll before
			}
			sleep(ctx, d.cfg.Gossip.WakeDelay)
			return
		}
	}
}

// jitter returns p ±10%.
func jitter(p time.Duration) time.Duration {
	return p - p/10 + rand.N(p/5+1)
}

// currentGeneration is the ID of the node's current generation ("" when
// it has none).
func (d *Daemon) currentGeneration() (string, error) {
	snap, err := d.db.Snapshot()
	if err != nil {
		return "", err
	}
	if snap.Meta.Current == 0 {
		return "", nil
	}
	g, err := snap.Generation(snap.Meta.Current)
	if err != nil {
		return "", err
	}
	return g.ID, nil
}

// updateTags gossips the node's current generation if it changed since
// the member last did. Without a started member it does nothing (the
// member reads the generation when it starts).
func (d *Daemon) updateTags() {
	if d.cfg.Gossip == nil {
		return
	}
	// SetTags runs without gmu: it can wait seconds for serf's broadcast,
	// and wake-ups (onDesiredChanged, takeWakes) need gmu meanwhile.
	// tagLoop is the only caller, so updates never overlap.
	d.gmu.Lock()
	m, tagged, once := d.member, d.taggedGen, d.taggedOnce
	d.gmu.Unlock()
	if m == nil {
		return
	}
	id, err := d.currentGeneration()
	if err != nil {
		d.log.Warn().Err(err).Msg("gossip: cannot read the current generation for the member's tags")
		return
	}
	if once && id == tagged {
		return
	}
	if err := m.SetTags(d.cfg.Labels, id); err != nil {
		d.log.Warn().Err(err).Msg("gossip: cannot update the member's tags")
		return
	}
	d.gmu.Lock()
	d.taggedGen, d.taggedOnce = id, true
	d.gmu.Unlock()
	d.log.Debug().Str("generation", id).Msg("gossip: tags updated")
}

// retag asks tagLoop to update the member's tags. It never blocks: serf's
// SetTags waits until the update was broadcast (up to its 5 s
// BroadcastTimeout), and a report or the next poll must not wait for that.
func (d *Daemon) retag() {
	select {
	case d.retags <- struct{}{}:
	default: // one pending update covers this one
	}
}

// tagLoop updates the member's tags whenever retag asked, until ctx ends.
func (d *Daemon) tagLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.retags:
			d.updateTags()
		}
	}
}

// gossipLoop brings the serf member up and keeps it in the cluster until
// ctx ends. The member is named Config.Name, binds Gossip.Bind, is
// encrypted with the keys in Gossip.KeyringFile (none: unencrypted, logged
// as a warning) and tagged with Config.Labels and the ID of the current
// generation ("" for none); the tag is updated after every Apply that
// changed it. It joins Gossip.Join; a start or a join that fails is logged
// and retried with backoff (Config.BackoffMin to Config.BackoffMax), and a
// member that finds no other member alive (checked every
// Gossip.PollInterval) joins again. Gossip is a hint: nothing that goes
// wrong with it (an unreadable keyring, labels too large for serf tags, a
// cluster out of reach) stops the daemon or changes the fetch mode; the
// poll every Gossip.PollInterval carries on. tn, when set (the node's own
// tsnet node), carries gossip over the tailnet: the member binds the
// node's tailnet IPv4 with the port of Gossip.Bind, and join addresses with
// a host name are resolved on the tailnet, since serf would ask the host's
// resolver. With the host's tailscaled, gossip runs on the host's network,
// advertising the tailnet IPv4 when bound to every address.
func (d *Daemon) gossipLoop(ctx context.Context, tn tailnet) {
	log := d.base.With().Str("component", "gossip").Logger()
	gc, err := d.memberConfig(tn, log)
	var m member
	if err == nil {
		m, err = d.cfg.newMember(gc)
	}
	if err != nil {
		log.Error().Err(err).Dur("poll_interval", d.cfg.Gossip.PollInterval).
			Msg("gossip is off for this run; the daemon polls the server every poll_interval instead")
		return
	}
	if !d.startMember(ctx, m, log) {
		return
	}
	d.gmu.Lock()
	d.member, d.taggedGen, d.taggedOnce = m, gc.Generation, true
	d.gmu.Unlock()
	log.Info().Str("bind", gc.BindAddr).Bool("tailnet", tn != nil).Msg("gossip member started")
	var tags sync.WaitGroup
	defer tags.Wait()
	tags.Go(func() { d.tagLoop(ctx) })
	d.retag() // a switch may have run while the member started
	d.stayJoined(ctx, m, tn, log)
}

// memberConfig is the serf member's config: keys, labels, the current
// generation, and the address it binds (on the tailnet with tn) and
// advertises.
func (d *Daemon) memberConfig(tn tailnet, log zerolog.Logger) (gossip.Config, error) {
	g := d.cfg.Gossip
	keys, err := gossip.ReadKeyring(g.KeyringFile)
	if err != nil {
		return gossip.Config{}, err
	}
	if len(keys) == 0 {
		log.Warn().Msg("gossip is not encrypted (insecure_no_encryption)")
	}
	gen, err := d.currentGeneration()
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the current generation; gossiping none until the next switch")
	}
	gc := gossip.Config{
		NodeName:         d.cfg.Name,
		BindAddr:         g.Bind,
		AdvertiseAddr:    g.Advertise,
		Keyring:          keys,
		Labels:           d.cfg.Labels,
		Generation:       gen,
		Intervals:        g.Intervals,
		Log:              d.root, // gossip adds component and node
		OnDesiredChanged: d.onDesiredChanged,
	}
	if tn != nil {
		ip, err := tn.IPv4()
		if err != nil {
			return gossip.Config{}, err
		}
		_, port, err := net.SplitHostPort(g.Bind)
		if err != nil {
			return gossip.Config{}, fmt.Errorf("gossip bind address %q: %w", g.Bind, err)
		}
		gc.BindAddr, gc.Net = net.JoinHostPort(ip.String(), port), tn
	} else if host, port, err := net.SplitHostPort(g.Bind); err == nil && g.Advertise == "" && d.hostIP.IsValid() &&
		(host == "" || net.ParseIP(host).IsUnspecified()) {
		// The host's tailscaled: others reach this member at its tailnet
		// address, not at whatever address serf would pick.
		gc.AdvertiseAddr = net.JoinHostPort(d.hostIP.String(), port)
	}
	return gc, nil
}

// startMember starts m, retrying with backoff; false when ctx ended first.
func (d *Daemon) startMember(ctx context.Context, m member, log zerolog.Logger) bool {
	bo := d.backoff(d.cfg.BackoffMax)
	for {
		err := m.Start()
		if err == nil {
			return true
		}
		delay := bo.next()
		log.Warn().Err(err).Int("attempt", bo.failures).Dur("retry_in", delay).Msg("cannot start the gossip member; retrying")
		if !sleep(ctx, delay) {
			return false
		}
	}
}

// stayJoined joins the cluster and joins again whenever m finds itself
// alone (every other member failed or left: the server restarted
// elsewhere, a long partition), checking every Gossip.PollInterval, until
// ctx ends.
func (d *Daemon) stayJoined(ctx context.Context, m member, tn tailnet, log zerolog.Logger) {
	check := time.NewTicker(d.cfg.Gossip.PollInterval)
	defer check.Stop()
	for {
		if !d.join(ctx, m, tn) {
			return
		}
		for alone := false; !alone; {
			select {
			case <-ctx.Done():
				return
			case <-check.C:
			}
			alone = true
			for _, mem := range m.Members() {
				if mem.Name != d.cfg.Name && mem.Status == gossip.StatusAlive {
					alone = false
					break
				}
			}
			if alone {
				log.Warn().Msg("no other gossip member is alive; joining again")
			}
		}
	}
}

// join joins the cluster through the configured addresses, retrying with
// backoff until one answers. It reports false when ctx ended first.
func (d *Daemon) join(ctx context.Context, m member, tn tailnet) bool {
	log := d.base.With().Str("component", "gossip").Logger()
	bo := d.backoff(d.cfg.BackoffMax)
	for {
		addrs, rerr := resolveJoin(ctx, d.cfg.Gossip.Join, tn)
		n := 0
		var err error
		if len(addrs) > 0 {
			n, err = m.Join(addrs...)
		}
		if n > 0 {
			ev := log.Info()
			if err = errors.Join(rerr, err); err != nil {
				ev = log.Warn().Err(err)
			}
			ev.Int("answered", n).Strs("join", d.cfg.Gossip.Join).Msg("joined the gossip cluster")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		delay := bo.next()
		ev := log.Warn()
		if errors.Is(err, gossip.ErrKeyring) {
			ev = log.Error().Str("hint", "gossip.keyring_file must hold the cluster's keys (the server's gossip keyring), or both sides must run without encryption")
		}
		ev.Err(errors.Join(rerr, err)).Strs("join", d.cfg.Gossip.Join).Int("attempt", bo.failures).Dur("retry_in", delay).
			Msg("cannot join the gossip cluster; retrying (the daemon polls meanwhile)")
		if !sleep(ctx, delay) {
			return false
		}
	}
}

// resolveJoin turns the join addresses into "ip:port". Over the tailnet
// a host name (MagicDNS) is resolved by the tsnet node, which the host's
// resolver does not know; a UDP dial sends nothing. On the host's network
// names are left to serf.
func resolveJoin(ctx context.Context, join []string, tn tailnet) ([]string, error) {
	if tn == nil {
		return join, nil
	}
	var out []string
	var errs []error
	for _, a := range join {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("join address %q: %w", a, err))
			continue
		}
		if _, err := netip.ParseAddr(host); err == nil {
			out = append(out, a)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := tn.DialContext(rctx, "udp4", a)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s on the tailnet: %w", a, err))
			continue
		}
		out = append(out, c.RemoteAddr().String())
		c.Close()
	}
	return out, errors.Join(errs...)
}

// leaveGossip leaves the cluster gracefully, if the member was started.
func (d *Daemon) leaveGossip() {
	d.gmu.Lock()
	m := d.member
	d.member = nil
	d.gmu.Unlock()
	if m == nil {
		return
	}
	if err := m.Leave(); err != nil {
		d.log.Warn().Err(err).Msg("gossip: leave")
		return
	}
	d.log.Info().Msg("left the gossip cluster")
}
