// Package activate switches a node between generations: it plans the
// switch, stages the new generation, flips `current` and the unit links,
// drives systemd, verifies health, commits, and reverts to the last good
// generation on any failure, quarantining the failed one. It also recovers
// a switch interrupted by a crash, rolls back on request, and collects
// old generations. Secrets (flip) and NixOS systems (switchSystem) switch
// with the generation.
//
// Every step is written to the journal (agent/state) before its side
// effect. A manifest is validated and the switch planned (including the
// ownership checks) before anything on the node changes; the agent never
// overwrites or shadows a unit file or path it did not create, and never
// evaluates Nix.
package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/config"
	"github.com/slipway-dev/slipway/agent/health"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/generation"
)

// Sentinel errors returned by Apply and Rollback.
var (
	// ErrQuarantined: the manifest failed on this node before; retry explicitly.
	ErrQuarantined = errors.New("generation is quarantined on this node")
	// ErrReverted: the switch failed and the node went back to its last good generation.
	ErrReverted = errors.New("switch failed; reverted")
	// ErrRevertFailed: the switch failed and so did the revert; the node needs attention.
	ErrRevertFailed = errors.New("switch failed and the revert failed too")
	// ErrNoRollbackTarget: there is no earlier good generation on disk.
	ErrNoRollbackTarget = errors.New("no earlier good generation to roll back to")
)

// systemdConn is the part of systemd the switch needs; *systemd.Conn has it.
type systemdConn interface {
	Reload(ctx context.Context) error
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	TryRestart(ctx context.Context, unit string) error
	ResetFailed(ctx context.Context, unit string) error
	Status(ctx context.Context, unit string) (systemd.Status, error)
}

// nixosDriver switches NixOS system closures (generations with a `nixos`
// toplevel); *nixos.Driver has it.
type nixosDriver interface {
	Realise(ctx context.Context, n generation.NixOS) error
	Test(ctx context.Context, toplevel string) error
	SetBootDefault(ctx context.Context, toplevel, action string) error
	Revert(ctx context.Context, profileGeneration int) error
	Restore(ctx context.Context, n generation.NixOS) error
	Current() (profileGeneration int, toplevel string, err error)
	GC(ctx context.Context, keep int) error
}

// verifier checks health after a switch; *health.Verifier has it.
type verifier interface {
	Verify(ctx context.Context, s health.Spec) error
}

// Config of the switcher. Zero fields take the defaults of config.Settings.
type Config struct {
	Layout       stage.Layout
	UnitDir      string        // where unit links go (/etc/systemd/system)
	LinkPrefixes []string      // where `links` may point (/etc)
	Keep         int           // good generations GC keeps besides current and last good (gcKeep)
	JobTimeout   time.Duration // bound on one batch of systemd jobs
	// NixOS switches generations that carry a NixOS toplevel; nil: such
	// generations are rejected (stage.ErrNixOSUnsupported).
	NixOS nixosDriver
	// Units verifies a staged generation's unit files before the flip
	// (*unitverify.Verifier); nil: not verified.
	Units unitVerifier
	// Crash arms a crash point (tests only: SLIPWAY_CRASH_AT, CrashEnv);
	// nil: none.
	Crash *CrashAt
}

// Switcher performs switches on one node.
type Switcher struct {
	cfg    Config
	db     *state.DB
	stager *stage.Stager
	sd     systemdConn
	verify verifier
	log    zerolog.Logger
	now    func() time.Time
	crash  func(point string) // the armed crash point's hook; nil: none
	// nixosPoint is the crash point the NixOS driver reaches right before
	// a switch-to-configuration: CrashNixOSProfiled in a switch,
	// CrashRevertProfiled in a revert, CrashBootProfiled when it makes a
	// confirmed toplevel the boot default.
	nixosPoint string
}

// New returns a Switcher. v may be nil: a health.Verifier probing units
// through sd is used.
func New(cfg Config, db *state.DB, stager *stage.Stager, sd systemdConn, v verifier, log zerolog.Logger) *Switcher {
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = config.DefaultJobTimeout
	}
	if cfg.Keep <= 0 {
		cfg.Keep = config.DefaultKeepGenerations
	}
	a := &Switcher{cfg: cfg, db: db, stager: stager, sd: sd, verify: v, log: log.With().Str("component", "activate").Logger(), now: time.Now}
	if a.verify == nil {
		a.verify = &health.Verifier{Probe: Probe(sd), Log: log}
	}
	a.crash = killer(cfg.Crash, a.log)
	a.hookNixOS()
	return a
}

// Probe adapts systemd unit state to a health probe: active (or a oneshot
// that exited successfully) is healthy, failed fails at once.
func Probe(sd interface {
	Status(ctx context.Context, unit string) (systemd.Status, error)
}) health.UnitProbe {
	return func(ctx context.Context, unit string) (health.UnitHealth, error) {
		st, err := sd.Status(ctx, unit)
		if err != nil {
			return health.UnitHealth{}, err
		}
		h := health.UnitHealth{State: st.ActiveState + " (" + st.SubState + ")"}
		if st.Result != "" && st.Result != "success" {
			h.State += " result=" + st.Result
		}
		if st.LoadState != "loaded" {
			h.State = "load state " + st.LoadState
			h.Failed = st.LoadState == "error" || st.LoadState == "bad-setting"
			return h, nil
		}
		switch st.ActiveState {
		case "active", "reloading":
			h.Healthy = true
		case "failed":
			h.Failed = true
		case "inactive":
			h.Healthy = st.Type == "oneshot" && st.Result == "success"
		}
		return h, nil
	}
}

// Outcome describes what an operation did.
type Outcome struct {
	Op       string                   `json:"op"`      // switch, rollback, recover
	Outcome  string                   `json:"outcome"` // switched, unchanged, reverted, revert-failed, rejected, nothing-to-recover, discarded-staging, rollback-undone, boot-default-failed
	From     int                      `json:"from"`
	To       int                      `json:"to"`
	ID       string                   `json:"id,omitempty"`
	Reason   string                   `json:"reason,omitempty"`
	Plan     Plan                     `json:"plan"`
	Started  []string                 `json:"started,omitempty"` // recover: units of current started because they were not running
	Stage    stage.Stats              `json:"stage"`
	Warnings []string                 `json:"warnings,omitempty"` // what systemd-analyze verify said about the units, switched anyway
	Timings  map[string]time.Duration `json:"timings_ns"`
	Duration time.Duration            `json:"duration_ns"`
}

func (o *Outcome) time(phase string, start time.Time) {
	if o.Timings == nil {
		o.Timings = map[string]time.Duration{}
	}
	o.Timings[phase] += time.Since(start)
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	Source           string           // where the manifest came from, for the history
	Blobs            stage.BlobSource // where missing artifacts come from
	RetryQuarantined bool             // lift the quarantine of this manifest and try again
	// Confirm, when set, runs after the generation verified healthy and
	// must return nil within the manifest's confirm_timeout (default 30s):
	// the server's confirm. An error or the timeout reverts the switch (the
	// "magic rollback": a generation that cut the node off from its server
	// does not stay).
	Confirm func(ctx context.Context, number int, id string) error
}

// Apply switches the node to manifest m: validate, plan, stage, switch,
// verify; commit on success, revert on failure (the error then wraps
// ErrReverted or ErrRevertFailed and the outcome says why).
func (a *Switcher) Apply(ctx context.Context, m *generation.Manifest, opts ApplyOptions) (Outcome, error) {
	start := time.Now()
	out := Outcome{Op: "switch"}
	if err := m.Validate(generation.ValidateOptions{LinkPrefixes: a.cfg.LinkPrefixes}); err != nil {
		return out, err
	}
	id, err := m.ID()
	if err != nil {
		return out, err
	}
	out.ID = id
	snap, unlock, err := a.begin(ctx)
	if err != nil {
		return out, err
	}
	defer unlock()
	from := snap.Meta.Current
	out.From, out.To = from, from
	if _, ok := snap.Settled(id); ok {
		return a.unchanged(out, m, start)
	}
	if err := a.liftQuarantine(snap, id, opts.RetryQuarantined); err != nil {
		return out, err
	}
	fromM, err := a.stager.Manifest(from)
	if err != nil {
		return out, err
	}
	out.Plan = diff(fromM, m)
	if err := a.checkOwnership(ctx, m); err != nil {
		return out, fmt.Errorf("refusing to switch: %w", err)
	}
	if m.NixOS != nil && a.cfg.NixOS == nil {
		return out, fmt.Errorf("refusing to switch: nixos toplevel %s: %w", m.NixOS.Toplevel, stage.ErrNixOSUnsupported)
	}
	op := switchOp{name: "switch", from: from, fromM: fromM, toM: m, start: start, confirm: opts.Confirm, out: &out}
	if err := a.stageNew(ctx, &op, opts); err != nil {
		return out, err
	}
	a.crashPoint(CrashStaged)
	return a.switchTo(ctx, op)
}

// unchanged ends an Apply of the generation the node already runs (as
// current and last good): its secrets are restored if a reboot lost them,
// and the result recorded.
func (a *Switcher) unchanged(out Outcome, m *generation.Manifest, start time.Time) (Outcome, error) {
	out.Outcome = "unchanged"
	out.Duration = time.Since(start)
	a.log.Info().Int("generation", out.From).Str("id", out.ID).Msg("already on this generation; nothing to do")
	if err := a.restoreSecrets(out.From, m); err != nil {
		return out, err
	}
	return out, a.step(CrashUnchanged, func(tx *state.Tx) error { return tx.PutResult(a.result(out, "")) })
}

// liftQuarantine refuses a manifest quarantined on this node (ErrQuarantined)
// unless retry is set; then it lifts the quarantine.
func (a *Switcher) liftQuarantine(snap state.Snapshot, id string, retry bool) error {
	q, ok := snap.Quarantined(id)
	if !ok {
		return nil
	}
	if !retry {
		return fmt.Errorf("%w: %s failed as generation %d: %s", ErrQuarantined, id, q.Number, q.Reason)
	}
	if err := a.step(CrashUnquarantined, func(tx *state.Tx) error { return tx.Unquarantine(id) }); err != nil {
		return err
	}
	a.log.Warn().Str("id", id).Msg("quarantine lifted by operator retry")
	return nil
}

// stageNew numbers op's new generation (op.to), stages it (the node is
// untouched until the flip), realises its NixOS closure and verifies its
// units. A generation that fails is marked failed and the operation
// recorded as rejected.
func (a *Switcher) stageNew(ctx context.Context, op *switchOp, opts ApplyOptions) error {
	out, m := op.out, op.toM
	var n int
	err := a.step(CrashStage, func(tx *state.Tx) error {
		n = tx.NextNumber()
		if err := tx.PutGeneration(state.Generation{Number: n, ID: out.ID, Name: m.Name, Source: opts.Source, Status: state.StatusStaged, CreatedAt: a.now()}); err != nil {
			return err
		}
		return tx.PutJournal(state.Journal{Op: "switch", From: op.from, To: n, Phase: state.PhaseStage, StartedAt: a.now(), PID: os.Getpid()})
	})
	if err != nil {
		return err
	}
	op.to, out.To = n, n
	a.log.Info().Int("generation", n).Str("id", out.ID).Int("units", len(m.Units)).Int("artifacts", len(m.Artifacts)).
		Strs("added", out.Plan.Added).Strs("changed", out.Plan.Changed).Strs("removed", out.Plan.Removed).
		Int("unchanged", len(out.Plan.Unchanged)).Msg("staging generation")
	t := time.Now()
	a.stager.Blobs = opts.Blobs
	out.Stage, err = a.stager.Stage(ctx, n, m)
	out.time("stage", t)
	if err == nil && m.NixOS != nil {
		// Realising only adds to the Nix store: the node still runs what
		// it ran.
		t = time.Now()
		a.log.Info().Int("generation", n).Str("toplevel", m.NixOS.Toplevel).Strs("substituters", m.NixOS.Substituters).Msg("realising the NixOS closure")
		if err = a.cfg.NixOS.Realise(ctx, *m.NixOS); err != nil {
			_ = a.stager.Remove(n)
			err = fmt.Errorf("stage generation %d: %w", n, err)
		}
		out.time("realise", t)
	}
	if err == nil {
		err = a.verifyStaged(ctx, n, m, out)
	}
	if err != nil {
		return errors.Join(err, a.rejectStaged(op, err))
	}
	return nil
}

// rejectStaged records that op's staged generation failed before the flip.
func (a *Switcher) rejectStaged(op *switchOp, cause error) error {
	out := op.out
	return a.step(CrashRejected, func(tx *state.Tx) error {
		if err := tx.SetGenerationStatus(op.to, state.StatusFailed, cause.Error()); err != nil {
			return err
		}
		out.Outcome, out.Reason, out.Duration = "rejected", cause.Error(), time.Since(op.start)
		if err := tx.PutResult(a.result(*out, "")); err != nil {
			return err
		}
		return tx.ClearJournal()
	})
}

func (a *Switcher) result(o Outcome, revertErr string) state.Result {
	r := state.Result{Op: o.Op, Outcome: o.Outcome, From: o.From, To: o.To, Reason: o.Reason, Warnings: o.Warnings, At: a.now(), Duration: o.Duration}
	if revertErr != "" {
		r.Reason += "; revert: " + revertErr
	}
	return r
}

// specFor builds the health spec of m. A revert checks the units and the
// checks but does not wait for min_healthy_time: the generation was
// healthy before and the node must be back fast.
func specFor(m *generation.Manifest, revert bool) health.Spec {
	s := health.Spec{
		Units:           startable(m),
		Checks:          m.Health.Checks,
		MinHealthyTime:  m.Health.MinHealthyTime.Or(generation.DefaultMinHealthyTime),
		HealthyDeadline: m.Health.HealthyDeadline.Or(generation.DefaultHealthyDeadline),
	}
	if revert {
		s.MinHealthyTime = 0
	}
	return s
}

// begin starts an operation that may switch: it takes the switch lock,
// finishes a switch a crash interrupted, and reads the state. The caller
// runs unlock when done.
func (a *Switcher) begin(ctx context.Context) (state.Snapshot, func(), error) {
	unlock, err := a.lock()
	if err != nil {
		return state.Snapshot{}, nil, err
	}
	if _, err := a.recover(ctx); err != nil {
		unlock()
		return state.Snapshot{}, nil, err
	}
	snap, err := a.db.Snapshot()
	if err != nil {
		unlock()
		return state.Snapshot{}, nil, err
	}
	return snap, unlock, nil
}

// lock takes the agent's switch lock; a second switching process fails
// at once instead of waiting.
func (a *Switcher) lock() (func(), error) {
	if err := os.MkdirAll(a.cfg.Layout.Dir, 0o755); err != nil {
		return nil, err
	}
	return flock(a.cfg.Layout.Lock())
}
