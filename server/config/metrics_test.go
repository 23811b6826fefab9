package config

import (
	"testing"
)

func TestMetricsListen(t *testing.T) {
	tests := []struct {
		name, file string
		want       string // metrics_listen after Load, when valid
		wantErr    string
	}{
		{"default", "", "127.0.0.1:9431", ""},
		{"disabled", "metrics_listen = \"\"\n", "", ""},
		{"elsewhere", "metrics_listen = \"10.0.0.1:9100\"\n", "10.0.0.1:9100", ""},
		{"no port", "metrics_listen = \"localhost\"\n", "", "metrics_listen: \"localhost\""},
		{"same as the API", "listen = \"127.0.0.1:7420\"\nmetrics_listen = \"127.0.0.1:7420\"\n", "", "an address of their own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadText(t, tt.file)
			if checkErr(t, err, tt.wantErr) {
				return
			}
			if c.MetricsListen != tt.want {
				t.Fatalf("metrics_listen %q, want %q", c.MetricsListen, tt.want)
			}
		})
	}
}
