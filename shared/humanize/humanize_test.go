package humanize

import (
	"testing"
	"time"
)

func TestShortID(t *testing.T) {
	for in, want := range map[string]string{
		"": "-", "sha256-0123456789abcdef": "0123456789ab", "sha256-0123": "sha256-0123", "r1-web": "r1-web",
	} {
		if got := ShortID(in); got != want {
			t.Errorf("ShortID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLabels(t *testing.T) {
	tests := []struct {
		in   map[string]string
		want string
	}{
		{nil, "-"},
		{map[string]string{"role": "web"}, "role=web"},
		{map[string]string{"role": "web", "env": "prod", "a": ""}, "a=,env=prod,role=web"},
	}
	for _, tt := range tests {
		if got := Labels(tt.in); got != tt.want {
			t.Errorf("Labels(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(time.Second), "just now"}, // a clock a little ahead
		{now.Add(-999 * time.Millisecond), "just now"},
		{now.Add(-12 * time.Second), "12s ago"},
		{now.Add(-5*time.Minute - 59*time.Second), "5m ago"},
		{now.Add(-47 * time.Hour), "47h ago"},
		{now.Add(-72 * time.Hour), "3d ago"},
	}
	for _, tt := range tests {
		if got := Ago(now, tt.t); got != tt.want {
			t.Errorf("Ago(%s) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestIn(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{now.Add(-time.Minute), "now"},
		{now.Add(999 * time.Millisecond), "now"},
		{now.Add(12 * time.Second), "in 12s"},
		{now.Add(5*time.Minute + 59*time.Second), "in 5m"},
		{now.Add(47 * time.Hour), "in 47h"},
		{now.Add(72 * time.Hour), "in 3d"},
	} {
		if got := In(now, tt.t); got != tt.want {
			t.Errorf("In(%s) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {12_900_000, "12.3 MiB"}, {16 << 30, "16.0 GiB"},
	} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestLimit(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"}, {1000, "1000 bytes"}, {1 << 20, "1 MiB"}, {3<<20 + 1, "3145729 bytes"}, {1 << 30, "1 GiB"}, {3 << 29, "1536 MiB"},
	} {
		if got := Limit(tt.n); got != tt.want {
			t.Errorf("Limit(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
