package daemon

import (
	"context"
	"fmt"
	"testing"

	"github.com/slipway-dev/slipway/agent/activate"
)

// TestRefusedUnitsArePermanent: a generation whose unit files the node's
// systemd-analyze refuses is rejected (reported failed, not retried until an
// operator retry), not retried with a backoff like a transient failure.
func TestRefusedUnitsArePermanent(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("refusing generation 2: %w: x.service: Command /x is not executable", activate.ErrUnitsRefused), true},
		{fmt.Errorf("stage: %w", context.DeadlineExceeded), false},
	} {
		if got := permanent(tt.err); got != tt.want {
			t.Errorf("permanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
