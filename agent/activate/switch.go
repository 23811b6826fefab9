package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/slipway-dev/slipway/agent/nixos"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/shared/generation"
)

// switchOp is one switch of the node from generation from (its last good,
// manifest fromM) to the staged generation to (manifest toM), committed or
// reverted as a whole. Apply and Rollback build it; switchTo carries it
// through the journal's phases.
type switchOp struct {
	name    string // the journal's op: switch, rollback
	from    int
	fromM   *generation.Manifest
	to      int
	toM     *generation.Manifest
	start   time.Time                                              // when the operation began (Outcome.Duration)
	confirm func(ctx context.Context, number int, id string) error // nil: no confirm
	out     *Outcome
	// profile is the NixOS system profile generation the node ran before
	// the flip; switchTo reads it and journals it before the flip, so that
	// a revert (and Recover) can set the profile back to it when the
	// generation switched back to has no toplevel.
	profile int
}

// switchTo moves the node from op.from to op.to and either commits op.to
// (after making its NixOS toplevel, if any, the boot default) or reverts
// to op.from.
func (a *Switcher) switchTo(ctx context.Context, op switchOp) (Outcome, error) {
	if (op.toM.NixOS != nil || op.fromM.NixOS != nil) && a.cfg.NixOS == nil {
		return *op.out, fmt.Errorf("%s to generation %d: nixos: %w", op.name, op.to, stage.ErrNixOSUnsupported)
	}
	op.profile = a.systemProfile()
	if err := a.setPhase(op, state.PhaseFlip); err != nil {
		return *op.out, err
	}
	if err := a.bringUp(ctx, op); err != nil {
		return a.revert(ctx, op.undo(), err)
	}
	if err := a.setBootDefault(ctx, op, nixos.ActionBoot); err != nil {
		op.out.Outcome, op.out.Reason = "boot-default-failed", err.Error()
		return *op.out, err
	}
	return a.commit(op)
}

// ErrBootDefault: the switch was confirmed and the node runs the new NixOS
// toplevel, but it could not be made the boot default. The journal stays
// in its boot phase: the agent's next start or switch tries again
// (Recover), and commits then.
var ErrBootDefault = errors.New("confirmed, but the NixOS toplevel could not be made the boot default")

// setBootDefault makes op.to's NixOS toplevel the boot default, once op.to
// is confirmed (journal phase boot first: a crash from here on is finished
// by Recover, never reverted). action is nixos.ActionBoot, or
// nixos.ActionSwitch when the running system may not be op.to's (Recover:
// a reboot in between booted the previous default). A generation without
// a toplevel leaves the system profile alone. The step is not cancelled
// with ctx: the server has confirmed.
func (a *Switcher) setBootDefault(ctx context.Context, op switchOp, action string) error {
	if op.toM.NixOS == nil {
		return nil
	}
	if err := a.setPhase(op, state.PhaseBoot); err != nil {
		return err
	}
	top := op.toM.NixOS.Toplevel
	a.nixosPoint = CrashBootProfiled
	t := time.Now()
	if err := a.cfg.NixOS.SetBootDefault(context.WithoutCancel(ctx), top, action); err != nil {
		a.log.Error().Err(err).Int("generation", op.to).Str("toplevel", top).Msg("cannot make the confirmed toplevel the boot default; the agent's next start or switch tries again")
		return fmt.Errorf("generation %d: %w (tried again at the agent's next start or switch): %w", op.to, ErrBootDefault, err)
	}
	op.out.time("boot", t)
	a.log.Info().Int("generation", op.to).Str("toplevel", top).Str("action", action).Dur("took", time.Since(t)).Msg("the confirmed toplevel is the boot default")
	return nil
}

// setPhase journals op's phase p before its side effect; p is its crash
// point too.
func (a *Switcher) setPhase(op switchOp, p string) error {
	return a.step(p, func(tx *state.Tx) error {
		return tx.PutJournal(state.Journal{Op: op.name, From: op.from, To: op.to, Phase: p, NixOSProfile: op.profile, StartedAt: a.now(), PID: os.Getpid()})
	})
}

// bringUp makes the node run op.to, verifies its health and waits for the
// confirm; an error means op must be reverted.
func (a *Switcher) bringUp(ctx context.Context, op switchOp) error {
	t := time.Now()
	err := a.transition(ctx, move{from: op.fromM, to: op.toM, toN: op.to, profile: op.profile,
		afterFlip: func() error { return a.setPhase(op, state.PhaseUnits) }})
	op.out.time("switch", t)
	if err != nil {
		return err
	}
	if err := a.setPhase(op, state.PhaseVerify); err != nil {
		return err
	}
	t = time.Now()
	h := op.toM.Health
	a.log.Info().Int("generation", op.to).Dur("min_healthy_time", h.MinHealthyTime.Or(generation.DefaultMinHealthyTime)).
		Dur("healthy_deadline", h.HealthyDeadline.Or(generation.DefaultHealthyDeadline)).Msg("verifying health")
	err = a.verify.Verify(ctx, specFor(op.toM, false))
	op.out.time("verify", t)
	if err != nil || op.confirm == nil {
		return err
	}
	return a.awaitConfirm(ctx, op)
}

// awaitConfirm runs op.confirm bounded by the manifest's confirm_timeout.
func (a *Switcher) awaitConfirm(ctx context.Context, op switchOp) error {
	if err := a.setPhase(op, state.PhaseConfirm); err != nil {
		return err
	}
	t := time.Now()
	timeout := op.toM.ConfirmTimeout.Or(generation.DefaultConfirmTimeout)
	a.log.Info().Int("generation", op.to).Dur("confirm_timeout", timeout).Msg("healthy; waiting for the server's confirm")
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := op.confirm(cctx, op.to, op.out.ID)
	cancel()
	op.out.time("confirm", t)
	if err != nil {
		return fmt.Errorf("no confirm from the server within confirm_timeout %s: %w", timeout, err)
	}
	return nil
}

// commit records op.to as current and last good, then collects garbage.
func (a *Switcher) commit(op switchOp) (Outcome, error) {
	out, n := op.out, op.to
	err := a.step(CrashCommit, func(tx *state.Tx) error {
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
		out.Outcome, out.Duration = "switched", time.Since(op.start)
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

// undo returns the revert of op.
func (op switchOp) undo() undo {
	return undo{op: op.name, failed: op.to, failedM: op.toM, good: op.from, goodM: op.fromM, profile: op.profile, out: op.out, start: op.start}
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
	keep  bool
	out   *Outcome  // the outcome being built
	start time.Time // when the operation began (Outcome.Duration)
}

// revert moves the node from u.failed back to u.good, verifies it, and
// quarantines u.failed (unless u.keep). cause is why the switch ended.
func (a *Switcher) revert(ctx context.Context, u undo, cause error) (Outcome, error) {
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
		return *u.out, err
	}
	rerr := a.restore(ctx, u)
	outcome, sentinel := "reverted", ErrReverted
	switch {
	case rerr != nil:
		outcome, sentinel = "revert-failed", ErrRevertFailed
		a.log.Error().Err(rerr).Int("generation", to).Msg("revert failed; the node needs attention")
	case u.keep:
		outcome = "rollback-undone"
	}
	id, err := a.settleRevert(u, reason, outcome, rerr)
	if err != nil {
		return *u.out, errors.Join(fmt.Errorf("%w: %s", sentinel, reason), err)
	}
	if u.keep {
		a.log.Warn().Int("generation", n).Str("id", id).Int("current", to).Str("outcome", outcome).Msg("interrupted rollback undone; its target is not quarantined")
	} else {
		a.log.Warn().Int("generation", n).Str("id", id).Int("current", to).Str("outcome", outcome).Msg("generation quarantined")
	}
	if rerr != nil {
		return *u.out, fmt.Errorf("%w: %s; revert: %v", sentinel, reason, rerr)
	}
	return *u.out, fmt.Errorf("%w to generation %d: %s", sentinel, to, reason)
}

// restore brings u.good back: the transition, the failed generation's
// secrets removed, and u.good's health checked (without
// min_healthy_time). It returns why the revert failed, or nil.
func (a *Switcher) restore(ctx context.Context, u undo) error {
	n := u.failed
	t := time.Now()
	rerr := a.transition(ctx, move{from: u.failedM, to: u.goodM, toN: u.good, revert: true, profile: u.profile})
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
	u.out.time("revert", t)
	return rerr
}

// settleRevert journals the end of a revert: u.failed quarantined (unless
// u.keep), u.good current and last good, the result recorded. It returns
// the failed generation's manifest ID.
func (a *Switcher) settleRevert(u undo, reason, outcome string, rerr error) (id string, err error) {
	n, to, out := u.failed, u.good, u.out
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
		out.Outcome, out.Reason, out.Duration = outcome, reason, time.Since(u.start)
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
	return id, err
}
