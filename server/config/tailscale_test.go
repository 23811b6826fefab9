package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTailscaleSection(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"off by default", "", ""},
		{"off ignores values", "[tailscale]\nhostname = \"Not A Label\"\n", ""},
		{"on with defaults", "[tailscale]\nenabled = true\n", ""},
		{"headscale", "[tailscale]\nenabled = true\nhostname = \"slipway-prod\"\ncontrol_url = \"https://hs.example.com\"\nauth_key_file = \"/etc/slipway/ts.key\"\nstate_dir = \"/var/lib/slipway-server/ts\"\nagent_tag = \"tag:fleet\"\n", ""},
		{"bad hostname", "[tailscale]\nenabled = true\nhostname = \"Slip_way\"\n", "tailscale.hostname"},
		{"relative state", "[tailscale]\nenabled = true\nstate_dir = \"ts\"\n", "tailscale.state_dir"},
		{"relative key", "[tailscale]\nenabled = true\nauth_key_file = \"ts.key\"\n", "tailscale.auth_key_file"},
		{"bad tag", "[tailscale]\nenabled = true\nagent_tag = \"slipway-agent\"\n", "tailscale.agent_tag"},
		{"bad listen", "[tailscale]\nenabled = true\nlisten = \"80\"\n", "tailscale.listen"},
		{"unknown key", "[tailscale]\nenabeld = true\n", "enabeld"},
		{"roles", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"alice@example.com\" = \"admin\"\n\"tag:ci\" = \"deployer\"\nbob = \"viewer\"\n", ""},
		{"roles unknown role", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"alice@example.com\" = \"root\"\n", `tailscale.roles."alice@example.com": role "root", want viewer, deployer or admin`},
		{"roles for the agent tag", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"tag:slipway-agent\" = \"viewer\"\n", `tailscale.roles."tag:slipway-agent": the agent tag`},
		{"roles for a custom agent tag", "[tailscale]\nenabled = true\nagent_tag = \"tag:fleet\"\n[tailscale.roles]\n\"tag:fleet\" = \"admin\"\n\"tag:slipway-agent\" = \"viewer\"\n", `tailscale.roles."tag:fleet": the agent tag`},
		{"roles bad tag", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"tag:\" = \"viewer\"\n", `tailscale.roles."tag:": not a tag`},
		{"roles empty principal", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"\" = \"viewer\"\n", `tailscale.roles."": want a user's login name`},
		{"roles principal with a space", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"alice smith\" = \"viewer\"\n", `tailscale.roles."alice smith"`},
		{"roles not a table", "[tailscale]\nenabled = true\nroles = \"admin\"\n", "tailscale.roles: want a table"},
		{"roles not a string", "[tailscale]\nenabled = true\n[tailscale.roles]\n\"tag:ci\" = 3\n", `tailscale.roles."tag:ci": want a role name`},
		{"mode tsnet", "[tailscale]\nenabled = true\nmode = \"tsnet\"\n", ""},
		{"mode bad", "[tailscale]\nenabled = true\nmode = \"kernel\"\n", `tailscale.mode: "kernel", want "tsnet"`},
		{"mode host", "[tailscale]\nenabled = true\nmode = \"host\"\n", ""},
		{"mode host all keys", "[tailscale]\nenabled = true\nmode = \"host\"\nsocket = \"/run/ts/ts.sock\"\nlisten = \"100.64.0.1:8080\"\nagent_tag = \"tag:fleet\"\n", ""},
		{"mode host, socket relative", "[tailscale]\nenabled = true\nmode = \"host\"\nsocket = \"ts.sock\"\n", `tailscale.socket: "ts.sock" must be an absolute`},
		{"mode host, listen by name", "[tailscale]\nenabled = true\nmode = \"host\"\nlisten = \"slipway:80\"\n", `tailscale.listen: "slipway:80", want :port`},
		{"mode host, hostname", "[tailscale]\nenabled = true\nmode = \"host\"\nhostname = \"other\"\n", `tailscale.hostname: only for mode = "tsnet"`},
		{"mode host, control url", "[tailscale]\nenabled = true\nmode = \"host\"\ncontrol_url = \"https://hs\"\n", `tailscale.control_url: only for mode = "tsnet"`},
		{"mode host, auth key", "[tailscale]\nenabled = true\nmode = \"host\"\nauth_key_file = \"/k\"\n", `tailscale.auth_key_file: only for mode = "tsnet"`},
		{"mode host, state dir", "[tailscale]\nenabled = true\nmode = \"host\"\nstate_dir = \"/k\"\n", `tailscale.state_dir: only for mode = "tsnet"`},
		{"tsnet with socket", "[tailscale]\nenabled = true\nsocket = \"/run/ts.sock\"\n", `tailscale.socket: only for mode = "host"`},
		{"roles inline", "[tailscale]\nenabled = true\nroles = { \"tag:ci\" = \"deployer\" }\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.toml")
			if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p, true)
			if err == nil {
				err = c.Validate()
			}
			if tc.want == "" && err != nil {
				t.Fatalf("unexpected: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(p, []byte("[tailscale.roles]\n\"alice@example.com\" = \"admin\"\n\"tag:ci\" = \"deployer\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p, true); err != nil || !reflect.DeepEqual(c.Tailscale.Roles, Roles{"alice@example.com": "admin", "tag:ci": "deployer"}) {
		t.Errorf("roles loaded as %v (%v)", c.Tailscale.Roles, err)
	}
	c := Default()
	if got := c.TailscaleStateDir(); got != "/var/lib/slipway-server/tailscale" {
		t.Errorf("default tailscale state dir %q", got)
	}
}
