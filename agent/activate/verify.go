package activate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/unitverify"
	"github.com/slipway-dev/slipway/shared/generation"
)

// ErrUnitsRefused is returned by Apply, before the flip, when the node's
// systemd-analyze verify found errors in the generation's unit files.
var ErrUnitsRefused = errors.New("unit files refused by systemd-analyze verify")

// unitVerifier checks unit files with the node's own systemd;
// *unitverify.Verifier has it.
type unitVerifier interface {
	Verify(ctx context.Context, units map[string]string, rewrites []unitverify.Rewrite) (unitverify.Result, error)
}

// verifyStaged runs Config.Units on the units of staged generation n, as
// they will be once `current` points at n, before anything on the node
// changes. Errors refuse the generation (the staged directory is removed);
// warnings go into out and onto the generation's record, which reports
// show. When systemd-analyze is missing or cannot run, the switch goes on
// unverified and the agent logs a warning.
func (a *Switcher) verifyStaged(ctx context.Context, n int, m *generation.Manifest, out *Outcome) error {
	if a.cfg.Units == nil || len(m.Units) == 0 {
		return nil
	}
	t := time.Now()
	res, err := a.cfg.Units.Verify(ctx, m.Units, a.stagedRewrites(n))
	out.time("verify-units", t)
	switch {
	case errors.Is(err, unitverify.ErrNotInstalled):
		a.log.Warn().Int("generation", n).Msg("systemd-analyze is not installed; unit files not verified before the switch")
		return nil
	case err != nil:
		a.log.Warn().Err(err).Int("generation", n).Msg("systemd-analyze verify did not run; unit files not verified before the switch")
		return nil
	}
	for _, w := range res.Warnings {
		a.log.Warn().Int("generation", n).Str("warning", w).Msg("unit file warning (systemd-analyze verify)")
	}
	out.Warnings = res.Warnings
	if len(res.Errors) > 0 {
		if rerr := a.stager.Remove(n); rerr != nil {
			a.log.Error().Err(rerr).Int("generation", n).Msg("cannot remove the refused generation")
		}
		return fmt.Errorf("refusing generation %d: %w: %s", n, ErrUnitsRefused, strings.Join(res.Errors, "; "))
	}
	if len(res.Warnings) == 0 {
		return nil
	}
	return a.step(CrashWarned, func(tx *state.Tx) error {
		g, err := tx.Generation(n)
		if err != nil {
			return err
		}
		g.Warnings = res.Warnings
		return tx.PutGeneration(g)
	})
}

// stagedRewrites map the paths through `current` to generation n's own,
// so the verifier sees the binaries and files of n.
func (a *Switcher) stagedRewrites(n int) []unitverify.Rewrite {
	l := a.cfg.Layout
	rw := []unitverify.Rewrite{{From: l.Current() + "/", To: l.GenDir(n) + "/"}}
	if l.SecretsDir != "" {
		rw = append(rw, unitverify.Rewrite{From: l.SecretsCurrent() + "/", To: l.SecretsGen(n) + "/"})
	}
	return rw
}
