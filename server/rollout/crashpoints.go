package rollout

// Rollout transitions and operator actions on rollouts, as named to the
// Crash hook right after each one is committed (together with its
// effects: the desired generations it published, its audit events). Tests
// kill the server at each of them (server/daemon's
// SLIPWAY_SERVER_CRASH_AT) and check that the restarted server resumes
// the rollout without publishing a node twice or skipping one.
// TestCrashPointsAreListed keeps the list complete.
const (
	CrashObserve           = "observe"            // a node's state in the rollout changed (healthy, failed, published when back)
	CrashWaveStart         = "wave-start"         // a wave started: its nodes' desired generations published
	CrashWaveAnalysing     = "wave-analysing"     // the canaries are healthy; the analysis window starts
	CrashAwaitingPromotion = "awaiting-promotion" // the canaries are healthy; the rollout waits for a promote
	CrashAnalysisPassed    = "analysis-passed"    // the analysis window passed; promoted automatically
	CrashWavePassed        = "wave-passed"        // a wave (not the last) passed
	CrashSucceeded         = "succeeded"          // the last wave passed: the rollout succeeded
	CrashHalted            = "halted"             // failures above max_failures: failed, or reverted with auto_revert
	CrashWindowWait        = "window-wait"        // the next wave waits for a maintenance window

	// Operator actions, committed before the server answers them.
	CrashPause    = "pause"
	CrashResume   = "resume"
	CrashPromote  = "promote"
	CrashAbort    = "abort"
	CrashRollback = "rollback" // the rollback rollout created, before its first step
	CrashRetry    = "retry"    // failed nodes of a rollout sent their release again
)

// CrashPoints lists every point the Crash hook is called with: the
// transitions in the order a canary rollout passes them, then the
// operator actions.
var CrashPoints = []string{
	CrashWaveStart, CrashObserve, CrashWaveAnalysing, CrashAwaitingPromotion, CrashAnalysisPassed,
	CrashWavePassed, CrashSucceeded, CrashHalted, CrashWindowWait,
	CrashPause, CrashResume, CrashPromote, CrashAbort, CrashRollback, CrashRetry,
}

// CrashHook, when set, is called after every committed rollout transition
// with its name; tests panic in it to simulate a server killed right there.
type CrashHook func(point string)
