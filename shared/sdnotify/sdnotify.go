// Package sdnotify tells systemd how a Type=notify daemon is doing: both
// daemons send their states (READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1)
// through Notifier, at the watchdog period WatchdogPeriod reads.
package sdnotify

import (
	"fmt"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Notifier returns a func that sends a state to systemd (sd_notify; a no-op
// outside systemd). A failure to send is logged as a warning naming the
// state's first line.
func Notifier(log zerolog.Logger) func(state string) {
	return func(state string) {
		if _, err := sddaemon.SdNotify(false, state); err != nil {
			log.Warn().Err(err).Str("state", strings.SplitN(state, "\n", 2)[0]).Msg("sd_notify failed")
		}
	}
}

// WatchdogPeriod is the watchdog period systemd set for this process
// (WatchdogSec), 0 when there is none.
func WatchdogPeriod() time.Duration {
	w, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return w
}

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
