package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadValidate(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, tc := range []struct{ name, file, want string }{
		{"defaults", "", ""},
		{"tokens", "[[admin_token]]\nname = \"ci\"\nrole = \"deployer\"\nsha256 = \"" + sha + "\"\n[[admin_token]]\nname = \"ops\"\nrole = \"admin\"\nfile = \"/etc/slipway/ops.token\"\n", ""},
		{"unknown key", "listne = \"x\"\n", "unknown key(s): listne"},
		{"bad listen", "listen = \"nope\"\n", "listen"},
		{"bad role", "[[admin_token]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"" + sha + "\"\n", "role"},
		{"both sha and file", "[[admin_token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"" + sha + "\"\nfile = \"/x\"\n", "exactly one"},
		{"bad sha", "[[admin_token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"abc\"\n", "sha256"},
		{"dup name", "[[admin_token]]\nname = \"x\"\nrole = \"admin\"\nfile = \"/a\"\n[[admin_token]]\nname = \"x\"\nrole = \"admin\"\nfile = \"/b\"\n", "given twice"},
		{"relative state", "state_dir = \"state\"\n", "state_dir"},
		{"write limit", "agent_write_limit = 500\n", ""},
		{"write limit zero", "agent_write_limit = 0\n", "agent_write_limit: 0, want 1 to 100000"},
		{"write limit huge", "agent_write_limit = 100001\n", "agent_write_limit"},
		{"write wait", "agent_write_wait = \"500ms\"\n", ""},
		{"write wait zero", "agent_write_wait = \"0s\"\n", ""},
		{"write wait negative", "agent_write_wait = \"-1s\"\n", "agent_write_wait: -1s, want 0 to 30s"},
		{"write wait long", "agent_write_wait = \"1m\"\n", "agent_write_wait: 1m0s, want 0 to 30s"},
		{"tls pair", "tls_cert_file = \"/etc/slipway/tls.crt\"\ntls_key_file = \"/etc/slipway/tls.key\"\n", ""},
		{"tls cert without key", "tls_cert_file = \"/etc/slipway/tls.crt\"\n", "tls_cert_file and tls_key_file: set both (HTTPS on listen) or neither"},
		{"tls key without cert", "tls_key_file = \"/etc/slipway/tls.key\"\n", "set both"},
		{"tls relative", "tls_cert_file = \"tls.crt\"\ntls_key_file = \"/k\"\n", `tls_cert_file: "tls.crt" must be an absolute path`},
		{"socket mode and group", "agent_socket_mode = \"0600\"\nagent_socket_group = \"slipway-agents\"\n", ""},
		{"socket group number", "agent_socket_group = \"998\"\n", ""},
		{"socket mode not octal", "agent_socket_mode = \"rw\"\n", `agent_socket_mode: "rw", want an octal mode like "0660"`},
		{"socket mode for others", "agent_socket_mode = \"0666\"\n", `agent_socket_mode: "0666" gives others access`},
		{"socket group bad", "agent_socket_group = \"a b\"\n", `agent_socket_group: "a b", want a group name or number`},
		{"limits", "[limits]\nread_timeout = \"5s\"\nmax_connections = 10\nmax_connections_per_address = 2\nper_address_exempt = []\n", ""},
		{"limits timeout zero", "[limits]\nidle_timeout = \"0s\"\n", "limits.idle_timeout: 0s, want 10ms to 24h"},
		{"limits per address above total", "[limits]\nmax_connections = 10\nmax_connections_per_address = 11\n", "limits.max_connections_per_address: 11 is above max_connections (10)"},
		{"limits header tiny", "[limits]\nmax_header_bytes = 100\n", "limits.max_header_bytes: 100, want 4096 to 16777216 bytes"},
		{"limits rate zero", "[limits]\nunauthenticated_rate = 0.0\n", "limits.unauthenticated_rate: 0, want more than 0"},
		{"limits exempt bad", "[limits]\nper_address_exempt = [\"10.0.0.1\"]\n", `limits.per_address_exempt[0]: "10.0.0.1": want a network like 127.0.0.0/8`},
		{"limits unknown key", "[limits]\nmax_conns = 1\n", "unknown key(s): limits.max_conns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.toml")
			os.WriteFile(p, []byte(tc.file), 0o600)
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
}
