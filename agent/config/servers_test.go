package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestServersConfig: server is one address or a list; an empty list, an
// entry that is not a string, a bad address or one given twice is refused
// with an error naming the entry.
func TestServersConfig(t *testing.T) {
	tests := []struct {
		name, file string
		want       Servers
		err        string // substring; "" = ok
	}{
		{"one string", `server = "http://a:7420"`, Servers{"http://a:7420"}, ""},
		{"a list", `server = ["http://a:7420", "https://b.example:7420", "unix:///run/slipway.sock"]`,
			Servers{"http://a:7420", "https://b.example:7420", "unix:///run/slipway.sock"}, ""},
		{"a list of one", `server = ["http://a:7420"]`, Servers{"http://a:7420"}, ""},
		{"not set", ``, nil, "server: required by `run`"},
		{"empty list", `server = []`, Servers{}, "server: an empty list; give at least one address"},
		{"bad entry", `server = ["http://a:7420", "ftp://b"]`, nil, `server[1]: "ftp://b": scheme must be http, https or unix`},
		{"no host", `server = ["http://a:7420", "http://"]`, nil, `server[1]: "http://" has no host`},
		{"bad port", `server = "http://a:99999"`, nil, `server: "http://a:99999": port "99999" out of range`},
		{"twice", `server = ["http://a:7420", "http://a:7420/"]`, nil, `server[1]: "http://a:7420/" is already server[0]`},
		{"not a string", `server = ["http://a:7420", 7420]`, nil, `last key "server"): entry 1: want a string, not int64`},
		{"a number", `server = 7420`, nil, `last key "server"): want a string or a list of strings, not int64`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.toml")
			if err := os.WriteFile(p, []byte(tt.file+"\nnode_name = \"web-1\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p, true)
			if err == nil {
				err = c.ValidateRun()
			}
			if tt.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !slices.Equal(c.Server, tt.want) {
					t.Fatalf("server = %q, want %q", c.Server, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want it to contain %q", err, tt.err)
			}
		})
	}
}

func TestParseServers(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Servers
	}{
		{"", nil},
		{"http://a:1", Servers{"http://a:1"}},
		{"http://a:1, http://b:2", Servers{"http://a:1", "http://b:2"}},
	} {
		if got := ParseServers(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("ParseServers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTailscaleServers: with [tailscale] every server must be on the
// tailnet; a unix socket among them is named.
func TestTailscaleServers(t *testing.T) {
	c := Default()
	c.NodeName = "web-1"
	c.Tailscale.Enabled = true
	c.Server = Servers{"http://slipway-a", "unix:///run/s.sock"}
	err := c.ValidateRun()
	if err == nil || !strings.Contains(err.Error(), "server[1]: a unix socket is not on the tailnet") {
		t.Fatalf("error %v, want server[1] named", err)
	}
	c.Server = Servers{"http://slipway-a", "http://slipway-b"}
	if err := c.ValidateRun(); err != nil {
		t.Fatal(err)
	}
}
