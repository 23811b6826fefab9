// Package ctxsleep is a sleep that a context ends early.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends, and reports whether d passed (false
// when ctx ended first). A d of zero or less returns at once, true unless
// ctx has ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
