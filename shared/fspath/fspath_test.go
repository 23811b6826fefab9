package fspath

import "testing"

func TestWithin(t *testing.T) {
	tests := []struct {
		p, dir string
		want   bool
	}{
		{"/var/lib/slipway", "/var/lib/slipway", true},
		{"/var/lib/slipway/generations/1", "/var/lib/slipway", true},
		{"/var/lib/slipway/x", "/var/lib/slipway/", true},
		{"/var/lib/slipway-other", "/var/lib/slipway", false},
		{"/var/lib", "/var/lib/slipway", false},
		{"/etc/foo", "/", true},
	}
	for _, tt := range tests {
		if got := Within(tt.p, tt.dir); got != tt.want {
			t.Errorf("Within(%q, %q) = %v, want %v", tt.p, tt.dir, got, tt.want)
		}
	}
}
