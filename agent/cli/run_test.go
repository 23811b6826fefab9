package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/agent/config"
)

func TestRunFlagsApply(t *testing.T) {
	host, _ := os.Hostname()
	base := func() config.Settings {
		c := config.Default()
		c.Server, c.NodeName, c.JoinTokenFile = config.Servers{"http://from-file:1"}, "file-name", "/etc/slipway/join"
		c.Labels = map[string]string{"role": "db", "zone": "a"}
		return c
	}
	tests := []struct {
		name    string
		flags   runFlags
		unset   bool // no node name anywhere
		want    func(*config.Settings)
		wantErr string
	}{
		{name: "file only", want: func(*config.Settings) {}},
		{
			name:  "flags override",
			flags: runFlags{server: "https://slipway:7420", caFile: "/etc/ca.pem", name: "web-9", joinTokenFile: "/run/join", labels: []string{"role=web", "env=prod", "empty="}},
			want: func(c *config.Settings) {
				c.Server, c.TLSCAFile, c.NodeName, c.JoinTokenFile = config.Servers{"https://slipway:7420"}, "/etc/ca.pem", "web-9", "/run/join"
				c.Labels = map[string]string{"role": "web", "env": "prod", "empty": ""}
			},
		},
		{name: "host name default", unset: true, want: func(c *config.Settings) { c.NodeName = host }},
		{name: "bad label", flags: runFlags{labels: []string{"role"}}, wantErr: `--label "role": want key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			if tt.unset {
				c.NodeName = ""
			}
			err := tt.flags.apply(&c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := base()
			tt.want(&want)
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("config\n%+v\nwant\n%+v", c, want)
			}
		})
	}
}

// `run` refuses to start without a server or with invalid daemon keys,
// before it touches systemd.
func TestRunValidatesConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file string
		args       []string
		want       string
	}{
		{"no server", "", nil, "server: required by `run`"},
		{"bad server flag", "", []string{"--server", "ftp://x"}, "scheme must be http, https or unix"},
		{"bad label flag", "server = \"http://x:1\"\n", []string{"--label", "a b=c"}, "labels: key"},
		{"bad poll wait", "server = \"http://x:1\"\npoll_wait = \"10m\"\n", nil, "poll_wait"},
		{"tailnet name", "server = \"http://slipway\"\n[tailscale]\nenabled = true\nhostname = \"other\"\n", []string{"--name", "web-1"}, "tailscale.hostname"},
		{"gossip keyring", "server = \"http://slipway\"\n[gossip]\nenabled = true\n", nil, "gossip.keyring_file: required"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, "agent.toml")
			if err := os.WriteFile(cfg, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"run", "--config", cfg, "--state-dir", filepath.Join(dir, "state", string(rune('a'+i)))}, tt.args...)
			var out, errOut bytes.Buffer
			err := Run(context.Background(), args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// The [tailscale] and [gossip] sections reach the daemon as its mesh and
// gossip configs, with the derived defaults; off, they are nil.
func TestRunMeshWiring(t *testing.T) {
	c := config.Default()
	c.Server, c.NodeName, c.StateDir = config.Servers{"http://slipway"}, "web-1", "/srv/slipway"
	if tailscaleConfig(c) != nil || gossipConfig(c) != nil {
		t.Fatal("disabled sections wired")
	}
	c.Tailscale.Enabled, c.Tailscale.ControlURL, c.Tailscale.AuthKeyFile, c.Tailscale.Ephemeral = true, "https://hs.example", "/etc/slipway/ts.key", true
	c.Gossip.Enabled, c.Gossip.KeyringFile, c.Gossip.Advertise = true, "/etc/slipway/gossip.keyring", "192.0.2.1:7946"
	ts, g := tailscaleConfig(c), gossipConfig(c)
	if ts.Hostname != "web-1" || ts.ControlURL != "https://hs.example" || ts.AuthKeyFile != "/etc/slipway/ts.key" ||
		ts.StateDir != "/srv/slipway/tailscale" || !reflect.DeepEqual(ts.Tags, []string{"tag:slipway-agent"}) || !ts.Ephemeral || ts.Store != nil {
		t.Fatalf("tailscale: %+v", ts)
	}
	if g.Bind != "0.0.0.0:7946" || g.Advertise != "192.0.2.1:7946" || g.KeyringFile != "/etc/slipway/gossip.keyring" ||
		!reflect.DeepEqual(g.Join, []string{"slipway:7946"}) || g.PollInterval != time.Minute {
		t.Fatalf("gossip: %+v", g)
	}
	if hostTailnetConfig(c) != nil {
		t.Fatal("host tailnet wired in tsnet mode")
	}
	c.Tailscale = config.Default().Tailscale
	c.Tailscale.Enabled, c.Tailscale.Mode, c.Tailscale.Proxy = true, "host", "socks5://127.0.0.1:1055"
	if tailscaleConfig(c) != nil {
		t.Fatal("tsnet node wired in host mode")
	}
	h := hostTailnetConfig(c)
	if h == nil || h.Socket != "" || h.Proxy != "socks5://127.0.0.1:1055" || !reflect.DeepEqual(h.Tags, []string{"tag:slipway-agent"}) {
		t.Fatalf("host tailnet: %+v", h)
	}
}
