package rollout

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/window"
)

// Maintenance windows. A rollout starts a new wave only when every set of
// windows that applies to it is open: its strategy's (slipway.toml
// [strategy] windows) and its target group's (Config.GroupWindows, from
// server.toml [[target_group]]). Outside them it is waiting-window, with
// the reason and the time they next open; a wave already started goes
// on (its nodes, also those published when they come back, finish their
// switch). An operator's `resume --now` starts the next wave at once,
// for that wave only. Rollback rollouts never wait: putting a group back
// is not a change to schedule.

// windowCache keeps the parsed windows of strategies: a waiting rollout
// is looked at on every tick.
type windowCache struct {
	mu   sync.Mutex
	sets map[string]window.Set
}

func (c *windowCache) parse(list []string) (window.Set, error) {
	key := strings.Join(list, "\n")
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sets[key]; ok {
		return s, nil
	}
	s, err := window.ParseSet(list)
	if err != nil {
		return nil, err
	}
	if c.sets == nil || len(c.sets) > 1000 {
		c.sets = map[string]window.Set{}
	}
	c.sets[key] = s
	return s, nil
}

// windowsOf returns the sets of windows that gate ro's waves and says
// which they are, for its reason.
func (sm *Machine) windowsOf(ro *rolloutRec) ([]window.Set, string, error) {
	if ro.Rollback {
		return nil, "", nil
	}
	var sets []window.Set
	var desc []string
	if len(ro.Strategy.Windows) > 0 {
		s, err := sm.windows.parse(ro.Strategy.Windows)
		if err != nil {
			return nil, "", fmt.Errorf("strategy.windows: %w", err)
		}
		sets, desc = append(sets, s), append(desc, "the release's "+s.String())
	}
	if s := sm.cfg.GroupWindows[ro.Group]; len(s) > 0 {
		sets, desc = append(sets, s), append(desc, "the target group's "+s.String())
	}
	return sets, strings.Join(desc, " and "), nil
}

// awaitWindow decides whether ro's pending wave may start now. It returns
// wait = true after making ro waiting-window (the transition's name when
// it just began); wait = false when the wave may start (a rollout that was
// waiting is running again, audited).
func (sm *Machine) awaitWindow(t *tx, ro *rolloutRec, now time.Time) (string, bool, error) {
	sets, desc, err := sm.windowsOf(ro)
	if err != nil || len(sets) == 0 {
		return "", false, err
	}
	w := ro.Waves[ro.Wave]
	opens := window.NextOpenAll(now, sets...)
	if ro.WindowOverride == ro.Wave+1 || opens.Equal(now) {
		if ro.State != api.RolloutWaiting {
			return "", false, nil
		}
		// Waiting until now, so the window opened (an override makes the
		// rollout running at once, audited as its resume).
		ro.State, ro.Reason, ro.WindowOpensAt = api.RolloutRunning, "", time.Time{}
		return "", false, t.Event("server", "rollout.window.open", ro.ID, w.Name+" starts inside "+desc)
	}
	was := ro.State
	ro.State, ro.WindowOpensAt = api.RolloutWaiting, opens
	if opens.IsZero() {
		ro.Reason = fmt.Sprintf("%s waits for a maintenance window, but %s never overlap; start it with `slipway rollout resume --now %s`", w.Name, desc, ro.ID)
	} else {
		ro.Reason = fmt.Sprintf("%s waits for a maintenance window (%s); next opens %s", w.Name, desc, opens.Format("Mon 2006-01-02 15:04 MST"))
	}
	if was == api.RolloutWaiting {
		return "", true, nil
	}
	return CrashWindowWait, true, t.Event("server", "rollout.window.wait", ro.ID, ro.Reason)
}

// RolloutResumeNow starts the next wave of a rollout that waits for a
// maintenance window (or is paused) at once, outside the windows: for
// that wave only; later waves wait for their windows again. A paused
// rollout is resumed as by RolloutAction "resume". Audited as
// rollout.resume.
func (sm *Machine) RolloutResumeNow(ctx context.Context, actor, id string) (api.Rollout, error) {
	return sm.operate(ctx, actor, id, CrashResume, func(t *tx, ro *rolloutRec) (string, string, error) {
		if ro.State != api.RolloutWaiting && ro.State != api.RolloutPaused {
			return "", "", fmt.Errorf("%w: cannot resume rollout %s now: it is %s (--now starts the next wave of a rollout that is waiting-window or paused)", registry.ErrConflict, id, ro.State)
		}
		next := -1
		for i := ro.Wave; i < len(ro.Waves); i++ {
			if ro.Waves[i].State == api.WavePending {
				next = i
				break
			}
		}
		if next < 0 {
			return "", "", fmt.Errorf("%w: rollout %s has no wave left to start; resume it without --now", registry.ErrConflict, id)
		}
		ro.WindowOverride = next + 1
		ro.State, ro.Reason = api.RolloutRunning, "resumed by "+actor+" with --now: "+ro.Waves[next].Name+" starts outside the maintenance windows"
		if ro.Waves[ro.Wave].State == api.WavePassed {
			ro.State = api.RolloutAwaiting // paused while it awaited promotion, as resume does
		}
		return "resume", "now: " + ro.Waves[next].Name + " may start outside the maintenance windows", nil
	})
}
