package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMeshDefaults(t *testing.T) {
	c := Default()
	if c.Tailscale.Enabled || c.Tailscale.Hostname != "" || c.Tailscale.ControlURL != "" || c.Tailscale.AuthKeyFile != "" ||
		c.Tailscale.Ephemeral || !slices.Equal(c.Tailscale.Tags, []string{"tag:slipway-agent"}) ||
		c.Tailscale.Mode != "tsnet" || c.Tailscale.Socket != "" || c.Tailscale.Proxy != "" {
		t.Fatalf("tailscale defaults %+v", c.Tailscale)
	}
	if (Settings{}).TailscaleMode() != "tsnet" {
		t.Fatalf("an unset mode is %q", (Settings{}).TailscaleMode())
	}
	if c.Gossip.Enabled || c.Gossip.Bind != "0.0.0.0:7946" || c.Gossip.Advertise != "" || c.Gossip.KeyringFile != "" ||
		c.Gossip.InsecureNoEncryption || c.Gossip.Join != nil || time.Duration(c.Gossip.PollInterval) != time.Minute {
		t.Fatalf("gossip defaults %+v", c.Gossip)
	}
	c.NodeName = "web-1"
	if c.TailscaleHostname() != "web-1" || c.TailscaleStateDir() != "/var/lib/slipway/tailscale" {
		t.Fatalf("derived: %q %q", c.TailscaleHostname(), c.TailscaleStateDir())
	}
	c.StateDir, c.Tailscale.Hostname = "/srv/s", "web-1"
	if c.TailscaleStateDir() != "/srv/s/tailscale" || c.TailscaleHostname() != "web-1" {
		t.Fatalf("derived: %q %q", c.TailscaleStateDir(), c.TailscaleHostname())
	}
	c.Tailscale.StateDir = "/var/lib/ts"
	if c.TailscaleStateDir() != "/var/lib/ts" {
		t.Fatalf("tailscale.state_dir: %q", c.TailscaleStateDir())
	}
}

func TestGossipJoin(t *testing.T) {
	tests := []struct {
		server string
		join   []string
		want   []string
	}{
		{"http://slipway", nil, []string{"slipway:7946"}},
		{"https://slipway.example.com:8443/prefix", nil, []string{"slipway.example.com:7946"}},
		{"http://[fd7a:115c::1]:7420", nil, []string{"[fd7a:115c::1]:7946"}},
		{"http://slipway", []string{"10.0.0.1:7000", "b:1"}, []string{"10.0.0.1:7000", "b:1"}},
		{"unix:///run/s.sock", nil, nil},
		{"", nil, nil},
		{"http://a:7420,https://b:7420,http://a:7421,unix:///run/s.sock", nil, []string{"a:7946", "b:7946"}},
	}
	for _, tt := range tests {
		c := Default()
		c.Server, c.Gossip.Join = ParseServers(tt.server), tt.join
		if got := c.GossipJoin(); !slices.Equal(got, tt.want) {
			t.Errorf("server %q join %q: GossipJoin() = %q, want %q", tt.server, tt.join, got, tt.want)
		}
	}
}

// TestMeshConfig: the [tailscale] and [gossip] keys load and validate
// (ValidateRun, as `run` does with node_name filled in), and each invalid
// value is refused with an error naming its key.
func TestMeshConfig(t *testing.T) {
	tests := []struct {
		name, file string
		want       string // error substring; "" = ok
	}{
		{"off by default", "", ""},
		{"disabled sections are not checked", "[tailscale]\nhostname = \"Bad_Name\"\ntags = [\"x\"]\n[gossip]\nbind = \"nonsense\"\n", ""},
		{"unknown key", "[tailscale]\nenable = true\n", "unknown key(s): tailscale.enable"},
		{"tailscale defaults", "[tailscale]\nenabled = true\n", ""},
		{"tailscale all keys", "[tailscale]\nenabled = true\nhostname = \"web-1\"\ncontrol_url = \"https://headscale.example.com\"\n" +
			"auth_key_file = \"/etc/slipway/tailscale.key\"\nstate_dir = \"/var/lib/slipway-ts\"\ntags = [\"tag:slipway-agent\", \"tag:web\"]\nephemeral = true\n", ""},
		{"tailscale no tags", "[tailscale]\nenabled = true\ntags = []\n", ""},
		{"hostname not node_name", "[tailscale]\nenabled = true\nhostname = \"web-2\"\n", `tailscale.hostname: "web-2" is not node_name "web-1"`},
		{"hostname not a label", "[tailscale]\nenabled = true\nhostname = \"web.1\"\n", "tailscale.hostname: \"web.1\", want one lower-case DNS label"},
		{"node name upper case", "node_name = \"Web-1\"\n[tailscale]\nenabled = true\n", `node_name: "Web-1" cannot be a tailnet host name`},
		{"node name dotted", "node_name = \"web-1.eu\"\n[tailscale]\nenabled = true\n", `node_name: "web-1.eu" cannot be a tailnet host name`},
		{"node name underscore", "node_name = \"web_1\"\n[tailscale]\nenabled = true\n", "node_name"},
		{"control url scheme", "[tailscale]\nenabled = true\ncontrol_url = \"headscale.example.com\"\n", "tailscale.control_url: want http(s)://host"},
		{"control url credentials", "[tailscale]\nenabled = true\ncontrol_url = \"https://u:p@h\"\n", "tailscale.control_url: must not carry credentials"},
		{"auth key relative", "[tailscale]\nenabled = true\nauth_key_file = \"ts.key\"\n", "tailscale.auth_key_file"},
		{"state dir relative", "[tailscale]\nenabled = true\nstate_dir = \"ts\"\n", "tailscale.state_dir"},
		{"tag without prefix", "[tailscale]\nenabled = true\ntags = [\"slipway-agent\"]\n", "tailscale.tags[0]: \"slipway-agent\", want tag:name"},
		{"tag empty name", "[tailscale]\nenabled = true\ntags = [\"tag:slipway-agent\", \"tag:\"]\n", "tailscale.tags[1]"},
		{"unix server on the tailnet", "server = \"unix:///run/s.sock\"\n[tailscale]\nenabled = true\n", "server: a unix socket is not on the tailnet"},
		{"mode tsnet explicit", "[tailscale]\nenabled = true\nmode = \"tsnet\"\n", ""},
		{"mode bad", "[tailscale]\nenabled = true\nmode = \"kernel\"\n", `tailscale.mode: "kernel", want "tsnet"`},
		{"mode bad, section off", "[tailscale]\nmode = \"kernel\"\n", ""},
		{"mode host", "[tailscale]\nenabled = true\nmode = \"host\"\n", ""},
		{"mode host all keys", "[tailscale]\nenabled = true\nmode = \"host\"\nsocket = \"/run/ts/ts.sock\"\nproxy = \"socks5://127.0.0.1:1055\"\ntags = [\"tag:slipway-agent\"]\n", ""},
		{"mode host with gossip", "[tailscale]\nenabled = true\nmode = \"host\"\n[gossip]\nenabled = true\ninsecure_no_encryption = true\n", ""},
		{"mode host, proxy and gossip", "[tailscale]\nenabled = true\nmode = \"host\"\nproxy = \"socks5://127.0.0.1:1055\"\n[gossip]\nenabled = true\ninsecure_no_encryption = true\n", "gossip: cannot run through tailscaled's SOCKS5 proxy"},
		{"mode host, proxy not socks5", "[tailscale]\nenabled = true\nmode = \"host\"\nproxy = \"http://127.0.0.1:1055\"\n", `tailscale.proxy: "http://127.0.0.1:1055", want socks5://host:port`},
		{"mode host, socket relative", "[tailscale]\nenabled = true\nmode = \"host\"\nsocket = \"ts.sock\"\n", `tailscale.socket: "ts.sock" must be an absolute`},
		{"mode host, hostname", "[tailscale]\nenabled = true\nmode = \"host\"\nhostname = \"web-1\"\n", "tailscale.hostname: only for mode = \"tsnet\""},
		{"mode host, control url", "[tailscale]\nenabled = true\nmode = \"host\"\ncontrol_url = \"https://hs.example\"\n", "tailscale.control_url: only for mode = \"tsnet\""},
		{"mode host, auth key", "[tailscale]\nenabled = true\nmode = \"host\"\nauth_key_file = \"/k\"\n", "tailscale.auth_key_file: only for mode = \"tsnet\""},
		{"mode host, state dir", "[tailscale]\nenabled = true\nmode = \"host\"\nstate_dir = \"/k\"\n", "tailscale.state_dir: only for mode = \"tsnet\""},
		{"mode host, ephemeral", "[tailscale]\nenabled = true\nmode = \"host\"\nephemeral = true\n", "tailscale.ephemeral: only for mode = \"tsnet\""},
		{"mode host, node name not a label", "node_name = \"Web_1\"\n[tailscale]\nenabled = true\nmode = \"host\"\n", `node_name: "Web_1" cannot be a tailnet host name`},
		{"mode host, unix server", "server = \"unix:///run/s.sock\"\n[tailscale]\nenabled = true\nmode = \"host\"\n", "server: a unix socket is not on the tailnet"},
		{"tsnet with socket", "[tailscale]\nenabled = true\nsocket = \"/run/ts.sock\"\n", `tailscale.socket: only for mode = "host"`},
		{"tsnet with proxy", "[tailscale]\nenabled = true\nproxy = \"socks5://127.0.0.1:1055\"\n", `tailscale.proxy: only for mode = "host"`},

		{"gossip with keyring", "[gossip]\nenabled = true\nkeyring_file = \"/etc/slipway/gossip.keyring\"\n", ""},
		{"gossip all keys", "[gossip]\nenabled = true\nbind = \"10.0.0.5:7000\"\nadvertise = \"192.0.2.5:7000\"\n" +
			"keyring_file = \"/etc/slipway/gossip.keyring\"\njoin = [\"slipway:7946\", \"10.0.0.1:7946\"]\npoll_interval = \"2m\"\n", ""},
		{"gossip insecure", "[gossip]\nenabled = true\ninsecure_no_encryption = true\n", ""},
		{"gossip bind all, port 0", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nbind = \":0\"\n", ""},
		{"gossip with tailscale", "[tailscale]\nenabled = true\n[gossip]\nenabled = true\ninsecure_no_encryption = true\n", ""},
		{"no keyring", "[gossip]\nenabled = true\n", "gossip.keyring_file: required"},
		{"keyring and insecure", "[gossip]\nenabled = true\nkeyring_file = \"/k\"\ninsecure_no_encryption = true\n", "gossip.keyring_file: set together with gossip.insecure_no_encryption"},
		{"keyring relative", "[gossip]\nenabled = true\nkeyring_file = \"k\"\n", "gossip.keyring_file: \"k\" must be an absolute"},
		{"bind no port", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nbind = \"0.0.0.0\"\n", "gossip.bind: \"0.0.0.0\": want host:port"},
		{"bind host name", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nbind = \"localhost:7946\"\n", "gossip.bind: \"localhost:7946\", want an IP address"},
		{"bind port range", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nbind = \"0.0.0.0:70000\"\n", "gossip.bind"},
		{"advertise name", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nadvertise = \"web-1:7946\"\n", "gossip.advertise: \"web-1:7946\", want an IP address"},
		{"advertise port 0", "[gossip]\nenabled = true\ninsecure_no_encryption = true\nadvertise = \"10.0.0.1:0\"\n", "gossip.advertise"},
		{"join no port", "[gossip]\nenabled = true\ninsecure_no_encryption = true\njoin = [\"slipway\"]\n", "gossip.join[0]: \"slipway\": want host:port"},
		{"join no host", "[gossip]\nenabled = true\ninsecure_no_encryption = true\njoin = [\"a:1\", \":7946\"]\n", "gossip.join[1]"},
		{"join needed for unix", "server = \"unix:///run/s.sock\"\n[gossip]\nenabled = true\ninsecure_no_encryption = true\n", "gossip.join: required when server is not http(s)"},
		{"poll interval short", "[gossip]\nenabled = true\ninsecure_no_encryption = true\npoll_interval = \"500ms\"\n", "gossip.poll_interval: 500ms, want at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.toml")
			if err := os.WriteFile(p, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p, true)
			// What the case leaves out: a server, and node_name as `run`
			// fills it in.
			if c.Server == nil {
				c.Server = Servers{"http://slipway"}
			}
			if c.NodeName == "" {
				c.NodeName = "web-1"
			}
			if err == nil {
				err = c.ValidateRun()
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
