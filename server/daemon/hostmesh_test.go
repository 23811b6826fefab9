package daemon

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/shared/mesh"
)

// fakeHostSelf is the host's tailscaled: Self answers from a list (the
// last one repeats).
type fakeHostSelf struct {
	mu     sync.Mutex
	selves []mesh.Self
	errs   []error
	asked  int
}

func (f *fakeHostSelf) Self(context.Context) (mesh.Self, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := min(f.asked, len(f.selves)-1)
	f.asked++
	var err error
	if i < len(f.errs) {
		err = f.errs[i]
	}
	return f.selves[i], err
}

func (f *fakeHostSelf) Socket() string { return "/run/fake/tailscaled.sock" }

// TestListenHost: the server in host mode listens on the host's tailnet
// addresses once tailscaled is on the tailnet (loopback stands in for the
// tailnet address), or on the one address listen names; a userspace
// tailscaled or an address the host does not have is refused.
func TestListenHost(t *testing.T) {
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	running := func(tun bool, ips ...netip.Addr) mesh.Self {
		return mesh.Self{Name: "slipway", IPs: ips, State: "Running", TUN: tun}
	}
	tests := []struct {
		name   string
		selves []mesh.Self
		errs   []error
		listen string
		want   []string // listener IPs
		fail   string
	}{
		{"every tailnet address", []mesh.Self{running(true, lo4, lo6)}, nil, ":0", []string{"127.0.0.1", "::1"}, ""},
		{"after a wait", []mesh.Self{{}, {State: "Starting"}, running(true, lo4)}, []error{errors.New("connection refused")}, ":0", []string{"127.0.0.1"}, ""},
		{"one address", []mesh.Self{running(true, lo4, lo6)}, nil, "127.0.0.1:0", []string{"127.0.0.1"}, ""},
		{"not a tailnet address", []mesh.Self{running(true, lo4)}, nil, "10.0.0.1:0", nil, "10.0.0.1 is not one of the host's tailnet addresses"},
		{"userspace networking", []mesh.Self{running(false, lo4)}, nil, ":0", nil, "runs in userspace networking"},
		{"no address", []mesh.Self{running(true)}, nil, ":0", nil, "no tailnet address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := hostWaitLog
			hostWaitLog = 0
			t.Cleanup(func() { hostWaitLog = old })
			var logs bytes.Buffer
			f := &fakeHostSelf{selves: tt.selves, errs: tt.errs}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			self, lns, err := listenHost(ctx, f, tt.listen, zerolog.New(&logs))
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("err %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range lns {
				got = append(got, netip.MustParseAddrPort(l.Addr().String()).Addr().String())
				l.Close()
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") || self.Name != "slipway" {
				t.Fatalf("listened on %v as %q, want %v", got, self.Name, tt.want)
			}
			if waits := strings.Count(logs.String(), "waiting for the host's tailscaled"); waits != len(tt.selves)-1 {
				t.Fatalf("%d wait logs after %d answers:\n%s", waits, f.asked, logs.String())
			}
		})
	}
}

// A cancelled context ends the wait.
func TestListenHostWaitBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := listenHost(ctx, &fakeHostSelf{selves: []mesh.Self{{State: "NeedsLogin"}}}, ":0", zerolog.Nop())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

// In host mode gossip bound to every address advertises the tailnet IPv4.
func TestGossipOnHost(t *testing.T) {
	ip := netip.MustParseAddr("100.64.0.1")
	tests := []struct {
		bind, advertise string
		ip              netip.Addr
		want            string
	}{
		{"0.0.0.0:7946", "", ip, "100.64.0.1:7946"},
		{":7000", "", ip, "100.64.0.1:7000"},
		{"0.0.0.0:7946", "192.0.2.1:7946", ip, "192.0.2.1:7946"},
		{"10.0.0.1:7946", "", ip, ""},
		{"0.0.0.0:7946", "", netip.Addr{}, ""},
	}
	for _, tt := range tests {
		got := gossipOnHost(config.Gossip{Bind: tt.bind, Advertise: tt.advertise}, tt.ip)
		if got.Advertise != tt.want || got.Bind != tt.bind {
			t.Errorf("bind %s advertise %q ip %v: %+v, want advertise %q", tt.bind, tt.advertise, tt.ip, got, tt.want)
		}
	}
}
