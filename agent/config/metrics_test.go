package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetricsListen(t *testing.T) {
	if got := Default().MetricsListen; got != "127.0.0.1:9432" {
		t.Fatalf("default metrics_listen %q", got)
	}
	tests := []struct {
		name, file string
		want       string // the value after Load; "" with wantErr
		wantErr    string
	}{
		{"default", "", DefaultMetricsListen, ""},
		{"disabled", "metrics_listen = \"\"\n", "", ""},
		{"any port", "metrics_listen = \"127.0.0.1:0\"\n", "127.0.0.1:0", ""},
		{"all interfaces", "metrics_listen = \":9100\"\n", ":9100", ""},
		{"ipv6", "metrics_listen = \"[::1]:9432\"\n", "[::1]:9432", ""},
		{"no port", "metrics_listen = \"127.0.0.1\"\n", "", "metrics_listen: \"127.0.0.1\": want host:port"},
		{"bad port", "metrics_listen = \"127.0.0.1:http\"\n", "", "metrics_listen: \"127.0.0.1:http\": port \"http\" out of range"},
		{"port too big", "metrics_listen = \"127.0.0.1:70000\"\n", "", "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.toml")
			if err := os.WriteFile(p, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p, true)
			if err == nil {
				err = c.Validate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MetricsListen != tt.want {
				t.Fatalf("metrics_listen %q, want %q", c.MetricsListen, tt.want)
			}
		})
	}
}
