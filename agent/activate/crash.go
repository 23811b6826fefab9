package activate

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/state"
)

// CrashEnv names the environment variable that arms one crash point, for
// tests that kill the agent at every step of a switch, revert, rollback,
// recovery or GC:
//
//	SLIPWAY_CRASH_AT=<point>[:<n>]
//
// The agent SIGKILLs itself the n-th time (default 1) this process reaches
// the point. A point named after a database write (a journal phase, the
// commit, the quarantine, GC's record) is reached right after that write
// is committed, i.e. after the step is journaled and before its side
// effect; the other points sit between two side effects of one step (see
// CrashPoints). Unset or empty, nothing happens: the variable is read once
// when the agent's parts are built, and every point then costs one nil
// check. Never set it on a production node.
const CrashEnv = "SLIPWAY_CRASH_AT"

// Crash points, in the order a switch and its revert pass them. Those
// marked "write" follow a committed write to state.db.
const (
	CrashUnchanged      = "unchanged"      // write: "unchanged" result of re-applying the current generation
	CrashUnquarantined  = "unquarantined"  // write: quarantine lifted by --retry-quarantined; nothing staged yet
	CrashStage          = "stage"          // write: journal phase stage, generation N recorded staged; nothing on disk yet
	CrashWarned         = "warned"         // write: systemd-analyze's warnings about N's units recorded
	CrashStaged         = "staged"         // N staged on disk (units verified, closure realised); before the flip journal
	CrashRejected       = "rejected"       // write: staging failed, N recorded failed, journal cleared
	CrashFlip           = "flip"           // write: journal phase flip; before `current` moves
	CrashFlipped        = "flipped"        // `current` and secrets/current point at N; before the links
	CrashLinked         = "linked"         // unit and file links of N made, those of the old generation removed; before daemon-reload
	CrashReloaded       = "reloaded"       // daemon-reload done; before the units journal
	CrashUnits          = "units"          // write: journal phase units; before any job
	CrashStopped        = "stopped"        // removed units stopped; before restarts and starts (and the NixOS switch)
	CrashNixOSProfiled  = "nixos-profiled" // NixOS: N's toplevel realised, the system profile (boot default) not moved; before its switch-to-configuration test
	CrashVerify         = "verify"         // write: journal phase verify, every job done; before the health checks
	CrashConfirm        = "confirm"        // write: journal phase confirm (daemon only); before asking the server
	CrashBoot           = "boot"           // write: journal phase boot (NixOS: confirmed, or verified without a server); before N's toplevel becomes the boot default
	CrashBootProfiled   = "boot-profiled"  // NixOS: the system profile points at N's toplevel; before its switch-to-configuration boot
	CrashCommit         = "commit"         // write: N committed (current, last good, result), journal cleared; before GC
	CrashRevert         = "revert"         // write: journal phase revert; before `current` moves back
	CrashRevertFlipped  = "revert-flipped" // `current` and secrets/current point back at the good generation
	CrashRevertLinked   = "revert-linked"  // links back to the good generation's; before daemon-reload
	CrashRevertLoaded   = "revert-reloaded"
	CrashRevertStopped  = "revert-stopped"        // units of the failed generation stopped; before the good ones restart
	CrashRevertProfiled = "revert-nixos-profiled" // NixOS: the system profile on the good system (where the boot default never moved, it was); before its switch-to-configuration
	CrashRevertStarted  = "revert-started"        // the good generation's units started, failed secrets removed; before its health check
	CrashReverted       = "reverted"              // write: failed generation quarantined (not an interrupted rollback's target), result recorded, journal cleared
	CrashDiscarded      = "discarded"             // write: recover discarded a staging interrupted by a crash, journal cleared
	CrashGCRecorded     = "gc-recorded"           // write: generations to collect recorded collected; before their directories go
	CrashGCRemoved      = "gc-removed"            // their directories removed; before blobs and secrets are pruned
)

// CrashPoints lists every crash point, in the order of the constants
// above. A test iterates over it; TestEveryJournalWriteHasACrashPoint
// keeps it complete.
var CrashPoints = []string{
	CrashUnchanged, CrashUnquarantined, CrashStage, CrashWarned, CrashStaged, CrashRejected,
	CrashFlip, CrashFlipped, CrashLinked, CrashReloaded, CrashUnits, CrashStopped, CrashNixOSProfiled, CrashVerify, CrashConfirm, CrashBoot, CrashBootProfiled, CrashCommit,
	CrashRevert, CrashRevertFlipped, CrashRevertLinked, CrashRevertLoaded, CrashRevertStopped, CrashRevertProfiled, CrashRevertStarted, CrashReverted,
	CrashDiscarded, CrashGCRecorded, CrashGCRemoved,
}

// CrashAt is a parsed SLIPWAY_CRASH_AT: kill the process the N-th time it
// reaches Point.
type CrashAt struct {
	Point string
	N     int
}

// ParseCrashAt parses a SLIPWAY_CRASH_AT value; "" is no crash point (nil).
func ParseCrashAt(s string) (*CrashAt, error) {
	if s == "" {
		return nil, nil
	}
	p, count, hasN := strings.Cut(s, ":")
	c := &CrashAt{Point: p, N: 1}
	if !slices.Contains(CrashPoints, p) {
		return nil, fmt.Errorf("%s=%q: unknown crash point %q (known: %s)", CrashEnv, s, p, strings.Join(CrashPoints, ", "))
	}
	if hasN {
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: the count after %q must be a whole number ≥ 1", CrashEnv, s, p+":")
		}
		c.N = n
	}
	return c, nil
}

// CrashFromEnv reads SLIPWAY_CRASH_AT through getenv (os.Getenv).
func CrashFromEnv(getenv func(string) string) (*CrashAt, error) {
	return ParseCrashAt(getenv(CrashEnv))
}

// killer returns the hook that SIGKILLs this process the c.N-th time it
// reaches c.Point (nil when c is nil: no hook). Points are reached from
// the goroutine running the operation, one at a time.
func killer(c *CrashAt, log zerolog.Logger) func(point string) {
	if c == nil {
		return nil
	}
	seen := 0
	return func(point string) {
		if point != c.Point {
			return
		}
		seen++
		if seen < c.N {
			return
		}
		log.Error().Str("crash_point", point).Int("n", seen).Int("pid", os.Getpid()).Msg(CrashEnv + " reached; SIGKILL")
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught: never returns
	}
}

// crashPoint runs the crash hook, if one is armed, at point.
func (a *Switcher) crashPoint(point string) {
	if a.crash != nil {
		a.crash(point)
	}
}

// NixOSCrashPoints are the crash points only a switch involving a NixOS
// toplevel reaches (the boot phase, and the points inside the driver).
var NixOSCrashPoints = []string{CrashNixOSProfiled, CrashBoot, CrashBootProfiled, CrashRevertProfiled}

// activationHooker is a NixOS driver that runs a hook right before each
// switch-to-configuration, after any move of the system profile;
// *nixos.Driver is one.
type activationHooker interface {
	BeforeActivation(func())
}

// hookNixOS hangs the NixOS crash points on the driver when a crash point
// is armed (and takes a hook off it otherwise). Which point it is depends
// on the step calling the driver (switchSystem and setBootDefault set
// nixosPoint before they call it).
func (a *Switcher) hookNixOS() {
	h, ok := a.cfg.NixOS.(activationHooker)
	switch {
	case !ok:
	case a.crash == nil:
		h.BeforeActivation(nil)
	default:
		h.BeforeActivation(func() { a.crashPoint(a.nixosPoint) })
	}
}

// step commits fn to state.db and then reaches crash point `point`: every
// write of this package goes through it (TestEveryJournalWriteHasACrashPoint).
func (a *Switcher) step(point string, fn func(tx *state.Tx) error) error {
	if err := a.db.Update(fn); err != nil {
		return err
	}
	a.crashPoint(point)
	return nil
}
