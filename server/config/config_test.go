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
