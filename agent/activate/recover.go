package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slipway-dev/slipway/agent/nixos"
	"github.com/slipway-dev/slipway/agent/state"
)

// Recover finishes or undoes a switch interrupted by a crash. A switch
// that got as far as the flip is reverted to the generation the node ran
// before and quarantined (a crash in the middle of a switch counts as its
// failure); one that was only staging is discarded (the node was
// untouched). One that was past its confirm, making its NixOS toplevel the
// boot default, is finished and committed (outcome "switched"): the
// server confirmed it. A rollback that got as far as the flip is undone the same
// way, but its target is not quarantined (outcome "rollback-undone"): it
// ran healthy before, and the process being killed says nothing against
// it; the operator runs the rollback again. A rollback whose target
// failed its checks was already reverting when it was killed: that revert
// is finished and the target quarantined, as for any switch. Only
// Rollback's switches are spared: a switch of Apply is quarantined even to
// a manifest that ran here before (a server sending a node back), as
// the daemon would otherwise switch to it again at once, and a generation
// that gets its agent killed would loop.
// It is what the agent runs first on every start (and at boot): it then
// starts every unit of the current generation that is not running (units
// are linked, not enabled, so nothing else starts them after a reboot).
func (a *Switcher) Recover(ctx context.Context) (Outcome, error) {
	unlock, err := a.lock()
	if err != nil {
		return Outcome{Op: "recover"}, err
	}
	defer unlock()
	out, err := a.recover(ctx)
	if err != nil {
		return out, err
	}
	cur, err := a.cfg.Layout.CurrentNumber()
	if err != nil || cur == 0 {
		return out, err
	}
	m, err := a.stager.Manifest(cur)
	if err != nil {
		return out, err
	}
	// After a reboot the secrets (tmpfs) are gone: decrypt them again
	// before starting the units that read them. A failure is reported, but
	// the units are started all the same: most may not need a secret.
	serr := a.restoreSecrets(cur, m)
	if serr != nil {
		a.log.Error().Err(serr).Int("generation", cur).Msg("cannot restore the current generation's secrets")
	}
	var jobs []job
	for _, u := range startable(m) {
		st, err := a.sd.Status(ctx, u)
		if err != nil {
			return out, err
		}
		if st.ActiveState != "active" && st.ActiveState != "reloading" && !(st.Type == "oneshot" && st.Result == "success") {
			jobs = append(jobs, job{"start", u})
			out.Started = append(out.Started, u)
		}
	}
	if len(jobs) > 0 {
		a.log.Info().Int("generation", cur).Strs("units", out.Started).Msg("starting units of the current generation that were not running")
	}
	jctx, cancel := context.WithTimeout(ctx, a.cfg.JobTimeout)
	defer cancel()
	if err := a.run(jctx, jobs); err != nil {
		return out, errors.Join(serr, fmt.Errorf("start units of generation %d: %w", cur, err))
	}
	return out, serr
}

func (a *Switcher) recover(ctx context.Context) (Outcome, error) {
	start := time.Now()
	out := Outcome{Op: "recover", Outcome: "nothing-to-recover"}
	snap, err := a.db.Snapshot()
	if err != nil {
		return out, err
	}
	j := snap.Journal
	if j == nil {
		return out, nil
	}
	out.From, out.To = j.To, j.From
	log := a.log.With().Str("op", j.Op).Int("from", j.From).Int("to", j.To).Str("phase", j.Phase).Int("pid", j.PID).Logger()
	if j.Phase == state.PhaseStage {
		log.Warn().Msg("interrupted while staging; discarding the staged generation (the node was not changed)")
		_ = a.stager.Remove(j.To)
		err := a.step(CrashDiscarded, func(tx *state.Tx) error {
			if err := tx.SetGenerationStatus(j.To, state.StatusFailed, "interrupted while staging"); err != nil && !errors.Is(err, state.ErrNotFound) {
				return err
			}
			return tx.ClearJournal()
		})
		out.Outcome = "discarded-staging"
		return out, err
	}
	if j.Phase == state.PhaseBoot {
		return a.finishBoot(ctx, snap, out, start)
	}
	reason := j.Reason
	// A rollback a crash interrupted (not one already reverting because
	// its target failed) is undone without quarantining its target: that
	// generation ran healthy before, and being killed is no sign that it
	// is bad. A recover killed while undoing it keeps the mark (KeepTo).
	keep := j.Op == "rollback" && (j.Phase != state.PhaseRevert || j.KeepTo)
	switch {
	case keep && reason == "":
		reason = fmt.Sprintf("the rollback to generation %d was interrupted (agent stopped during its %s phase, pid %d); back on generation %d, "+
			"and generation %d is not quarantined: run the rollback again", j.To, j.Phase, j.PID, j.From, j.To)
	case reason == "":
		reason = fmt.Sprintf("agent stopped during the %s phase of the switch to generation %d (pid %d)", j.Phase, j.To, j.PID)
	}
	log.Warn().Str("reason", reason).Bool("keep_generation", keep).Msg("found an interrupted switch; reverting")
	failedM, err := a.stager.Manifest(j.To)
	if err != nil {
		return out, fmt.Errorf("recover: %w", err)
	}
	goodM, err := a.stager.Manifest(j.From)
	if err != nil {
		return out, fmt.Errorf("recover: %w", err)
	}
	u := undo{op: j.Op, failed: j.To, failedM: failedM, good: j.From, goodM: goodM, profile: j.NixOSProfile, keep: keep, out: &out, start: start}
	o, err := a.revert(ctx, u, errors.New(reason))
	o.Op = "recover"
	if errors.Is(err, ErrReverted) {
		return o, nil // recovered: the node is on its last good generation
	}
	return o, err
}

// finishBoot finishes a switch (or rollback) a crash interrupted after its
// confirm: the toplevel of the journal's To becomes the boot default and
// To is committed. It runs switch-to-configuration switch, not boot: a
// reboot (or a watchdog reset) in between came back on the previous
// default, and the node must run what it commits.
func (a *Switcher) finishBoot(ctx context.Context, snap state.Snapshot, out Outcome, start time.Time) (Outcome, error) {
	j := snap.Journal
	out.From, out.To = j.From, j.To
	a.log.Warn().Str("op", j.Op).Int("from", j.From).Int("to", j.To).Int("pid", j.PID).
		Msg("found a confirmed switch whose toplevel was not made the boot default yet; finishing it")
	toM, err := a.stager.Manifest(j.To)
	if err != nil {
		return out, fmt.Errorf("recover: %w", err)
	}
	if g, err := snap.Generation(j.To); err == nil {
		out.ID = g.ID
	}
	op := switchOp{name: j.Op, from: j.From, to: j.To, toM: toM, profile: j.NixOSProfile, start: start, out: &out}
	if err := a.setBootDefault(ctx, op, nixos.ActionSwitch); err != nil {
		return out, err
	}
	return a.commit(op)
}

// Rollback switches to generation `to`, or with to == 0 to the newest good
// generation older than the current one, verifying it like any switch.
func (a *Switcher) Rollback(ctx context.Context, to int) (Outcome, error) {
	start := time.Now()
	out := Outcome{Op: "rollback"}
	snap, unlock, err := a.begin(ctx)
	if err != nil {
		return out, err
	}
	defer unlock()
	cur := snap.Meta.Current
	if to == 0 {
		for i := len(snap.Generations) - 1; i >= 0; i-- {
			g := snap.Generations[i]
			if g.Number < cur && g.Status == state.StatusGood && a.stager.Exists(g.Number) {
				to = g.Number
				break
			}
		}
		if to == 0 {
			return out, fmt.Errorf("rollback from generation %d: %w", cur, ErrNoRollbackTarget)
		}
	}
	g, err := snap.Generation(to)
	if err != nil {
		return out, fmt.Errorf("rollback: %w", err)
	}
	if to == cur {
		return out, fmt.Errorf("rollback: generation %d is already current", to)
	}
	if !a.stager.Exists(to) {
		return out, fmt.Errorf("rollback: generation %d was garbage-collected", to)
	}
	if g.Status == state.StatusQuarantined {
		return out, fmt.Errorf("rollback: %w: generation %d: %s", ErrQuarantined, to, g.Reason)
	}
	fromM, err := a.stager.Manifest(cur)
	if err != nil {
		return out, err
	}
	toM, err := a.stager.Manifest(to)
	if err != nil {
		return out, err
	}
	out.From, out.To, out.ID = cur, to, g.ID
	out.Plan = diff(fromM, toM)
	if err := a.checkOwnership(ctx, toM); err != nil {
		return out, fmt.Errorf("refusing to roll back: %w", err)
	}
	a.log.Info().Int("from", cur).Int("to", to).Msg("rolling back")
	return a.switchTo(ctx, switchOp{name: "rollback", from: cur, fromM: fromM, to: to, toM: toM, start: start, out: &out})
}

// GCStats says what garbage collection removed.
type GCStats struct {
	Generations []int `json:"generations"`
	Blobs       int   `json:"blobs"`
	Bytes       int64 `json:"bytes"`
	// Secrets are the generations whose decrypted secrets were removed.
	Secrets []int `json:"secrets_of,omitempty"`
	// SystemProfilesKept: NixOS system profile generations beyond the
	// newest this many were deleted (0: the profile was not touched).
	SystemProfilesKept int `json:"system_profiles_kept,omitempty"`
}

// GC removes the generation directories gcKeep does not keep (it keeps
// current, last good and the newest Keep good generations besides them;
// failed ones never push a good one out), store blobs no remaining
// generation references, the
// decrypted secrets of every generation but current and last good, and —
// on a node running a NixOS toplevel — system profile generations beyond
// the newest Keep+2 (their store paths become garbage for Nix's own GC).
func (a *Switcher) GC() (GCStats, error) {
	unlock, err := a.lock()
	if err != nil {
		return GCStats{}, err
	}
	defer unlock()
	return a.gc()
}

func (a *Switcher) gc() (GCStats, error) {
	var st GCStats
	snap, err := a.db.Snapshot()
	if err != nil {
		return st, err
	}
	if snap.Journal != nil {
		return st, errors.New("gc: a switch is in progress")
	}
	drop, err := a.collectable(snap)
	if err != nil {
		return st, err
	}
	// Recorded before the directories go (a crash in between leaves
	// directories a later GC removes, never a "good" generation whose
	// directory is gone).
	if err := a.recordCollected(drop); err != nil {
		return st, err
	}
	for _, n := range drop {
		if err := a.stager.Remove(n); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		st.Generations = append(st.Generations, n)
	}
	if len(drop) > 0 {
		a.crashPoint(CrashGCRemoved)
	}
	st.Blobs, st.Bytes, err = a.stager.PruneBlobs()
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	st.Secrets, err = a.stager.PruneSecrets(snap.Meta.Current, snap.Meta.LastGood)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if st.SystemProfilesKept, err = a.gcSystemProfiles(snap); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if len(st.Generations) > 0 || st.Blobs > 0 || len(st.Secrets) > 0 {
		a.log.Info().Ints("generations", st.Generations).Int("blobs", st.Blobs).Int64("bytes", st.Bytes).
			Ints("secrets_of", st.Secrets).Msg("garbage collected")
	}
	return st, nil
}

// collectable lists, newest first, the generation directories on disk that
// gcKeep does not keep; it removes leftover staging directories on the way.
func (a *Switcher) collectable(snap state.Snapshot) ([]int, error) {
	ents, err := os.ReadDir(a.cfg.Layout.Generations())
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("gc: %w", err)
	}
	var nums []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			nums = append(nums, n)
		} else if strings.HasPrefix(e.Name(), ".stage-") {
			_ = os.RemoveAll(a.cfg.Layout.Generations() + "/" + e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	status := map[int]string{}
	for _, g := range snap.Generations {
		status[g.Number] = g.Status
	}
	kept := gcKeep(nums, status, snap.Meta.Current, snap.Meta.LastGood, a.cfg.Keep)
	var drop []int
	for _, n := range nums {
		if !kept[n] {
			drop = append(drop, n)
		}
	}
	return drop, nil
}

// gcSystemProfiles deletes old NixOS system profile generations, keeping
// Keep+2 (the kept generations plus current and last good), and returns
// that number; 0 when it left the profile alone. Only when the node runs a
// toplevel of ours: a profile the agent never set is left to the operator.
func (a *Switcher) gcSystemProfiles(snap state.Snapshot) (int, error) {
	if a.cfg.NixOS == nil || snap.Meta.Current == 0 {
		return 0, nil
	}
	m, err := a.stager.Manifest(snap.Meta.Current)
	if err != nil || m.NixOS == nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.JobTimeout)
	defer cancel()
	if err := a.cfg.NixOS.GC(ctx, a.cfg.Keep+2); err != nil {
		return 0, err
	}
	return a.cfg.Keep + 2, nil
}

// recordCollected marks generations whose directories GC is about to
// remove as collected.
func (a *Switcher) recordCollected(nums []int) error {
	if len(nums) == 0 {
		return nil
	}
	err := a.step(CrashGCRecorded, func(tx *state.Tx) error {
		for _, n := range nums {
			g, err := tx.Generation(n)
			if errors.Is(err, state.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if strings.HasSuffix(g.Reason, "(directory collected)") {
				continue // recorded by a GC that crashed before removing it
			}
			if g.Status == state.StatusGood || g.Status == state.StatusStaged {
				g.Status = state.StatusCollected
			}
			g.Reason = strings.TrimSpace(g.Reason + " (directory collected)")
			if err := tx.PutGeneration(g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// ErrLocked is returned when another agent process holds the switch lock.
var ErrLocked = errors.New("another slipway-agent process is switching this node")

func flock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		return nil, fmt.Errorf("%w (lock %s held by pid %s)", ErrLocked, path, strings.TrimSpace(string(b[:n])))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
