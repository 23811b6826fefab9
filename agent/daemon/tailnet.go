package daemon

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/slipway-dev/slipway/shared/mesh"
)

// upTailnet brings up the daemon's tsnet node and waits until it is on the
// tailnet, or ctx ends. While it waits it logs every TailnetWaitLog; the
// node's own messages (an auth URL, say) go to the log too. Once up, it
// checks that the tailnet knows the node by the node name and with its
// tags, which the server authorises it by; a mismatch is logged, not fatal
// (it may clear up, e.g. once a stale device of the same name is removed).
func (d *Daemon) upTailnet(ctx context.Context) (*mesh.Node, error) {
	cfg := *d.cfg.Tailscale
	cfg.Log = d.base
	log := d.base.With().Str("component", "mesh").Str("hostname", cfg.Hostname).Logger()
	control := cfg.ControlURL
	if control == "" {
		control = "(Tailscale)"
	}
	log.Info().Str("control_url", redact(control)).Str("state_dir", cfg.StateDir).Strs("tags", cfg.Tags).
		Bool("auth_key_file", cfg.AuthKeyFile != "").Msg("bringing up the tailnet node")
	start := time.Now()
	waited := make(chan struct{})
	go func() {
		t := time.NewTicker(d.cfg.TailnetWaitLog)
		defer t.Stop()
		for {
			select {
			case <-waited:
				return
			case <-t.C:
				log.Warn().Dur("waited", time.Since(start).Round(time.Second)).
					Str("hint", "check control_url and that the control server is reachable; a new node needs an auth key (tailscale.auth_key_file)").
					Msg("still waiting for the tailnet")
			}
		}
	}()
	n, err := mesh.Up(ctx, cfg)
	close(waited)
	if err != nil {
		return nil, err
	}
	ev := log.Info().Dur("took", time.Since(start).Round(time.Millisecond))
	ip, err := n.IPv4()
	if err == nil {
		ev = ev.Str("ipv4", ip.String())
	}
	ev.Msg("on the tailnet")
	if err == nil {
		d.checkTailnetIdentity(ctx, n, net.JoinHostPort(ip.String(), "1"), cfg.Tags)
	}
	return n, nil
}

// checkTailnetIdentity logs an error when the tailnet does not call this
// node by the node name or it lacks a tag it advertises: the server would
// refuse every request.
func (d *Daemon) checkTailnetIdentity(ctx context.Context, n *mesh.Node, self string, tags []string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	id, err := n.Whois(ctx, self)
	if err != nil {
		d.log.Debug().Err(err).Msg("cannot look up this node's own tailnet identity")
		return
	}
	if id.NodeName != d.cfg.Name {
		d.log.Error().Str("tailnet_name", id.NodeName).
			Str("hint", "the server authorises tailnet requests by the tailnet host name; remove the other device of that name from the tailnet, or rename this node").
			Msg("the tailnet does not call this node by its node name; the server will refuse it")
	}
	for _, t := range tags {
		if !slices.Contains(id.Tags, t) {
			d.log.Error().Str("tag", t).Strs("tailnet_tags", id.Tags).
				Str("hint", "the tailnet policy must let this node's auth key (or owner) use the tag (tagOwners)").
				Msg("the node does not carry a tag it advertises; the server may refuse it")
		}
	}
}
