package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "agent.toml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	tests := []struct {
		name, file string
		want       string // error substring; "" = ok
	}{
		{"defaults", "", ""},
		{"override", "state_dir = \"/srv/slipway\"\njob_timeout = \"10s\"\n", ""},
		{"unknown key", "state_dirr = \"/x\"\n", "unknown key(s): state_dirr"},
		{"relative", "state_dir = \"var/lib\"\n", "state_dir"},
		{"root prefix", "link_prefixes = [\"/\"]\n", "link_prefixes[0]"},
		{"bad duration", "job_timeout = \"soon\"\n", "invalid duration"},
		{"bad level", "log_level = \"loud\"\n", "log_level"},
		{"daemon keys", "server = \"https://slipway.example:8443\"\nnode_name = \"web-1.eu\"\njoin_token_file = \"/etc/slipway/join-token\"\ntoken_file = \"/var/lib/slipway/tok\"\npoll_wait = \"5m\"\nreport_interval = \"10s\"\n[labels]\nrole = \"web\"\n\"example.com/tier\" = \"front_1\"\nempty = \"\"\n", ""},
		{"tls ca file", "server = \"https://slipway.example:8443\"\ntls_ca_file = \"/etc/slipway/server-ca.pem\"\n", ""},
		{"tls ca file relative", "tls_ca_file = \"ca.pem\"\n", `tls_ca_file: "ca.pem" must be an absolute path`},
		{"unix server", "server = \"unix:///run/slipway/server.sock\"\n", ""},
		{"server scheme", "server = \"ftp://x\"\n", "scheme must be http, https or unix"},
		{"server no host", "server = \"http://:8080\"\n", "no host"},
		{"server credentials", "server = \"https://u:secret@x\"\n", "credentials"},
		{"server bad port", "server = \"http://x:99999\"\n", "port"},
		{"server unix relative", "server = \"unix://run/x.sock\"\n", "unix:///absolute"},
		{"server query", "server = \"http://x/?a=b\"\n", "query"},
		{"node name", "node_name = \"-web\"\n", "node_name"},
		{"node name slash", "node_name = \"a/b\"\n", "node_name"},
		{"label key", "[labels]\n\"-x\" = \"y\"\n", "labels: key \"-x\""},
		{"label key long", "[labels]\n" + strings.Repeat("k", 64) + " = \"y\"\n", "labels: key"},
		{"label value", "[labels]\nrole = \"a b\"\n", "labels[\"role\"]: value"},
		{"label value slash", "[labels]\nrole = \"a/b\"\n", "labels[\"role\"]"},
		{"label value long", "[labels]\nrole = \"" + strings.Repeat("v", 64) + "\"\n", "labels[\"role\"]"},
		{"label not string", "[labels]\nn = 1\n", "labels"},
		{"relative join token", "join_token_file = \"join\"\n", "join_token_file"},
		{"relative token", "token_file = \"tok\"\n", "token_file"},
		{"poll too short", "poll_wait = \"500ms\"\n", "poll_wait"},
		{"poll too long", "poll_wait = \"6m\"\n", "poll_wait"},
		{"report zero", "report_interval = \"0s\"\n", "report_interval"},
		{"overload bound ok", "overload_confirm_timeout = \"10m\"\n", ""},
		{"overload bound zero", "overload_confirm_timeout = \"0s\"\n", "overload_confirm_timeout"},
		{"overload bound too long", "overload_confirm_timeout = \"2h\"\n", "overload_confirm_timeout"},
		{"secrets keys", "secrets_dir = \"/run/s\"\nidentity_file = \"/etc/slipway/identity.age\"\nssh_host_keys = [\"/etc/ssh/k\"]\n", ""},
		{"no ssh host keys", "ssh_host_keys = []\n", ""},
		{"secrets relative", "secrets_dir = \"run/s\"\n", "secrets_dir"},
		{"secrets in state dir", "secrets_dir = \"/var/lib/slipway/secrets\"\n", "secrets_dir: \"/var/lib/slipway/secrets\" overlaps state_dir"},
		{"state dir in secrets", "secrets_dir = \"/var/lib\"\n", "overlaps state_dir"},
		{"secrets is unit dir", "secrets_dir = \"/etc/systemd/system\"\n", "overlaps unit_dir"},
		{"identity relative", "identity_file = \"id.age\"\n", "identity_file"},
		{"ssh key relative", "ssh_host_keys = [\"k\"]\n", "ssh_host_keys[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(write(tt.file), true)
			if err == nil {
				err = c.Validate()
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
	c, err := Load(filepath.Join(dir, "override-check.toml"), false)
	if err != nil || c.StateDir != "/var/lib/slipway" || time.Duration(c.JobTimeout) != 3*time.Minute {
		t.Fatalf("missing default file: %+v, %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Fatal("missing explicit file accepted")
	}
}

func TestSecretsDefaults(t *testing.T) {
	c := Default()
	if c.SecretsDir != "/run/slipway/secrets" || c.AgeIdentityFile() != "/var/lib/slipway/identity.age" ||
		strings.Join(c.SSHHostKeys, " ") != "/etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_rsa_key" {
		t.Fatalf("secrets defaults: %q %q %q", c.SecretsDir, c.AgeIdentityFile(), c.SSHHostKeys)
	}
	c.StateDir = "/srv/state"
	if c.AgeIdentityFile() != "/srv/state/identity.age" {
		t.Fatalf("identity follows state_dir: %q", c.AgeIdentityFile())
	}
	c.IdentityFile = "/etc/slipway/id.age"
	if c.AgeIdentityFile() != "/etc/slipway/id.age" {
		t.Fatalf("identity_file: %q", c.AgeIdentityFile())
	}
}

func TestDaemonDefaults(t *testing.T) {
	c := Default()
	if time.Duration(c.OverloadConfirmTimeout) != 5*time.Minute {
		t.Fatalf("overload_confirm_timeout default %v", c.OverloadConfirmTimeout)
	}
	if time.Duration(c.PollWait) != 55*time.Second || time.Duration(c.ReportInterval) != time.Minute {
		t.Fatalf("intervals: %v %v", c.PollWait, c.ReportInterval)
	}
	if got := c.NodeTokenFile(); got != "/var/lib/slipway/node-token" {
		t.Fatalf("NodeTokenFile() = %q", got)
	}
	c.StateDir = "/srv/s"
	if got := c.NodeTokenFile(); got != "/srv/s/node-token" {
		t.Fatalf("NodeTokenFile() follows state_dir: %q", got)
	}
	c.TokenFile = "/etc/slipway/token"
	if got := c.NodeTokenFile(); got != "/etc/slipway/token" {
		t.Fatalf("NodeTokenFile() = %q", got)
	}
}

func TestValidateRun(t *testing.T) {
	tests := []struct {
		name         string
		server, node string
		want         []string // error substrings; none = ok
	}{
		{"ok", "http://127.0.0.1:8080", "web-1", nil},
		{"no server", "", "web-1", []string{"server: required"}},
		{"no name", "http://x", "", []string{"node_name: required"}},
		{"both and invalid", "", "", []string{"server: required", "node_name: required"}},
		{"bad server", "gopher://x", "n", []string{"scheme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Server, c.NodeName = ParseServers(tt.server), tt.node
			err := c.ValidateRun()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to mention %q", err, w)
				}
			}
		})
	}
	// Without a server, plain Validate (the other commands) is fine.
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

// Never echo a URL that may carry a secret.
func TestServerErrorsHideCredentials(t *testing.T) {
	for _, s := range []string{"https://u:hunter2@x", "http://u:hunter2@[::1", "%zzhunter2"} {
		c := Default()
		c.Server = Servers{s}
		err := c.Validate()
		if err == nil {
			t.Fatalf("%q accepted", s)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error echoes the secret: %v", err)
		}
	}
}
