package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/release"
)

// fakeRollout is a rollout the fake server plays back: each read of it
// returns its current step and moves to the next one, except while it
// waits for promotion or an operator paused or aborted it.
type fakeRollout struct {
	steps    []api.Rollout
	at       int
	override string // paused or aborted by an operator, or waiting-window
	// windowOverride is what resume --now set (index + 1 of a wave).
	windowOverride int
	reads          int
}

// current is the rollout as a read shows it now.
func (fr *fakeRollout) current() api.Rollout {
	r := cloneRollout(fr.steps[fr.at])
	if fr.override != "" {
		r.State = fr.override
		r.Reason = fr.override + " by token:ci"
	}
	if fr.override == api.RolloutWaiting {
		// It waits only between waves: the waves before passed.
		for r.Wave < len(r.Waves)-1 && r.Waves[r.Wave].State != api.WavePending {
			r.Waves[r.Wave].State = api.WavePassed
			r.Wave++
		}
		r.Strategy.Windows = []string{"Mon-Fri 02:00-05:00 Europe/Berlin"}
		r.Reason = r.Waves[r.Wave].Name + " waits for a maintenance window (the release's Mon-Fri 02:00-05:00 Europe/Berlin); next opens Tue 2026-11-24 02:00 CET"
		r.WindowOpensAt = time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)
	}
	r.WindowOverride = fr.windowOverride
	if fr.override == api.RolloutAborted {
		abortWaves(&r)
	}
	return r
}

// fakeRollouts is the rollout side of the fake server.
type fakeRollouts struct {
	rollouts  []*fakeRollout // oldest first
	manifests map[string]json.RawMessage
	// failNodes fail in the rollouts the fake starts for new releases.
	failNodes map[string]bool
	// stream is how the event stream answers: "" sends an event every
	// millisecond, "refuse" answers 404, "close" ends the stream at once.
	stream string
	// onRolloutRead, if set, runs after the n-th (from 1) read of rollout
	// id, with the lock held.
	onRolloutRead func(f *fakeServer, id string, n int)
	nextRollout   int
	nextSeq       int64
}

func newFakeRollouts() fakeRollouts {
	return fakeRollouts{manifests: map[string]json.RawMessage{}, failNodes: map[string]bool{}, nextRollout: 10, nextSeq: 100}
}

func (f *fakeServer) findRollout(id string) *fakeRollout {
	for _, fr := range f.rollouts {
		if fr.steps[0].ID == id {
			return fr
		}
	}
	return nil
}

// handleRollouts registers the rollout, manifest and event stream routes.
func (f *fakeServer) handleRollouts(mux *http.ServeMux, handle func(route, role string, h func(w http.ResponseWriter, r *http.Request, body []byte))) {
	f.cannedRollouts()
	f.cannedManifests()
	handle(api.RouteRollouts, api.RoleViewer, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		out := []api.Rollout{}
		for _, fr := range slices.Backward(f.rollouts) {
			out = append(out, fr.current())
		}
		writeJSON(w, http.StatusOK, out)
	})
	handle(api.RouteRollout, api.RoleViewer, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		id := r.PathValue("id")
		fr := f.findRollout(id)
		if fr == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "no rollout "+strconv.Quote(id))
			return
		}
		writeJSON(w, http.StatusOK, fr.current())
		if st := fr.steps[fr.at].State; fr.override == "" && st != api.RolloutAwaiting && st != api.RolloutHeld {
			fr.at = min(fr.at+1, len(fr.steps)-1)
		}
		fr.reads++
		if f.onRolloutRead != nil {
			f.onRolloutRead(f, id, fr.reads)
		}
	})
	action := func(route string, act func(w http.ResponseWriter, fr *fakeRollout, body []byte)) {
		handle(route, api.RoleDeployer, func(w http.ResponseWriter, r *http.Request, body []byte) {
			fr := f.findRollout(r.PathValue("id"))
			if fr == nil {
				writeErr(w, http.StatusNotFound, api.CodeNotFound, "no rollout "+strconv.Quote(r.PathValue("id")))
				return
			}
			act(w, fr, body)
		})
	}
	conflict := func(w http.ResponseWriter, fr *fakeRollout, what string) {
		writeErr(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("rollout %s is %s: %s", fr.steps[0].ID, fr.current().State, what))
	}
	action(api.RouteRolloutPause, func(w http.ResponseWriter, fr *fakeRollout, _ []byte) {
		if st := fr.current().State; st != api.RolloutRunning && st != api.RolloutQueued {
			conflict(w, fr, "only a running or queued rollout can be paused")
			return
		}
		fr.override = api.RolloutPaused
		writeJSON(w, http.StatusOK, fr.current())
	})
	action(api.RouteRolloutResume, func(w http.ResponseWriter, fr *fakeRollout, body []byte) {
		var req api.RolloutResumeRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, "request body: "+err.Error())
			return
		}
		switch {
		case req.Now && fr.override != api.RolloutPaused && fr.override != api.RolloutWaiting:
			conflict(w, fr, "--now starts the next wave of a rollout that is waiting-window or paused")
			return
		case !req.Now && fr.override != api.RolloutPaused:
			conflict(w, fr, "only a paused rollout can be resumed")
			return
		case req.Now:
			fr.windowOverride = fr.current().Wave + 1
		}
		fr.override = ""
		writeJSON(w, http.StatusOK, fr.current())
	})
	action(api.RouteRolloutPromote, func(w http.ResponseWriter, fr *fakeRollout, _ []byte) {
		if st := fr.current().State; fr.override != "" || st != api.RolloutAwaiting && st != api.RolloutHeld {
			conflict(w, fr, "only a rollout awaiting promotion or held can be promoted")
			return
		}
		fr.at++
		writeJSON(w, http.StatusOK, fr.current())
	})
	action(api.RouteRolloutAbort, func(w http.ResponseWriter, fr *fakeRollout, _ []byte) {
		if finished(fr.current().State) {
			conflict(w, fr, "it has finished")
			return
		}
		fr.override = api.RolloutAborted
		writeJSON(w, http.StatusOK, fr.current())
	})
	action(api.RouteRolloutRollback, func(w http.ResponseWriter, fr *fakeRollout, _ []byte) {
		cur := fr.current()
		var nodes []string
		prev := map[string]string{}
		for _, wv := range cur.Waves {
			for _, n := range wv.Nodes {
				if n.State != api.RolloutNodePending && n.State != api.RolloutNodeSkipped && n.State != api.RolloutNodeDown && n.Previous != "" {
					nodes = append(nodes, n.Name)
					prev[n.Name] = cur.Manifest
				}
			}
		}
		if len(nodes) == 0 {
			conflict(w, fr, "no node of it switched: nothing to go back to")
			return
		}
		ro := api.Rollout{
			ID: f.rolloutID(), Release: cur.Release, Group: cur.Group, Manifest: cur.Waves[0].Nodes[0].Previous,
			Strategy: api.Strategy{Kind: api.StrategyAllAtOnce}, Rollback: true,
			CreatedAt: now, UpdatedAt: now, CreatedBy: "token:ci",
		}
		nr := &fakeRollout{steps: simulate(ro, nodes, prev, nil, false)}
		f.rollouts = append(f.rollouts, nr)
		writeJSON(w, http.StatusCreated, nr.current())
	})
	action(api.RouteRolloutRetry, func(w http.ResponseWriter, fr *fakeRollout, body []byte) {
		var req api.RolloutRetryRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
			return
		}
		cur := fr.current()
		found, retried := false, 0
		for i := range cur.Waves {
			for j := range cur.Waves[i].Nodes {
				n := &cur.Waves[i].Nodes[j]
				if req.Node != "" && n.Name != req.Node {
					continue
				}
				found = true
				if n.State == api.RolloutNodeFailed && (req.Node != "" || i == cur.Wave) {
					n.State, n.Reason, n.PublishedAt = api.RolloutNodeSwitching, "", now
					cur.Waves[i].State = api.WaveRunning
					retried++
				}
			}
		}
		switch {
		case req.Node != "" && !found:
			writeErr(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("node %s is not in rollout %s", req.Node, cur.ID))
			return
		case retried == 0:
			conflict(w, fr, "no failed node to retry")
			return
		}
		cur.State, cur.Reason, cur.Failures = api.RolloutRunning, "", cur.Failures-retried
		fr.steps = append(fr.steps[:fr.at+1:fr.at+1], cur)
		fr.at++
		writeJSON(w, http.StatusOK, cur)
	})
	handle(api.RouteManifest, api.RoleViewer, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		m, ok := f.manifests[r.PathValue("id")]
		if !ok {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "no manifest "+r.PathValue("id"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(m)
	})
	// The stream must not hold the lock while it runs.
	mux.HandleFunc(api.RouteEventStream, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), nil})
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		_, known := f.roles[tok]
		mode := f.stream
		f.mu.Unlock()
		switch {
		case !known:
			writeErr(w, http.StatusUnauthorized, api.CodeUnauthorized, "missing or unknown token")
			return
		case mode == "refuse":
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "not found")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, ": keepalive\n\n")
		_ = rc.Flush()
		if mode == "close" {
			return
		}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			f.mu.Lock()
			f.nextSeq++
			e := api.Event{Seq: f.nextSeq, Time: now, Actor: "server", Action: "rollout.progress"}
			f.mu.Unlock()
			b, _ := json.Marshal(e)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Action, b); err != nil {
				return
			}
			_ = rc.Flush()
		}
	})
}

func (f *fakeServer) rolloutID() string {
	id := fmt.Sprintf("ro%d", f.nextRollout)
	f.nextRollout++
	return id
}

// startRollout starts the rollout of a new release, or answers 409 when
// its group is busy and the request does not queue.
func (f *fakeServer) startRollout(w http.ResponseWriter, rel *api.Release, req api.CreateReleaseRequest) bool {
	queued := false
	for _, fr := range f.rollouts {
		if cur := fr.current(); cur.Group == req.Target && !finished(cur.State) {
			if !req.Queue {
				writeErr(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("rollout %s is %s for group %s", cur.ID, cur.State, groupString(cur.Group)))
				return false
			}
			queued = true
		}
	}
	strategy := api.Strategy{Kind: api.StrategyAllAtOnce}
	if req.Strategy != nil {
		strategy = *req.Strategy
	}
	ro := api.Rollout{ID: f.rolloutID(), Release: rel.ID, Group: req.Target, Manifest: rel.Manifest, Strategy: strategy,
		CreatedAt: now, UpdatedAt: now, CreatedBy: "token:ci"}
	prev := map[string]string{}
	for _, n := range rel.Nodes {
		if node := f.find(n); node != nil {
			prev[n] = node.Desired
		}
	}
	f.rollouts = append(f.rollouts, &fakeRollout{steps: simulate(ro, rel.Nodes, prev, f.failNodes, queued)})
	rel.Rollout = ro.ID
	return true
}

// simulate plays a rollout of nodes through: its waves as its strategy
// cuts them, each node switching then healthy (or failed, for fail), the
// halt on too many failures (reverted with auto_revert), the wait for
// promotion after canaries without an analysis window. It returns every
// state a reader would see, in order.
func simulate(ro api.Rollout, nodes []string, prev map[string]string, fail map[string]bool, queued bool) []api.Rollout {
	at := ro.CreatedAt
	ro.Waves = planWaves(ro.Strategy, nodes)
	for i := range ro.Waves {
		for j := range ro.Waves[i].Nodes {
			ro.Waves[i].Nodes[j].Previous = prev[ro.Waves[i].Nodes[j].Name]
		}
	}
	var steps []api.Rollout
	snap := func() { steps = append(steps, cloneRollout(ro)) }
	if queued {
		ro.State, ro.Reason = api.RolloutQueued, "waits for the active rollout of its group"
		snap()
		ro.Reason = ""
	}
	ro.State = api.RolloutRunning
	if len(ro.Waves) == 0 {
		ro.State = api.RolloutSucceeded
		snap()
		return steps
	}
	for i := range ro.Waves {
		ro.Wave = i
		w := &ro.Waves[i]
		w.State, w.StartedAt = api.WaveRunning, at
		for j := range w.Nodes {
			w.Nodes[j].State, w.Nodes[j].PublishedAt = api.RolloutNodeSwitching, now.Add(-5*time.Second)
		}
		snap()
		for j := range w.Nodes {
			n := &w.Nodes[j]
			if fail[n.Name] {
				n.State, n.Reason = api.RolloutNodeFailed, `reverted: health check "web-http" failed`
				ro.Failures++
			} else {
				n.State = api.RolloutNodeHealthy
			}
			snap()
		}
		if ro.Failures > ro.Strategy.MaxFailures {
			w.State, w.FinishedAt = api.WaveFailed, at
			ro.State = api.RolloutFailed
			ro.Reason = fmt.Sprintf("%s failed, more than max_failures %d", plural(ro.Failures, "node"), ro.Strategy.MaxFailures)
			if ro.Strategy.AutoRevert {
				ro.State = api.RolloutReverted
				for k := 0; k <= i; k++ {
					for j := range ro.Waves[k].Nodes {
						if n := &ro.Waves[k].Nodes[j]; n.State == api.RolloutNodeHealthy {
							n.State, n.Reason = api.RolloutNodeReverted, "sent back by auto_revert"
						}
					}
				}
			}
			snap()
			return steps
		}
		w.State, w.FinishedAt = api.WavePassed, at
		if i == 0 && ro.Strategy.Kind == api.StrategyCanary && len(ro.Waves) > 1 {
			if ro.Strategy.Analysis == "" {
				ro.State, ro.Reason = api.RolloutAwaiting, "the canaries are healthy"
				snap()
				ro.State, ro.Reason = api.RolloutRunning, ""
			} else {
				w.State = api.WaveAnalysing
				snap()
				w.State = api.WavePassed
			}
		}
	}
	ro.State = api.RolloutSucceeded
	snap()
	return steps
}

// planWaves cuts nodes into waves as strategy s says.
func planWaves(s api.Strategy, nodes []string) []api.Wave {
	var waves []api.Wave
	chunks := func(names []string, size int) {
		if size <= 0 {
			size = len(names)
		}
		first := len(waves) + 1 // "wave 1" follows "canary" or nothing
		if len(waves) > 0 {
			first = len(waves)
		}
		for len(names) > 0 {
			n := min(size, len(names))
			w := api.Wave{Name: fmt.Sprintf("wave %d", first), State: api.WavePending}
			first++
			for _, name := range names[:n] {
				w.Nodes = append(w.Nodes, api.RolloutNode{Name: name, State: api.RolloutNodePending})
			}
			waves = append(waves, w)
			names = names[n:]
		}
	}
	switch s.Kind {
	case api.StrategyCanary:
		n := s.Canary
		if s.CanaryPercent > 0 {
			n = (s.CanaryPercent*len(nodes) + 99) / 100
		}
		n = min(max(n, 1), len(nodes))
		w := api.Wave{Name: "canary", State: api.WavePending}
		for _, name := range nodes[:n] {
			w.Nodes = append(w.Nodes, api.RolloutNode{Name: name, State: api.RolloutNodePending})
		}
		waves = append(waves, w)
		chunks(nodes[n:], s.BatchSize)
	case api.StrategyRolling:
		size := s.BatchSize
		if s.MaxUnavailable > 0 && (size == 0 || s.MaxUnavailable < size) {
			size = s.MaxUnavailable
		}
		chunks(nodes, max(size, 1))
	default:
		chunks(nodes, s.MaxParallel)
	}
	return waves
}

func cloneRollout(r api.Rollout) api.Rollout {
	r.Waves = slices.Clone(r.Waves)
	for i := range r.Waves {
		r.Waves[i].Nodes = slices.Clone(r.Waves[i].Nodes)
	}
	return r
}

// cannedRollouts are the rollouts the fake knows from the start, newest
// last: ro5 succeeded, ro6 reverted, ro7 awaits promotion, ro8 runs
// (halfway), ro9 is paused.
func (f *fakeServer) cannedRollouts() {
	add := func(ro api.Rollout, nodes []string, fail []string, at func(steps []api.Rollout) int, override string) {
		ro.UpdatedAt, ro.CreatedBy = now, "token:ci"
		failing := map[string]bool{}
		for _, n := range fail {
			failing[n] = true
		}
		prev := map[string]string{}
		for _, n := range nodes {
			prev[n] = idC
		}
		steps := simulate(ro, nodes, prev, failing, false)
		f.rollouts = append(f.rollouts, &fakeRollout{steps: steps, at: at(steps), override: override})
	}
	last := func(steps []api.Rollout) int { return len(steps) - 1 }
	add(api.Rollout{ID: "ro5", Release: "r7-web", Manifest: idA, Strategy: api.Strategy{Kind: api.StrategyAllAtOnce, OnNodeDown: api.NodeDownWait},
		CreatedAt: now.Add(-2 * time.Hour)}, []string{"db-1", "edge-1", "web-1", "web-2"}, nil, last, "")
	add(api.Rollout{ID: "ro6", Release: "r8-db", Group: "role=db", Manifest: idB,
		Strategy:  api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "5m", AutoRevert: true, OnNodeDown: api.NodeDownWait},
		CreatedAt: now.Add(-50 * time.Minute)}, []string{"db-1", "db-2", "db-3"}, []string{"db-3"}, last, "")
	add(api.Rollout{ID: "ro7", Release: "r9-api", Group: "role=api", Manifest: idB,
		Strategy:  api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Stagger: "30s", OnNodeDown: api.NodeDownSkip},
		CreatedAt: now.Add(-30 * time.Minute)}, []string{"api-1", "api-2", "api-3"}, nil, func(steps []api.Rollout) int {
		return slices.IndexFunc(steps, func(r api.Rollout) bool { return r.State == api.RolloutAwaiting })
	}, "")
	add(api.Rollout{ID: "ro8", Release: "r10-web", Group: "env=staging,role=web", Manifest: idA,
		Strategy:  api.Strategy{Kind: api.StrategyRolling, BatchSize: 2, MaxFailures: 1, OnNodeDown: api.NodeDownWait},
		CreatedAt: now.Add(-3 * time.Minute)}, []string{"web-3", "web-4", "web-5", "web-6"}, nil, func([]api.Rollout) int { return 3 }, "")
	add(api.Rollout{ID: "ro9", Release: "r11-edge", Group: "env=staging,role=edge", Manifest: idA,
		Strategy:  api.Strategy{Kind: api.StrategyRolling, BatchSize: 1, OnNodeDown: api.NodeDownFail, NodeDeadline: "5m"},
		CreatedAt: now.Add(-1 * time.Minute)}, []string{"edge-1", "edge-2"}, nil, func([]api.Rollout) int { return 1 }, api.RolloutPaused)
}

// cannedManifests are the desired manifests of the canned nodes: idA
// (web-1, edge-1) an older web release, idB (web-2) the test release with
// another web.conf; idC (db-1) is not on the server.
func (f *fakeServer) cannedManifests() {
	m := testReleaseManifest(f.t)
	old := cloneManifest(f.t, m)
	old.Units["web.service"] = "[Service]\nExecStart=/srv/web --old\n"
	old.Units["web-cleanup.timer"] = "[Timer]\nOnCalendar=daily\n"
	old.Files["web.conf"] = generation.File{Content: "port = 8000\n"}
	old.Artifacts = slices.DeleteFunc(old.Artifacts, func(a generation.Artifact) bool { return a.Name == "tool" })
	for i := range old.Artifacts {
		if old.Artifacts[i].Name == "web" {
			old.Artifacts[i].SHA256, old.Artifacts[i].Size = sha("old web"), 7
		}
	}
	old.Secrets = []generation.Secret{{Name: "db-password", Ciphertext: fakeCiphertext, Owner: "web", Mode: "0400"}}
	old.Links = []generation.Link{{Path: "/etc/web/web.conf", File: "web.conf"}}
	old.Health.MinHealthyTime = generation.Duration(5 * time.Second)
	old.Health.Checks[0].Interval = generation.Duration(5 * time.Second)
	failed := cloneManifest(f.t, m)
	failed.Files["web.conf"] = generation.File{Content: "port = 8081\n"}
	for id, m := range map[string]*generation.Manifest{idA: old, idB: failed} {
		b, err := m.Canonical()
		if err != nil {
			f.t.Fatal(err)
		}
		f.manifests[id] = b
	}
}

// fakeCiphertext is the ciphertext of the canned secret; no output may
// show it.
const fakeCiphertext = "-----BEGIN AGE ENCRYPTED FILE-----\nZmFrZSBjaXBoZXJ0ZXh0IGZvciB0ZXN0cw==\n-----END AGE ENCRYPTED FILE-----\n"

// testReleaseManifest is the manifest of writeRelease's release.
func testReleaseManifest(t *testing.T) *generation.Manifest {
	t.Helper()
	dir := t.TempDir()
	writeRelease(t, dir, "")
	rel, err := release.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rel.Manifest
}

func cloneManifest(t *testing.T, m *generation.Manifest) *generation.Manifest {
	t.Helper()
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	c, err := generation.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Files == nil {
		c.Files = map[string]generation.File{}
	}
	if c.Units == nil {
		c.Units = map[string]string{}
	}
	return c
}

// appendStrategy appends a [strategy] table to dir's slipway.toml.
func appendStrategy(t *testing.T, dir, strategy string) {
	t.Helper()
	p := filepath.Join(dir, "slipway.toml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(b, "\n[strategy]\n"+strategy+"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// abortWaves marks r's unfinished waves and its unconfirmed nodes aborted,
// as the registry does.
func abortWaves(r *api.Rollout) {
	for wi := range r.Waves {
		w := &r.Waves[wi]
		switch w.State {
		case api.WavePending, api.WaveRunning, api.WaveAnalysing:
			w.State = api.WaveAborted
		}
		for ni := range w.Nodes {
			n := &w.Nodes[ni]
			switch n.State {
			case api.RolloutNodePending, api.RolloutNodeDown:
				n.State, n.Reason = api.RolloutNodeAborted, "not published: the rollout was aborted first"
			case api.RolloutNodeSwitching:
				n.State, n.Reason = api.RolloutNodeAborted, "aborted before it confirmed the release; desired set back to "+n.Previous
			}
		}
	}
}
