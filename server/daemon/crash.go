package daemon

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/notify"
	"github.com/slipway-dev/slipway/server/rollout"
)

// CrashEnv names the environment variable that arms one crash point of the
// server, for tests that kill slipway-server at every rollout transition:
//
//	SLIPWAY_SERVER_CRASH_AT=<point>[:<n>]
//
// The server SIGKILLs itself the n-th time (default 1) a rollout reaches
// the transition <point> (one of rollout.CrashPoints), right after the
// transition is committed to the store, or the webhook delivery step
// <point> (one of notify.CrashPoints). Unset or empty, nothing happens.
// Never set it on a production server.
const CrashEnv = "SLIPWAY_SERVER_CRASH_AT"

// crashHook parses a SLIPWAY_SERVER_CRASH_AT value into the rollout
// machine's Crash hook (nil for "": no hook).
func crashHook(value string, log zerolog.Logger) (rollout.CrashHook, error) {
	if value == "" {
		return nil, nil
	}
	point, count, hasN := strings.Cut(value, ":")
	known := slices.Concat(rollout.CrashPoints, notify.CrashPoints)
	if !slices.Contains(known, point) {
		return nil, fmt.Errorf("%s=%q: unknown crash point %q (known: %s)", CrashEnv, value, point, strings.Join(known, ", "))
	}
	n := 1
	if hasN {
		var err error
		if n, err = strconv.Atoi(count); err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: the count after %q must be a whole number ≥ 1", CrashEnv, value, point+":")
		}
	}
	log.Warn().Str("crash_point", point).Int("n", n).Msg(CrashEnv + " is set: the server kills itself there (tests only)")
	// The engine and API handlers (a deploy's first step) reach points
	// from different goroutines.
	var seen atomic.Int64
	return func(p string) {
		if p != point {
			return
		}
		k := seen.Add(1)
		if k < int64(n) {
			return
		}
		log.Error().Str("crash_point", p).Int64("n", k).Int("pid", os.Getpid()).Msg(CrashEnv + " reached; SIGKILL")
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught: never returns
	}, nil
}
