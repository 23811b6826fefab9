package activate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/generation"
)

// move is one transition of the node's units from the generation with
// manifest from to generation toN (manifest to; 0 = nothing).
type move struct {
	from, to *generation.Manifest
	toN      int
	// revert: every startable unit of to is started (a no-op for active
	// ones), as a revert must bring the old generation fully back; the
	// crash points are the revert's.
	revert bool
	// profile is the system profile generation the node ran before the
	// switch being undone (switchSystem).
	profile int
	// afterFlip, when set, runs once the flip and reload are done.
	afterFlip func() error
}

// transition makes the node run mv.to where it ran mv.from: flip current,
// reconcile links, daemon-reload, stop removed units, switch the NixOS
// system (switchSystem), restart changed units, start added ones.
func (a *Switcher) transition(ctx context.Context, mv move) error {
	points := [4]string{CrashFlipped, CrashLinked, CrashReloaded, CrashStopped}
	if mv.revert {
		points = [4]string{CrashRevertFlipped, CrashRevertLinked, CrashRevertLoaded, CrashRevertStopped}
	}
	if err := a.flip(mv.toN, mv.to); err != nil {
		return err
	}
	a.crashPoint(points[0])
	removed, unlinked, err := a.relink(mv.from, mv.to)
	if err != nil {
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
	if mv.afterFlip != nil {
		if err := mv.afterFlip(); err != nil {
			return err
		}
	}
	a.stopUnlinked(ctx, unlinked, removed)
	stops, err := a.stopRemoved(ctx, removed)
	if err != nil {
		return err
	}
	a.crashPoint(points[3])
	if err := a.switchSystem(ctx, mv); err != nil {
		return err
	}
	jobs := startJobs(mv)
	a.log.Info().Int("stop", stops).Int("jobs", len(jobs)).Msg("units switched; waiting for jobs")
	return a.run(ctx, jobs)
}

// stopRemoved stops the removed units and resets their failed state; it
// returns how many it stopped. Removed units stop before anything starts
// so that a unit taking over a port from a removed one can bind it.
func (a *Switcher) stopRemoved(ctx context.Context, removed map[string]bool) (int, error) {
	var stops []job
	for _, u := range slices.Sorted(maps.Keys(removed)) {
		stops = append(stops, job{"stop", u})
	}
	if err := a.run(ctx, stops); err != nil {
		return len(stops), err
	}
	for u := range removed {
		if err := a.sd.ResetFailed(ctx, u); err != nil {
			a.log.Warn().Err(err).Str("unit", u).Msg("reset-failed")
		}
	}
	return len(stops), nil
}

// startJobs are the jobs that bring mv.to's units up once the removed ones
// stopped: restart changed units (try-restart for triggered services),
// start added ones, and on a revert every other startable unit too.
func startJobs(mv move) []job {
	start := map[string]bool{}
	for _, u := range startable(mv.to) {
		start[u] = true
	}
	p := diff(mv.from, mv.to)
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
	if mv.revert {
		for _, u := range p.Unchanged {
			if start[u] {
				jobs = append(jobs, job{"start", u})
			}
		}
	}
	return jobs
}

// stopUnlinked adds to removed the units of the generation switched away
// from whose links an interrupted transition (a crash) already removed:
// systemd may still run them. A unit some other file provides now is left
// alone.
func (a *Switcher) stopUnlinked(ctx context.Context, unlinked []string, removed map[string]bool) {
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
func (a *Switcher) systemProfile() int {
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

// switchSystem is the NixOS driver's part of a transition from mv.from to
// mv.to (ensure is mv.revert). It never makes a new toplevel the boot
// default: setBootDefault does, after the confirm.
//   - to a toplevel: a switch runs its switch-to-configuration test (the
//     running system switches, the system profile stays); a revert
//     (ensure) brings it back (Restore: with test where the profile is on
//     it, which is the case unless something else moved the profile);
//   - from a toplevel to a generation without one: a revert brings back the
//     profile generation the node ran before (profile); any other switch
//     leaves the system as it is (a generation of units runs beside
//     whatever system the node has).
func (a *Switcher) switchSystem(ctx context.Context, mv move) error {
	from, to, ensure, profile := mv.from, mv.to, mv.revert, mv.profile
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
		if err := a.cfg.NixOS.Test(ctx, to.NixOS.Toplevel); err != nil {
			return err
		}
	case to.NixOS != nil:
		log.Info().Str("toplevel", to.NixOS.Toplevel).Msg("restoring the NixOS system")
		if err := a.cfg.NixOS.Restore(ctx, *to.NixOS); err != nil {
			return err
		}
	case ensure && profile > 0:
		log.Info().Int("profile_generation", profile).Msg("bringing back the system profile generation the node ran before the switch")
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
func (a *Switcher) run(ctx context.Context, jobs []job) error {
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
// m, and right after it the secrets directory's `current`
// (<secrets_dir>/current -> <secrets_dir>/<N>, decrypted by agent/stage;
// removed for a generation without secrets). Secrets of n that are not on
// disk (a revert or rollback after a reboot or GC) are decrypted first, so
// a failure changes nothing. A revert's flip back is followed by the
// removal of the failed generation's secrets (restore), and GC keeps only
// the current and last good generations' secrets decrypted.
func (a *Switcher) flip(n int, m *generation.Manifest) error {
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
func (a *Switcher) flipSecrets(n int) error {
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
func (a *Switcher) restoreSecrets(n int, m *generation.Manifest) error {
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
