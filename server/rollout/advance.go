package rollout

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// turn is one transition of one rollout inside one transaction: what
// advance and its steps share (the rollout, what the step observes, the
// time it runs at and the manifest, read once when a node is published).
type turn struct {
	sm  *Machine
	t   *tx
	ro  *rolloutRec
	obs observed
	now time.Time
	m   *generation.Manifest
}

// advance computes one transition of ro in t and returns its name ("" when
// nothing changed is decided by the caller comparing records): observe the
// nodes, count the failures (halting past max_failures), then move the
// current wave on: start it, close it, or analyse it.
func (sm *Machine) advance(t *tx, ro *rolloutRec, obs observed) (string, error) {
	tu := &turn{sm: sm, t: t, ro: ro, obs: obs, now: sm.now()}
	const point = "observe"
	if err := tu.observe(); err != nil {
		return "", err
	}
	failures, first := countFailures(ro)
	ro.Failures = failures
	if failures > ro.Strategy.MaxFailures {
		return sm.halt(t, ro, fmt.Sprintf("%d node(s) failed (max_failures %d); first: %s", failures, ro.Strategy.MaxFailures, first))
	}
	if ro.State != api.RolloutRunning && ro.State != api.RolloutWaiting {
		return point, nil // paused or awaiting promotion: observe only
	}
	switch ro.Waves[ro.Wave].State {
	case api.WavePending:
		return tu.startWave(point)
	case api.WaveRunning:
		return tu.closeWave(point)
	case api.WaveAnalysing:
		return tu.analyseWave(point)
	}
	return point, nil
}

// manifest reads the rollout's manifest once per turn.
func (tu *turn) manifest() (*generation.Manifest, error) {
	if tu.m != nil {
		return tu.m, nil
	}
	m, err := tu.t.Manifest(tu.ro.Manifest)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", tu.ro.Manifest, err)
	}
	tu.m = m
	return m, nil
}

// publish tells node n to switch to the rollout's manifest.
func (tu *turn) publish(n *api.RolloutNode) error {
	mm, err := tu.manifest()
	if err != nil {
		return err
	}
	if n.PublishedAt.IsZero() {
		// What the node goes back to is the newest generation it ran
		// and confirmed when its wave came (not what it was told to
		// run, nor what it is switching to: either may be a release
		// that fails on it; and not when the rollout was created: it
		// may have waited in a queue).
		prev, err := tu.t.LastConfirmed(n.Name)
		if err != nil {
			return err
		}
		n.Previous = prev
	}
	if err := tu.t.PublishDesired(n.Name, tu.ro.Manifest, tu.ro.Release, tu.ro.ID, mm); err != nil {
		return err
	}
	n.State, n.PublishedAt, n.Reason = api.RolloutNodeSwitching, tu.now, ""
	return tu.t.Event("server", "rollout.publish", tu.ro.ID, n.Name)
}

// observe looks again at every published node of every wave that may have
// changed: a node can still fail after its wave passed (e.g. during a
// canary analysis).
func (tu *turn) observe() error {
	ro := tu.ro
	analysing := ro.Waves[ro.Wave].State == api.WaveAnalysing
	for wi := range ro.Waves {
		inAnalysis := analysing && wi == ro.Wave
		for ni := range ro.Waves[wi].Nodes {
			n := &ro.Waves[wi].Nodes[ni]
			if !mayChange(ro, n, inAnalysis, tu.obs, tu.now) {
				continue
			}
			view, rep, err := tu.t.NodeState(n.Name)
			if err != nil {
				return err
			}
			switch n.State {
			case api.RolloutNodeSwitching:
				err = tu.switching(n, view, rep)
			case api.RolloutNodeHealthy:
				err = tu.healthy(n, view, inAnalysis)
			case api.RolloutNodeDown:
				err = tu.down(n, view)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// switching: a node switching to the rollout's manifest is healthy once
// committed on it, failed when its agent reports a failure of this
// switch or when the deadline passed.
func (tu *turn) switching(n *api.RolloutNode, view api.Node, rep *api.Report) error {
	ro := tu.ro
	switch {
	case committedOn(view, rep, ro.Manifest):
		n.State, n.Reason = api.RolloutNodeHealthy, ""
		return tu.t.Event("node:"+n.Name, "rollout.node.healthy", ro.ID, n.Name)
	case rep != nil && rep.State == api.AgentFailed && rep.Target == ro.Manifest && tu.t.FailedSince(n.Name, n.PublishedAt):
		n.State, n.Reason = api.RolloutNodeFailed, rep.Reason
		return tu.sm.nodeFailed(tu.t, ro, "node:"+n.Name, n)
	case tu.now.Sub(n.PublishedAt) > ro.Deadline:
		n.State, n.Reason = api.RolloutNodeFailed, fmt.Sprintf("not confirmed healthy within %s (node %s%s)", ro.Deadline, view.State, agentSays(rep, ro.Manifest))
		return tu.sm.nodeFailed(tu.t, ro, "server", n)
	}
	return nil
}

// healthy: a healthy node of the wave under analysis fails when it fails
// (reverts) during the analysis.
func (tu *turn) healthy(n *api.RolloutNode, view api.Node, inAnalysis bool) error {
	if !inAnalysis || view.State != api.NodeFailed {
		return nil
	}
	n.State, n.Reason = api.RolloutNodeFailed, "failed during the analysis: "+view.Report.Reason
	return tu.sm.notify(tu.t, tu.ro, api.NotifyNodeFailed, n.Name, n.Reason)
}

// down: a node that was offline when its wave started is published once
// it is back (while the rollout runs).
func (tu *turn) down(n *api.RolloutNode, view api.Node) error {
	if tu.ro.State != api.RolloutRunning || view.State == api.NodeOffline {
		return nil
	}
	return tu.publish(n)
}

// countFailures counts ro's failed nodes over all waves and names the
// first.
func countFailures(ro *rolloutRec) (failures int, first string) {
	for _, wv := range ro.Waves {
		for _, n := range wv.Nodes {
			if n.State == api.RolloutNodeFailed {
				failures++
				if first == "" {
					first = n.Name + ": " + n.Reason
				}
			}
		}
	}
	return failures, first
}

// startWave starts the pending current wave once the stagger after the
// previous wave and the deployment window allow it: it publishes to every
// node online and treats the offline ones as on_node_down says.
func (tu *turn) startWave(point string) (string, error) {
	ro, now := tu.ro, tu.now
	if ro.Wave > 0 && now.Sub(ro.Waves[ro.Wave-1].FinishedAt) < ro.Stagger {
		return point, nil
	}
	if p, wait, err := tu.sm.awaitWindow(tu.t, ro, now); err != nil || wait {
		return cmp.Or(p, point), err
	}
	w := &ro.Waves[ro.Wave]
	w.State, w.StartedAt = api.WaveRunning, now
	for ni := range w.Nodes {
		if err := tu.startNode(&w.Nodes[ni]); err != nil {
			return "", err
		}
	}
	if ro.Wave == 0 {
		if err := tu.sm.notify(tu.t, ro, api.NotifyRolloutStarted, "", fmt.Sprintf("%s of %s: %d wave(s)", ro.Strategy.Kind, ro.Release, len(ro.Waves))); err != nil {
			return "", err
		}
	}
	return "wave-start", tu.t.Event("server", "rollout.wave.start", ro.ID, fmt.Sprintf("%s (%d/%d): %d node(s)", w.Name, ro.Wave+1, len(ro.Waves), len(w.Nodes)))
}

// startNode publishes to node n of a starting wave, or, when it is
// offline, skips it, fails it or waits for it (on_node_down).
func (tu *turn) startNode(n *api.RolloutNode) error {
	view, _, err := tu.t.NodeState(n.Name)
	if err != nil {
		return err
	}
	if view.State != api.NodeOffline {
		return tu.publish(n)
	}
	switch tu.ro.Strategy.OnNodeDown {
	case api.NodeDownSkip:
		n.State, n.Reason = api.RolloutNodeSkipped, "offline when its wave started"
	case api.NodeDownFail:
		n.State, n.Reason = api.RolloutNodeFailed, "offline when its wave started"
	default:
		n.State, n.Reason = api.RolloutNodeDown, "offline; published when it is back"
	}
	if err := tu.t.Event("server", "rollout.node."+n.State, tu.ro.ID, n.Name+": offline when its wave started"); err != nil {
		return err
	}
	if n.State == api.RolloutNodeFailed {
		return tu.sm.notify(tu.t, tu.ro, api.NotifyNodeFailed, n.Name, n.Reason)
	}
	return nil
}

// closeWave ends the running current wave once none of its nodes is still
// switching, down or pending: into its analysis (canary window or gates)
// or passed.
func (tu *turn) closeWave(point string) (string, error) {
	ro := tu.ro
	w := &ro.Waves[ro.Wave]
	for _, n := range w.Nodes {
		if n.State == api.RolloutNodeSwitching || n.State == api.RolloutNodeDown || n.State == api.RolloutNodePending {
			return point, nil
		}
	}
	w.FinishedAt = tu.now
	if ro.canaryWindow() || len(ro.Strategy.AnalysisGates) > 0 {
		w.State = api.WaveAnalysing
		return "wave-analysing", tu.t.Event("server", "rollout.wave.analysing", ro.ID, analysingWhat(ro))
	}
	return tu.sm.wavePassed(tu.t, ro)
}

// analyseWave runs the current wave's analysis (gates, analysis.go) and
// its canary window: it waits while either runs, passes the wave when the
// gates pass, and promotes a canary wave whose window passed.
func (tu *turn) analyseWave(point string) (string, error) {
	ro := tu.ro
	w := &ro.Waves[ro.Wave]
	p, v, err := tu.sm.analyse(tu.t, ro, tu.obs, tu.now)
	switch {
	case err != nil || v == analysis.Halt || v == analysis.Paused:
		return p, err
	case v == analysis.Running || (ro.canaryWindow() && tu.now.Sub(w.FinishedAt) < ro.Analysis):
		return point, nil
	case !ro.canaryWindow():
		return tu.sm.wavePassed(tu.t, ro)
	}
	w.State = api.WavePassed
	ro.Wave++
	if err := tu.sm.notify(tu.t, ro, api.NotifyWavePassed, "", w.Name+": canaries stayed healthy for "+ro.Analysis.String()); err != nil {
		return "", err
	}
	return "analysis-passed", tu.t.Event("server", "rollout.promote", ro.ID, fmt.Sprintf("canaries stayed healthy for %s; promoted automatically", ro.Analysis))
}

// canaryWindow reports whether ro's current wave is a canary wave with an
// analysis window (strategy analysis) before the next wave.
func (ro *rolloutRec) canaryWindow() bool {
	return ro.Waves[ro.Wave].Name == "canary" && ro.Wave < len(ro.Waves)-1 && ro.Analysis > 0
}

func analysingWhat(ro *rolloutRec) string {
	var what []string
	if ro.canaryWindow() {
		what = append(what, "analysis window "+ro.Analysis.String())
	}
	for _, g := range ro.Strategy.AnalysisGates {
		what = append(what, "gate "+g.Name)
	}
	return ro.Waves[ro.Wave].Name + " healthy; " + strings.Join(what, ", ")
}

// wavePassed ends ro's current wave once its nodes confirmed (and its
// analysis passed): a canary wave awaits promotion, the last wave ends
// the rollout, any other one lets the next start.
func (sm *Machine) wavePassed(t *tx, ro *rolloutRec) (string, error) {
	w := &ro.Waves[ro.Wave]
	last := ro.Wave == len(ro.Waves)-1
	if w.Name == "canary" && !last {
		w.State = api.WavePassed
		ro.State, ro.Reason = api.RolloutAwaiting, "canaries healthy; promote to continue"
		if err := sm.notify(t, ro, api.NotifyWavePassed, "", w.Name+": canaries healthy; awaiting promotion"); err != nil {
			return "", err
		}
		return "awaiting-promotion", t.Event("server", "rollout.awaiting-promotion", ro.ID, "canaries healthy")
	}
	w.State = api.WavePassed
	if err := t.Event("server", "rollout.wave.passed", ro.ID, w.Name); err != nil {
		return "", err
	}
	if err := sm.notify(t, ro, api.NotifyWavePassed, "", w.Name); err != nil {
		return "", err
	}
	if last {
		return sm.finish(t, ro)
	}
	ro.Wave++
	return "wave-passed", nil
}

func (sm *Machine) finish(t *tx, ro *rolloutRec) (string, error) {
	ro.State, ro.Reason = api.RolloutSucceeded, ""
	if ro.Failures > 0 {
		ro.Reason = fmt.Sprintf("%d node(s) failed within max_failures %d", ro.Failures, ro.Strategy.MaxFailures)
	}
	if err := sm.releaseGroup(t, ro); err != nil {
		return "", err
	}
	if err := sm.notify(t, ro, api.NotifySucceeded, "", ro.Reason); err != nil {
		return "", err
	}
	return "succeeded", t.Event("server", "rollout.succeeded", ro.ID, ro.Release)
}

// halt stops a rollout that failed: its unfinished waves fail, with
// auto_revert every node it switched goes back at once (revert), the
// manifest is quarantined fleet-wide, and the group's next queued rollout
// may start.
func (sm *Machine) halt(t *tx, ro *rolloutRec, reason string) (string, error) {
	ro.State, ro.Reason = api.RolloutFailed, reason
	for wi := range ro.Waves {
		wv := &ro.Waves[wi]
		if wv.State == api.WaveRunning || wv.State == api.WaveAnalysing {
			wv.State, wv.FinishedAt = api.WaveFailed, sm.now()
		}
	}
	if ro.Strategy.AutoRevert {
		if err := revert(t, ro); err != nil {
			return "", err
		}
	}
	if err := t.Put(kQuarantine+ro.Manifest, quarantineRec{Rollout: ro.ID, Reason: reason, At: sm.now()}); err != nil {
		return "", err
	}
	if err := sm.releaseGroup(t, ro); err != nil {
		return "", err
	}
	kind := api.NotifyHalted
	if ro.State == api.RolloutReverted {
		kind = api.NotifyReverted
	}
	if err := sm.notify(t, ro, kind, "", ro.Reason); err != nil {
		return "", err
	}
	return "halted", t.Event("server", "rollout."+ro.State, ro.ID, ro.Reason)
}

// revert sends every node the failed rollout ro switched back to its
// previous generation: only one it ran and confirmed (Previous, recorded
// when its wave came; publish), and one this server published. ro's reason
// names the nodes sent back and those with nothing to go back to.
func revert(t *tx, ro *rolloutRec) error {
	ro.State = api.RolloutReverted
	var reverted, stuck []string
	for wi := range ro.Waves {
		for ni := range ro.Waves[wi].Nodes {
			n := &ro.Waves[wi].Nodes[ni]
			if n.State != api.RolloutNodeSwitching && n.State != api.RolloutNodeHealthy && n.State != api.RolloutNodeFailed {
				continue
			}
			if n.Previous == "" || n.Previous == ro.Manifest {
				stuck = append(stuck, n.Name)
				continue
			}
			pm, err := t.Manifest(n.Previous)
			if errors.Is(err, store.ErrNotFound) {
				stuck = append(stuck, n.Name) // it ran something this server never published
				continue
			}
			if err != nil {
				return fmt.Errorf("previous manifest of %s: %w", n.Name, err)
			}
			if err := t.SetDesired(n.Name, n.Previous, "revert of "+ro.ID, pm); err != nil {
				return err
			}
			if n.State != api.RolloutNodeFailed {
				n.State = api.RolloutNodeReverted
			}
			reverted = append(reverted, n.Name)
		}
	}
	ro.Reason += fmt.Sprintf("; auto_revert sent %d node(s) back: %s", len(reverted), strings.Join(reverted, ", "))
	if len(stuck) > 0 {
		ro.Reason += fmt.Sprintf("; no previous generation to revert to on: %s", strings.Join(stuck, ", "))
	}
	return nil
}
