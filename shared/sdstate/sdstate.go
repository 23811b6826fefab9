// Package sdstate builds sd_notify state strings that need more than a
// constant (both daemons send them through go-systemd's daemon package).
package sdstate

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Reloading is the state a Type=notify service sends when it starts a
// reload: RELOADING=1 with MONOTONIC_USEC, which systemd 253+ requires and
// older versions ignore.
func Reloading() string {
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec())
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}
