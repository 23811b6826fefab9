// Package activate switches a node between generations: it plans the
// switch, stages the new generation, flips `current` and the unit links,
// drives systemd, verifies health, commits, and reverts to the last good
// generation on any failure, quarantining the failed one. It also recovers
// a switch interrupted by a crash, rolls back on request, and collects
// old generations.
//
// Every step is written to the journal (agent/state) before its side
// effect. A manifest is validated and the switch planned (including the
// ownership checks) before anything on the node changes; the agent never
// overwrites or shadows a unit file or path it did not create. Tests kill
// the agent at each step through SLIPWAY_CRASH_AT (CrashEnv, CrashPoints);
// without it the crash points are inert.
//
// Secrets (decrypted by agent/stage into <secrets_dir>/<N>/) switch with
// the generation: the flip points <secrets_dir>/current at N right after
// the state directory's `current` (and removes it for a generation without
// secrets), a revert flips it back and deletes the failed generation's
// secrets, GC keeps only the current generation's secrets decrypted, and a
// switch to a generation whose secrets are not on disk (a revert or
// rollback after a reboot or GC) decrypts them again first. Recover, run at
// every start of the agent, decrypts the current generation's secrets again
// when a reboot emptied the tmpfs. A unit whose text names a secret
// ("secrets/current/<name>" or "secrets/<name>", or the name in a
// LoadCredential=/SetCredential= line)
// restarts when that secret's ciphertext, owner, group or mode changed —
// once per switch however many of its secrets changed.
//
// A generation with a NixOS toplevel (Config.NixOS, agent/nixos) goes
// through the same journal, health checks, confirm and quarantine: staging
// also realises its closure (signatures required; the node runs what it
// ran until the flip); the switch sets the system profile and runs
// switch-to-configuration after the previous generation's units stopped;
// a revert goes back to the profile generation that has the previous
// toplevel, or — from a toplevel to a generation without one — to the
// profile generation the node ran before the switch, which the journal
// records before the flip (so Recover can too). The agent never evaluates
// Nix.
package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/health"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/atomicfile"
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
	Switch(ctx context.Context, toplevel string) (prev int, err error)
	Revert(ctx context.Context, profileGeneration int) error
	Restore(ctx context.Context, n generation.NixOS) error
	Current() (profileGeneration int, toplevel string, err error)
	GC(ctx context.Context, keep int) error
}

// verifier checks health after a switch; *health.Verifier has it.
type verifier interface {
	Verify(ctx context.Context, s health.Spec) error
}

// Config of the switcher. Zero fields take the defaults of config.Agent.
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

// Agent performs switches on one node.
type Agent struct {
	cfg    Config
	db     *state.DB
	stager *stage.Stager
	sd     systemdConn
	verify verifier
	log    zerolog.Logger
	now    func() time.Time
	crash  func(point string) // the armed crash point's hook; nil: none
	// nixosPoint is the crash point the NixOS driver reaches when it moves
	// the system profile: CrashNixOSProfiled, or CrashRevertProfiled
	// during a revert.
	nixosPoint string
}

// New returns an Agent. v may be nil: a health.Verifier probing units
// through sd is used.
func New(cfg Config, db *state.DB, stager *stage.Stager, sd systemdConn, v verifier, log zerolog.Logger) *Agent {
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 3 * time.Minute
	}
	a := &Agent{cfg: cfg, db: db, stager: stager, sd: sd, verify: v, log: log.With().Str("component", "activate").Logger(), now: time.Now}
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
	Outcome  string                   `json:"outcome"` // switched, unchanged, reverted, revert-failed, rejected, nothing-to-recover, discarded-staging, rollback-undone
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
func (a *Agent) Apply(ctx context.Context, m *generation.Manifest, opts ApplyOptions) (Outcome, error) {
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
	if cur, err := snap.Generation(from); err == nil && cur.ID == id && from == snap.Meta.LastGood {
		out.Outcome = "unchanged"
		out.Duration = time.Since(start)
		a.log.Info().Int("generation", from).Str("id", id).Msg("already on this generation; nothing to do")
		if err := a.restoreSecrets(from, m); err != nil {
			return out, err
		}
		return out, a.step(CrashUnchanged, func(tx *state.Tx) error { return tx.PutResult(a.result(out, "")) })
	}
	if q, ok := snap.Quarantined(id); ok {
		if !opts.RetryQuarantined {
			return out, fmt.Errorf("%w: %s failed as generation %d: %s", ErrQuarantined, id, q.Number, q.Reason)
		}
		if err := a.step(CrashUnquarantined, func(tx *state.Tx) error { return tx.Unquarantine(id) }); err != nil {
			return out, err
		}
		a.log.Warn().Str("id", id).Msg("quarantine lifted by operator retry")
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

	// Stage: the node is untouched until the flip.
	var n int
	err = a.step(CrashStage, func(tx *state.Tx) error {
		n = tx.NextNumber()
		if err := tx.PutGeneration(state.Generation{Number: n, ID: id, Name: m.Name, Source: opts.Source, Status: state.StatusStaged, CreatedAt: a.now()}); err != nil {
			return err
		}
		return tx.PutJournal(state.Journal{Op: "switch", From: from, To: n, Phase: state.PhaseStage, StartedAt: a.now(), PID: os.Getpid()})
	})
	if err != nil {
		return out, err
	}
	out.To = n
	a.log.Info().Int("generation", n).Str("id", id).Int("units", len(m.Units)).Int("artifacts", len(m.Artifacts)).
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
		err = a.verifyStaged(ctx, n, m, &out)
	}
	if err != nil {
		uerr := a.step(CrashRejected, func(tx *state.Tx) error {
			if err := tx.SetGenerationStatus(n, state.StatusFailed, err.Error()); err != nil {
				return err
			}
			out.Outcome, out.Reason, out.Duration = "rejected", err.Error(), time.Since(start)
			if err := tx.PutResult(a.result(out, "")); err != nil {
				return err
			}
			return tx.ClearJournal()
		})
		return out, errors.Join(err, uerr)
	}
	a.crashPoint(CrashStaged)
	return a.switchTo(ctx, &out, "switch", from, fromM, n, m, start, opts.Confirm)
}

// switchTo moves the node from generation `from` (its last good) to n and
// either commits n or reverts to `from`.
func (a *Agent) switchTo(ctx context.Context, out *Outcome, op string, from int, fromM *generation.Manifest, n int, m *generation.Manifest, start time.Time, confirm func(context.Context, int, string) error) (Outcome, error) {
	if (m.NixOS != nil || fromM.NixOS != nil) && a.cfg.NixOS == nil {
		return *out, fmt.Errorf("%s to generation %d: nixos: %w", op, n, stage.ErrNixOSUnsupported)
	}
	profile := a.systemProfile()
	setPhase := func(p string) error { // p is its crash point too
		return a.step(p, func(tx *state.Tx) error {
			return tx.PutJournal(state.Journal{Op: op, From: from, To: n, Phase: p, NixOSProfile: profile, StartedAt: a.now(), PID: os.Getpid()})
		})
	}
	if err := setPhase(state.PhaseFlip); err != nil {
		return *out, err
	}
	t := time.Now()
	err := a.transition(ctx, fromM, m, n, false, profile, func() error { return setPhase(state.PhaseUnits) })
	out.time("switch", t)
	if err == nil {
		if err = setPhase(state.PhaseVerify); err == nil {
			t = time.Now()
			a.log.Info().Int("generation", n).Dur("min_healthy_time", m.Health.MinHealthyTime.Or(generation.DefaultMinHealthyTime)).
				Dur("healthy_deadline", m.Health.HealthyDeadline.Or(generation.DefaultHealthyDeadline)).Msg("verifying health")
			err = a.verify.Verify(ctx, specFor(m, false))
			out.time("verify", t)
		}
	}
	if err == nil && confirm != nil {
		if err = setPhase(state.PhaseConfirm); err == nil {
			t = time.Now()
			timeout := m.ConfirmTimeout.Or(generation.DefaultConfirmTimeout)
			a.log.Info().Int("generation", n).Dur("confirm_timeout", timeout).Msg("healthy; waiting for the server's confirm")
			cctx, cancel := context.WithTimeout(ctx, timeout)
			err = confirm(cctx, n, out.ID)
			cancel()
			out.time("confirm", t)
			if err != nil {
				err = fmt.Errorf("no confirm from the server within confirm_timeout %s: %w", timeout, err)
			}
		}
	}
	if err != nil {
		return a.revert(ctx, out, undo{op: op, failed: n, failedM: m, good: from, goodM: fromM, profile: profile}, err, start)
	}
	// Commit.
	err = a.step(CrashCommit, func(tx *state.Tx) error {
		g, err := tx.Generation(n)
		if err != nil {
			return err
		}
		g.Status, g.Reason, g.SwitchedAt = state.StatusGood, "", a.now()
		if err := tx.PutGeneration(g); err != nil {
			return err
		}
		if err := tx.PutMeta(state.Meta{Current: n, LastGood: n}); err != nil {
			return err
		}
		out.Outcome, out.Duration = "switched", time.Since(start)
		if err := tx.PutResult(a.result(*out, "")); err != nil {
			return err
		}
		return tx.ClearJournal()
	})
	if err != nil {
		return *out, err
	}
	a.log.Info().Int("generation", n).Dur("took", out.Duration).Msg("switched; generation is healthy and committed")
	if _, err := a.gc(); err != nil {
		a.log.Warn().Err(err).Msg("garbage collection failed")
	}
	return *out, nil
}

// undo is a revert to perform: the node goes from generation failed back
// to good (its last good).
type undo struct {
	op      string // the operation undone: switch, rollback
	failed  int
	failedM *generation.Manifest
	good    int
	goodM   *generation.Manifest
	// profile is the NixOS system profile generation the node ran before
	// the switch to failed (0: none or unknown): a revert to a generation
	// without a toplevel sets the profile back to it.
	profile int
	// keep: failed is not quarantined. Set when the undone operation is a
	// rollback a crash interrupted (not one whose target failed): its
	// target ran healthy before (see Recover).
	keep bool
}

// revert moves the node from u.failed back to u.good, verifies it, and
// quarantines u.failed (unless u.keep). cause is why the switch ended.
func (a *Agent) revert(ctx context.Context, out *Outcome, u undo, cause error, start time.Time) (Outcome, error) {
	n, to := u.failed, u.good
	reason := cause.Error()
	a.log.Error().Int("generation", n).Int("revert_to", to).Str("reason", reason).Bool("keep_generation", u.keep).Msg("switch failed; reverting")
	// A revert must finish even if the caller's context ended (SIGTERM).
	ctx = context.WithoutCancel(ctx)
	err := a.step(CrashRevert, func(tx *state.Tx) error {
		return tx.PutJournal(state.Journal{Op: u.op, From: to, To: n, Phase: state.PhaseRevert, Reason: reason, KeepTo: u.keep,
			NixOSProfile: u.profile, StartedAt: a.now(), PID: os.Getpid()})
	})
	if err != nil {
		return *out, err
	}
	t := time.Now()
	rerr := a.transition(ctx, u.failedM, u.goodM, to, true, u.profile, nil)
	// The failed generation's secrets go, unless the flip back did not
	// happen and its units still use them (GC takes them later).
	if cur, _ := os.Readlink(a.cfg.Layout.SecretsCurrent()); cur != fmt.Sprint(n) {
		if err := a.stager.RemoveSecrets(n); err != nil {
			a.log.Error().Err(err).Int("generation", n).Msg("cannot remove the failed generation's secrets")
		}
	}
	a.crashPoint(CrashRevertStarted)
	if rerr == nil {
		rerr = a.verify.Verify(ctx, specFor(u.goodM, true))
	}
	out.time("revert", t)
	outcome, sentinel := "reverted", ErrReverted
	switch {
	case rerr != nil:
		outcome, sentinel = "revert-failed", ErrRevertFailed
		a.log.Error().Err(rerr).Int("generation", to).Msg("revert failed; the node needs attention")
	case u.keep:
		outcome = "rollback-undone"
	}
	id := ""
	err = a.step(CrashReverted, func(tx *state.Tx) error {
		g, err := tx.Generation(n)
		if err != nil {
			return err
		}
		id = g.ID
		if !u.keep {
			g.Status, g.Reason = state.StatusQuarantined, reason
			if err := tx.PutGeneration(g); err != nil {
				return err
			}
			if err := tx.Quarantine(state.Quarantine{ID: g.ID, Number: n, Reason: reason, At: a.now()}); err != nil {
				return err
			}
		}
		if err := tx.PutMeta(state.Meta{Current: to, LastGood: to}); err != nil {
			return err
		}
		out.Outcome, out.Reason, out.Duration = outcome, reason, time.Since(start)
		out.From, out.To = n, to
		revertErr := ""
		if rerr != nil {
			revertErr = rerr.Error()
		}
		if err := tx.PutResult(a.result(*out, revertErr)); err != nil {
			return err
		}
		return tx.ClearJournal()
	})
	if err != nil {
		return *out, errors.Join(fmt.Errorf("%w: %s", sentinel, reason), err)
	}
	if u.keep {
		a.log.Warn().Int("generation", n).Str("id", id).Int("current", to).Str("outcome", outcome).Msg("interrupted rollback undone; its target is not quarantined")
	} else {
		a.log.Warn().Int("generation", n).Str("id", id).Int("current", to).Str("outcome", outcome).Msg("generation quarantined")
	}
	if rerr != nil {
		return *out, fmt.Errorf("%w: %s; revert: %v", sentinel, reason, rerr)
	}
	return *out, fmt.Errorf("%w to generation %d: %s", sentinel, to, reason)
}

func (a *Agent) result(o Outcome, revertErr string) state.Result {
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

// transition makes the node run `to` (generation number toN, 0 = nothing)
// where it ran `from`: flip current, reconcile links, daemon-reload, stop
// removed units, restart changed, start added. With ensure, every startable
// unit of `to` is started (a no-op for active ones): used by reverts, which
// must bring the old generation fully back. afterFlip runs once the flip
// and reload are done. The NixOS system (switchSystem) switches after the
// removed units stopped and before the other jobs; profile is the system
// profile generation the node ran before the switch being undone.
func (a *Agent) transition(ctx context.Context, from, to *generation.Manifest, toN int, ensure bool, profile int, afterFlip func() error) error {
	points := [4]string{CrashFlipped, CrashLinked, CrashReloaded, CrashStopped}
	if ensure {
		points = [4]string{CrashRevertFlipped, CrashRevertLinked, CrashRevertLoaded, CrashRevertStopped}
	}
	if err := a.flip(toN, to); err != nil {
		return err
	}
	a.crashPoint(points[0])
	var errs []error
	// Links: add `to`'s, remove `from`'s that `to` lacks (only ours).
	for _, u := range sortedKeys(to.Units) {
		if err := a.ensureLink(a.unitLink(u), a.unitTarget(u)); err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
		}
	}
	for _, l := range to.Links {
		if err := a.ensureLink(l.Path, a.pathTarget(l)); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", l.Path, err))
		}
	}
	removed := map[string]bool{}
	var unlinked []string // links gone already: an interrupted transition removed them
	for _, u := range sortedKeys(from.Units) {
		if _, ok := to.Units[u]; ok {
			continue
		}
		switch mine, err := owned(a.unitLink(u), a.unitTarget(u)); {
		case mine:
			removed[u] = true
			if err := os.Remove(a.unitLink(u)); err != nil {
				errs = append(errs, fmt.Errorf("unit %s: %w", u, err))
			}
		case err == nil:
			unlinked = append(unlinked, u)
		default:
			a.log.Warn().Str("unit", u).Msg("unit link is not ours any more; leaving the unit alone")
		}
	}
	keep := map[string]bool{}
	for _, l := range to.Links {
		keep[filepath.Clean(l.Path)] = true
	}
	for _, l := range from.Links {
		p := filepath.Clean(l.Path)
		if keep[p] {
			continue
		}
		if mine, _ := owned(p, a.pathTarget(l)); mine {
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", p, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.crashPoint(points[1])
	ctx, cancel := context.WithTimeout(ctx, a.cfg.JobTimeout)
	defer cancel()
	t := time.Now()
	if err := a.sd.Reload(ctx); err != nil {
		return err
	}
	a.log.Debug().Dur("took", time.Since(t)).Msg("daemon-reload done")
	a.crashPoint(points[2])
	if afterFlip != nil {
		if err := afterFlip(); err != nil {
			return err
		}
	}

	a.stopUnlinked(ctx, unlinked, removed)
	// Jobs. Removed units stop first so that a unit taking over a port
	// from a removed one can bind it.
	var stops []job
	for _, u := range sortedKeys(removed) {
		stops = append(stops, job{"stop", u})
	}
	if err := a.run(ctx, stops); err != nil {
		return err
	}
	for u := range removed {
		if err := a.sd.ResetFailed(ctx, u); err != nil {
			a.log.Warn().Err(err).Str("unit", u).Msg("reset-failed")
		}
	}
	a.crashPoint(points[3])
	if err := a.switchSystem(ctx, from, to, ensure, profile); err != nil {
		return err
	}
	start := map[string]bool{}
	for _, u := range startable(to) {
		start[u] = true
	}
	p := diff(from, to)
	var jobs []job
	for _, u := range p.Changed {
		switch {
		case start[u]:
			jobs = append(jobs, job{"restart", u})
		case !isTemplate(u):
			jobs = append(jobs, job{"try-restart", u}) // a triggered service: restart only if running
		}
	}
	for _, u := range p.Added {
		if start[u] {
			jobs = append(jobs, job{"start", u})
		}
	}
	if ensure {
		for _, u := range p.Unchanged {
			if start[u] {
				jobs = append(jobs, job{"start", u})
			}
		}
	}
	a.log.Info().Int("stop", len(stops)).Int("jobs", len(jobs)).Msg("units switched; waiting for jobs")
	return a.run(ctx, jobs)
}

// stopUnlinked adds to removed the units of the generation switched away
// from whose links an interrupted transition (a crash) already removed:
// systemd may still run them. A unit some other file provides now is left
// alone.
func (a *Agent) stopUnlinked(ctx context.Context, unlinked []string, removed map[string]bool) {
	for _, u := range unlinked {
		st, err := a.sd.Status(ctx, u)
		switch {
		case err != nil:
			a.log.Warn().Err(err).Str("unit", u).Msg("cannot read the state of a unit whose link is gone; not stopping it")
		case st.FragmentPath != "" && st.FragmentPath != a.unitLink(u):
			a.log.Warn().Str("unit", u).Str("fragment", st.FragmentPath).Msg("unit is provided by another file now; leaving it alone")
		case st.ActiveState != "inactive" || st.LoadState == "loaded":
			removed[u] = true
		}
	}
}

// systemProfile is the NixOS system profile generation the node runs now
// (0: no profile, no driver, or unreadable — then a revert cannot go back
// to it, and says so).
func (a *Agent) systemProfile() int {
	if a.cfg.NixOS == nil {
		return 0
	}
	n, _, err := a.cfg.NixOS.Current()
	if err != nil {
		a.log.Warn().Err(err).Msg("cannot read the system profile")
		return 0
	}
	return n
}

// switchSystem is the NixOS driver's part of a transition from `from` to
// `to`:
//   - to a toplevel: a switch sets the system profile to it (a new profile
//     generation) and runs its switch-to-configuration switch; a revert
//     (ensure) goes back to the profile generation that has it (Restore);
//   - from a toplevel to a generation without one: a revert sets the
//     profile back to the generation the node ran before (profile); any
//     other switch leaves the system profile as it is (a generation of
//     units runs beside whatever system the node has).
func (a *Agent) switchSystem(ctx context.Context, from, to *generation.Manifest, ensure bool, profile int) error {
	if to.NixOS == nil && from.NixOS == nil {
		return nil
	}
	if a.cfg.NixOS == nil {
		return fmt.Errorf("nixos: %w", stage.ErrNixOSUnsupported)
	}
	t := time.Now()
	log := a.log.With().Bool("revert", ensure).Logger()
	a.nixosPoint = CrashNixOSProfiled
	if ensure {
		a.nixosPoint = CrashRevertProfiled
	}
	switch {
	case to.NixOS != nil && !ensure:
		log.Info().Str("toplevel", to.NixOS.Toplevel).Msg("switching the NixOS system")
		// Realised when staged; a rollback to an old generation may find
		// its closure collected and fetches it again.
		if err := a.cfg.NixOS.Realise(ctx, *to.NixOS); err != nil {
			return err
		}
		if _, err := a.cfg.NixOS.Switch(ctx, to.NixOS.Toplevel); err != nil {
			return err
		}
	case to.NixOS != nil:
		log.Info().Str("toplevel", to.NixOS.Toplevel).Msg("restoring the NixOS system")
		if err := a.cfg.NixOS.Restore(ctx, *to.NixOS); err != nil {
			return err
		}
	case ensure && profile > 0:
		log.Info().Int("profile_generation", profile).Msg("setting the system profile back to the generation before the switch")
		if err := a.cfg.NixOS.Revert(ctx, profile); err != nil {
			return err
		}
	default:
		log.Warn().Str("toplevel", from.NixOS.Toplevel).Int("profile_generation", profile).
			Msg("the generation switched to has no NixOS toplevel and no earlier system profile generation is known: the system profile stays as it is")
		return nil
	}
	log.Info().Dur("took", time.Since(t)).Msg("NixOS system switched")
	return nil
}

type job struct{ op, unit string }

// run issues jobs concurrently and waits for all of them.
func (a *Agent) run(ctx context.Context, jobs []job) error {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := map[string]func(context.Context, string) error{
				"start": a.sd.Start, "stop": a.sd.Stop, "restart": a.sd.Restart, "try-restart": a.sd.TryRestart,
			}[j.op]
			t := time.Now()
			errs[i] = f(ctx, j.unit)
			if j.op == "stop" && errors.Is(errs[i], systemd.ErrNotLoaded) {
				// Not loaded and inactive: already stopped (a unit whose
				// file never loaded or is gone). Not a failure.
				a.log.Info().Str("unit", j.unit).Str("detail", errs[i].Error()).Msg("unit not loaded; already stopped")
				errs[i] = nil
			}
			ev := a.log.Debug()
			if errs[i] != nil {
				ev = a.log.Error().Err(errs[i])
			}
			ev.Str("op", j.op).Str("unit", j.unit).Dur("took", time.Since(t)).Msg("job finished")
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// flip points `current` at generation n (0 removes it), whose manifest is
// m, and right after it the secrets directory's `current`. Secrets of n
// that are not on disk are decrypted first, so a failure changes nothing.
func (a *Agent) flip(n int, m *generation.Manifest) error {
	if n == 0 {
		if err := os.Remove(a.cfg.Layout.Current()); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("flip current: %w", err)
		}
		if err := atomicfile.SyncDir(a.cfg.Layout.Dir); err != nil {
			return err
		}
		return a.flipSecrets(0)
	}
	if !a.stager.Exists(n) {
		return fmt.Errorf("flip current: generation %d is not on disk", n)
	}
	if restored, err := a.stager.EnsureSecrets(n, m); err != nil {
		return fmt.Errorf("flip current: %w", err)
	} else if restored {
		a.log.Info().Int("generation", n).Msg("decrypted the secrets of the generation switched to again")
	}
	if err := atomicfile.Symlink(filepath.Join("generations", fmt.Sprint(n)), a.cfg.Layout.Current()); err != nil {
		return fmt.Errorf("flip current: %w", err)
	}
	return a.flipSecrets(n)
}

// flipSecrets points <secrets_dir>/current at generation n's secrets, or
// removes it when n has none (or n is 0).
func (a *Agent) flipSecrets(n int) error {
	l := a.cfg.Layout
	if l.SecretsDir == "" {
		return nil
	}
	if n != 0 && l.HasSecrets(n) {
		if err := atomicfile.Symlink(fmt.Sprint(n), l.SecretsCurrent()); err != nil {
			return fmt.Errorf("flip secrets: %w", err)
		}
		return nil
	}
	if err := os.Remove(l.SecretsCurrent()); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("flip secrets: %w", err)
	}
	return nil
}

// restoreSecrets makes sure the current generation n (manifest m) has its
// secrets decrypted and <secrets_dir>/current points at them: after a
// reboot the tmpfs is empty.
func (a *Agent) restoreSecrets(n int, m *generation.Manifest) error {
	if n == 0 {
		return nil
	}
	restored, err := a.stager.EnsureSecrets(n, m)
	if err != nil {
		return fmt.Errorf("secrets of the current generation: %w", err)
	}
	if restored {
		a.log.Info().Int("generation", n).Int("secrets", len(m.Secrets)).Msg("decrypted the current generation's secrets again (the secrets directory had lost them, e.g. after a reboot)")
	}
	if cur, err := os.Readlink(a.cfg.Layout.SecretsCurrent()); restored || err != nil || cur != fmt.Sprint(n) {
		return a.flipSecrets(n)
	}
	return nil
}

// ensureLink makes path a symlink to target unless it already is one. The
// ownership check ran before; a path that is now something else is left
// alone and reported.
func (a *Agent) ensureLink(path, target string) error {
	mine, err := owned(path, target)
	if err != nil || mine {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Symlink(target, path)
}

// begin starts an operation that may switch: it takes the switch lock,
// finishes a switch a crash interrupted, and reads the state. The caller
// runs unlock when done.
func (a *Agent) begin(ctx context.Context) (state.Snapshot, func(), error) {
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
func (a *Agent) lock() (func(), error) {
	if err := os.MkdirAll(a.cfg.Layout.Dir, 0o755); err != nil {
		return nil, err
	}
	return flock(a.cfg.Layout.Lock())
}
