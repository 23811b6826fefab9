package config

import (
	"os"
	"path/filepath"
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
	c := Default()
	if got := c.TailscaleStateDir(); got != "/var/lib/slipway-server/tailscale" {
		t.Errorf("default tailscale state dir %q", got)
	}
}
