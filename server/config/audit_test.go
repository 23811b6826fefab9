package config

import (
	"testing"
	"time"
)

func TestAudit(t *testing.T) {
	def := Audit{MaxEvents: 100000, MaxAge: Duration(90 * 24 * time.Hour), RefusalWindow: Duration(time.Minute), MaxStreams: 4}
	tests := []struct {
		name, file string
		want       Audit // after Load, when valid
		wantErr    string
	}{
		{"default", "", def, ""},
		{"set", "[audit]\nmax_events = 500\nmax_age = \"0s\"\nrefusal_window = \"10s\"\nmax_streams = 1\n",
			Audit{MaxEvents: 500, RefusalWindow: Duration(10 * time.Second), MaxStreams: 1}, ""},
		{"no count limit", "[audit]\nmax_events = 0\n", Audit{}, "audit.max_events: 0, want 1 to 100000000"},
		{"negative age", "[audit]\nmax_age = \"-1h\"\n", Audit{}, "audit.max_age: -1h0m0s"},
		{"window too short", "[audit]\nrefusal_window = \"100ms\"\n", Audit{}, "audit.refusal_window: 100ms, want 1s to 1h"},
		{"window too long", "[audit]\nrefusal_window = \"2h\"\n", Audit{}, "audit.refusal_window: 2h0m0s"},
		{"no streams", "[audit]\nmax_streams = 0\n", Audit{}, "audit.max_streams: 0, want 1 to 1000"},
		{"unknown key", "[audit]\nmax_event = 5\n", Audit{}, "max_event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadText(t, tt.file)
			if checkErr(t, err, tt.wantErr) {
				return
			}
			if c.Audit != tt.want {
				t.Fatalf("audit %+v, want %+v", c.Audit, tt.want)
			}
		})
	}
}
