package config

import (
	"testing"
	"time"
)

func TestUI(t *testing.T) {
	tests := []struct {
		name, file string
		want       UI // after Load, when valid
		wantErr    string
	}{
		{"default", "", UI{Enabled: true, SessionTTL: Duration(12 * time.Hour)}, ""},
		{"off", "[ui]\nenabled = false\n", UI{SessionTTL: Duration(12 * time.Hour)}, ""},
		{"ttl", "[ui]\nsession_ttl = \"30m\"\n", UI{Enabled: true, SessionTTL: Duration(30 * time.Minute)}, ""},
		{"ttl too short", "[ui]\nsession_ttl = \"10s\"\n", UI{}, "ui.session_ttl: 10s, want 1m0s to 720h0m0s"},
		{"ttl too long", "[ui]\nsession_ttl = \"1000h\"\n", UI{}, "ui.session_ttl: 1000h0m0s"},
		{"unknown key", "[ui]\nenable = true\n", UI{}, "enable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadText(t, tt.file)
			if checkErr(t, err, tt.wantErr) {
				return
			}
			if c.UI != tt.want {
				t.Fatalf("ui %+v, want %+v", c.UI, tt.want)
			}
		})
	}
}
