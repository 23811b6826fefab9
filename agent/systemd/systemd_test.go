package systemd

import (
	"errors"
	"fmt"
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestStopError(t *testing.T) {
	notLoaded := dbus.Error{Name: noSuchUnit, Body: []any{"Unit x.service not loaded."}}
	denied := dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied", Body: []any{"Access denied"}}
	job := &JobError{Op: "stop", Unit: "x.service", Result: "timeout"}
	for _, tc := range []struct {
		name          string
		in            error
		wantNotLoaded bool
		wantNil       bool
	}{
		{name: "done", in: nil, wantNil: true},
		{name: "not loaded", in: fmt.Errorf("stop x.service: %w", notLoaded), wantNotLoaded: true},
		{name: "access denied", in: fmt.Errorf("stop x.service: %w", denied)},
		{name: "job timed out", in: job},
		{name: "bus gone", in: errors.New("stop x.service: connection closed")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := stopError(tc.in)
			if tc.wantNil != (got == nil) {
				t.Fatalf("stopError(%v) = %v", tc.in, got)
			}
			if errors.Is(got, ErrNotLoaded) != tc.wantNotLoaded {
				t.Errorf("stopError(%v) = %v; errors.Is ErrNotLoaded = %v, want %v", tc.in, got, !tc.wantNotLoaded, tc.wantNotLoaded)
			}
			if tc.in != nil && !errors.Is(got, tc.in) {
				t.Errorf("stopError(%v) = %v does not wrap the original error", tc.in, got)
			}
		})
	}
}
