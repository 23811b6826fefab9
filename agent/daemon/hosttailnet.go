package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/mesh"
)

// ErrTailnetIdentity is returned by Run when the host's tailscaled does
// not know this node as the server would have to (its tailnet name is not
// the node name, or it lacks a required tag), or cannot carry its
// requests (userspace networking without a proxy). Nothing is sent to the
// server then.
var ErrTailnetIdentity = errors.New("the host's tailnet identity does not fit this node")

// HostTailnet is the host's own tailscaled ([tailscale] mode "host").
type HostTailnet struct {
	mesh.HostConfig
	// Tags the host's node must carry (the server's agent tag).
	Tags []string
}

// hostTailnet is what the daemon needs of the host's tailscaled;
// *mesh.Host has it.
type hostTailnet interface {
	Self(ctx context.Context) (mesh.Self, error)
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Proxied() bool
	Socket() string
}

func newHostTailnet(c mesh.HostConfig) (hostTailnet, error) { return mesh.NewHost(c) }

// upHost waits until the host's tailscaled is on the tailnet (logging
// every TailnetWaitLog while it waits, bounded only by ctx), then checks
// that it knows this node as the server will: the error wraps
// ErrTailnetIdentity when it does not.
func (d *Daemon) upHost(ctx context.Context) (hostTailnet, mesh.Self, error) {
	hc := d.cfg.TailscaleHost
	h, err := d.cfg.newHost(hc.HostConfig)
	if err != nil {
		return nil, mesh.Self{}, fmt.Errorf("tailnet: %w", err)
	}
	log := d.base.With().Str("component", "mesh").Str("socket", h.Socket()).Logger()
	log.Info().Bool("proxy", h.Proxied()).Strs("tags", hc.Tags).Msg("using the host's tailscaled")
	start, lastLog := time.Now(), time.Time{} // the first wait is logged at once
	bo := d.backoff(min(d.cfg.BackoffMax, 5*time.Second))
	for {
		self, err := h.Self(ctx)
		if err == nil && self.Running() {
			log.Info().Dur("took", time.Since(start).Round(time.Millisecond)).Str("tailnet_name", self.Name).
				Strs("tailnet_tags", self.Tags).Bool("tun", self.TUN).Msg("on the tailnet")
			return h, self, checkHostSelf(self, d.cfg.Name, hc.Tags, h.Proxied())
		}
		if time.Since(lastLog) >= d.cfg.TailnetWaitLog {
			lastLog = time.Now()
			ev := log.Warn().Dur("waited", time.Since(start).Round(time.Second))
			if err != nil {
				ev = ev.Err(err).Str("hint", "is tailscaled running, and is tailscale.socket its LocalAPI socket (tailscaled --socket)?")
			} else {
				ev = ev.Str("state", self.State).Str("hint", "log the host in: tailscale up --hostname="+d.cfg.Name+" --advertise-tags="+strings.Join(hc.Tags, ","))
			}
			ev.Msg("still waiting for the host's tailscaled to be on the tailnet")
		}
		if !sleep(ctx, bo.next()) {
			return nil, mesh.Self{}, ctx.Err()
		}
	}
}

// checkHostSelf says why the host's node cannot act as node name (nil when
// it can).
func checkHostSelf(self mesh.Self, name string, tags []string, proxied bool) error {
	var errs []error
	if self.Name != name {
		errs = append(errs, fmt.Errorf("the host's tailnet name is %q, not node_name %q: the server authorises a node by its tailnet name (run `tailscale up --hostname=%s`, or set node_name = %q)",
			self.Name, name, name, self.Name))
	}
	var missing []string
	for _, t := range tags {
		if !slices.Contains(self.Tags, t) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("the host's node does not carry %s (it has %v): the server refuses a node without the agent tag (run `tailscale up --advertise-tags=%s`; the tailnet policy must let the host use it)",
			strings.Join(missing, ", "), self.Tags, strings.Join(tags, ",")))
	}
	if !self.TUN && !proxied {
		errs = append(errs, errors.New("tailscaled runs in userspace networking: this host has no tailnet interface; set tailscale.proxy to its SOCKS5 proxy (tailscaled --socks5-server=127.0.0.1:1055, tailscale.proxy = \"socks5://127.0.0.1:1055\")"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrTailnetIdentity, err)
	}
	return nil
}

// hostIPv4 is the first IPv4 of ips (invalid when none).
func hostIPv4(ips []netip.Addr) netip.Addr {
	for _, ip := range ips {
		if ip.Is4() {
			return ip
		}
	}
	return netip.Addr{}
}
