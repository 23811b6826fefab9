package cli

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestRolloutGolden runs the rollout, diff and deploy-follow commands
// against the fake server and compares their transcripts with
// testdata/*.golden. Terminal output is shown with ESC as "␛".
func TestRolloutGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		vars     map[string]string // over SLIPWAY_SERVER=<fake>, SLIPWAY_TOKEN=<admin>
		setup    func(f *fakeServer)
		strategy string // appended to slipway.toml as [strategy]
		tty      bool
	}{
		{name: "rollouts", args: []string{"rollouts"}},
		{name: "rollouts-json", args: []string{"rollouts", "--json"}},
		{name: "rollouts-empty", args: []string{"rollouts"}, setup: func(f *fakeServer) { f.rollouts = nil }},
		{name: "rollout-show", args: []string{"rollout", "show", "ro8"}},
		{name: "rollout-show-awaiting", args: []string{"rollout", "show", "ro7"}},
		{name: "rollout-show-reverted", args: []string{"rollout", "show", "ro6"}},
		{name: "rollout-show-paused", args: []string{"rollout", "show", "ro9"}},
		{name: "rollout-show-json", args: []string{"rollout", "show", "ro6", "--json"}},
		{name: "rollout-show-missing", args: []string{"rollout", "show", "ro99"}},
		{name: "rollout-show-not-an-id", args: []string{"rollout", "show", "r8-web"}},
		{name: "rollout-watch", args: []string{"rollout", "watch", "ro8"}},
		{name: "rollout-watch-json", args: []string{"rollout", "watch", "ro8", "--json"}},
		{name: "rollout-watch-tty", args: []string{"rollout", "watch", "ro8"}, tty: true},
		{name: "rollout-watch-awaiting", args: []string{"rollout", "watch", "ro7"}},
		{name: "rollout-watch-until-promotion", args: []string{"rollout", "watch", "ro7", "--until-promotion"}, setup: func(f *fakeServer) {
			f.onRolloutRead = func(f *fakeServer, id string, n int) {
				if id == "ro7" && n == 3 {
					f.findRollout("ro7").at++ // someone promotes it
				}
			}
		}},
		{name: "rollout-watch-reverted", args: []string{"rollout", "watch", "ro6"}},
		{name: "rollout-watch-paused", args: []string{"rollout", "watch", "ro9"}, setup: func(f *fakeServer) {
			f.onRolloutRead = func(f *fakeServer, id string, n int) {
				if id == "ro9" && n == 3 {
					f.findRollout("ro9").override = "" // someone resumes it
				}
			}
		}},
		{name: "rollout-pause", args: []string{"rollout", "pause", "ro8"}},
		{name: "rollout-pause-finished", args: []string{"rollout", "pause", "ro6"}},
		{name: "rollout-pause-viewer", args: []string{"rollout", "pause", "ro8"}, vars: map[string]string{"SLIPWAY_TOKEN": viewerToken}},
		{name: "rollout-resume", args: []string{"rollout", "resume", "ro9"}},
		{name: "rollout-show-waiting", args: []string{"rollout", "show", "ro9"}, setup: waitingWindow},
		{name: "rollout-show-analysis", args: []string{"rollout", "show", "ro6"}, setup: analysisFailed},
		{name: "rollout-resume-waiting", args: []string{"rollout", "resume", "ro9"}, setup: waitingWindow},
		{name: "rollout-resume-now", args: []string{"rollout", "resume", "--now", "ro9"}, setup: waitingWindow},
		{name: "rollout-resume-now-running", args: []string{"rollout", "resume", "--now", "ro8"}},
		{name: "rollout-promote", args: []string{"rollout", "promote", "ro7"}},
		{name: "rollout-promote-json", args: []string{"rollout", "promote", "ro7", "--json"}},
		{name: "rollout-abort", args: []string{"rollout", "abort", "ro8"}},
		{name: "rollout-rollback", args: []string{"rollout", "rollback", "ro6"}},
		{name: "rollout-retry", args: []string{"rollout", "retry", "ro6"}},
		{name: "rollout-retry-node", args: []string{"rollout", "retry", "ro6", "--node", "db-3"}},
		{name: "rollout-retry-healthy-node", args: []string{"rollout", "retry", "ro6", "--node", "db-1"}},
		{name: "rollout-retry-unknown-node", args: []string{"rollout", "retry", "ro6", "--node", "web-9"}},

		{name: "deploy-follow-canary", args: []string{"deploy", "$DIR", "--until-promotion"}, strategy: "kind = \"canary\"\ncanary = 1\nanalysis = \"1m\"\nmax_failures = 0\nauto_revert = true", setup: func(f *fakeServer) {
			f.nodes = append(f.nodes, api.Node{Name: "web-3", Labels: map[string]string{"role": "web", "env": "prod"}, EnrolledAt: now, State: api.NodeConverged, Desired: idA})
		}},
		{name: "deploy-awaits-promotion", args: []string{"deploy", "$DIR"}, strategy: "kind = \"canary\"\ncanary = 1"},
		{name: "deploy-fails", args: []string{"deploy", "$DIR"}, strategy: "kind = \"rolling\"\nbatch_size = 1\nauto_revert = true", setup: func(f *fakeServer) {
			f.failNodes["web-2"] = true
		}},
		{name: "deploy-detach", args: []string{"deploy", "$DIR", "--detach"}, strategy: "kind = \"rolling\"\nbatch_size = 1\nstagger = \"30s\""},
		{name: "deploy-detach-json", args: []string{"deploy", "$DIR", "--detach", "--json"}},
		{name: "deploy-busy-group", args: []string{"deploy", "$DIR", "--target", "role=web,env=staging"}, setup: func(f *fakeServer) {
			f.nodes = append(f.nodes, api.Node{Name: "web-7", Labels: map[string]string{"role": "web", "env": "staging"}, EnrolledAt: now, State: api.NodeConverged, Desired: idA})
		}},
		{name: "deploy-no-target", args: []string{"deploy", "$DIR", "--target", "role=nope"}},
		{name: "deploy-no-node-enrolled", args: []string{"deploy", "$DIR"}, setup: func(f *fakeServer) { f.nodes = nil }},
		{name: "deploy-dry-run-no-target", args: []string{"deploy", "$DIR", "--dry-run", "--target", "role=nope"}},
		{name: "deploy-queue", args: []string{"deploy", "$DIR", "--target", "role=web,env=staging", "--queue"}, setup: func(f *fakeServer) {
			f.nodes = append(f.nodes, api.Node{Name: "web-7", Labels: map[string]string{"role": "web", "env": "staging"}, EnrolledAt: now, State: api.NodeConverged, Desired: idA})
		}},

		{name: "diff", args: []string{"diff", "$DIR"}},
		{name: "diff-every-node", args: []string{"diff", "$DIR", "--target", ""}, setup: func(f *fakeServer) {
			f.find("edge-1").Desired = testReleaseID(f.t)
		}},
		{name: "diff-json", args: []string{"diff", "$DIR", "--target", "", "--json"}},
		{name: "diff-no-match", args: []string{"diff", "$DIR", "--target", "role=nope"}},
		{name: "deploy-dry-run-diff", args: []string{"deploy", "$DIR", "--dry-run", "--target", ""}, strategy: "kind = \"canary\"\ncanary_percent = 25\nbatch_size = 2\nanalysis = \"5m\"\nmax_failures = 1\non_node_down = \"skip\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			f.blobs[sha(webBlob)] = []byte(webBlob)
			if tt.setup != nil {
				tt.setup(f)
			}
			dir := t.TempDir()
			writeRelease(t, dir, "role=web, env=prod")
			if tt.strategy != "" {
				appendStrategy(t, dir, tt.strategy)
			}
			vars := map[string]string{"SLIPWAY_SERVER": f.URL(), "SLIPWAY_TOKEN": adminToken}
			for k, v := range tt.vars {
				vars[k] = v
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "$DIR", dir)
			}
			e := testEnv(vars)
			if tt.tty {
				e.terminal = func(io.Writer) (bool, int) { return true, 80 }
			}
			r := runCLI(context.Background(), e, args...)
			got := r.transcript()
			for _, secret := range []string{adminToken, deployerToken, viewerToken, fakeCiphertext, "ZmFrZSBjaXBoZXJ0ZXh0IGZvciB0ZXN0cw=="} {
				if strings.Contains(got, secret) {
					t.Errorf("the output shows a secret:\n%s", got)
				}
			}
			got = strings.ReplaceAll(got, dir, "$DIR")
			got = strings.ReplaceAll(got, f.URL(), "$SERVER")
			got = strings.ReplaceAll(got, "\x1b", "␛")
			checkGolden(t, tt.name, got)
		})
	}
}

// waitingWindow makes ro9 wait for its maintenance window.
func waitingWindow(f *fakeServer) { f.findRollout("ro9").override = api.RolloutWaiting }

// analysisFailed makes ro6 a rollout its error-rate gate halted.
func analysisFailed(f *fakeServer) {
	fr := f.findRollout("ro6")
	at := time.Date(2026, 11, 23, 11, 20, 0, 0, time.UTC)
	v := func(x float64) *float64 { return &x }
	for i := range fr.steps {
		r := &fr.steps[i]
		r.Strategy.AnalysisGates = []api.AnalysisGate{{Name: "error-rate", Query: `sum(rate(app_errors_total{instance=~"{{nodes}}"}[1m]))`, Condition: "result < 0.05", Interval: "30s", Count: 3}}
		r.Reason = `analysis "error-rate" failed: 1 of 3 measurements failed (failure_limit 0); last: not result < 0.05 for 1 of 1 series: {} = 0.31`
		r.AnalysisRuns = []api.AnalysisRun{{Gate: "error-rate", Wave: 1, Query: `sum(rate(app_errors_total{instance=~"db-2|db-3"}[1m]))`, Verdict: "failed",
			Successful: 1, Failed: 1, Inconclusive: 1, Reason: r.Reason, Measurements: []api.AnalysisMeasurement{
				{At: at, Outcome: "inconclusive", Message: "no data: the query returned no series"},
				{At: at.Add(30 * time.Second), Outcome: "successful", Value: v(0.002), Message: "result < 0.05 for all 1 series"},
				{At: at.Add(time.Minute), Outcome: "failed", Value: v(0.31), Message: "not result < 0.05 for 1 of 1 series: {} = 0.31"},
			}}}
	}
}

// testReleaseID is the manifest ID of writeRelease's release.
func testReleaseID(t *testing.T) string {
	id, err := testReleaseManifest(t).ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestWatchExitCodes checks watch's exit status for every way a rollout
// ends.
func TestWatchExitCodes(t *testing.T) {
	tests := []struct {
		id   string
		args []string
		code int
	}{
		{"ro5", nil, 0}, // succeeded
		{"ro8", nil, 0}, // runs, then succeeds
		{"ro6", nil, ExitRolloutFailed},
		{"ro7", nil, ExitAwaitsPromotion},
		{"ro7", []string{"--json"}, ExitAwaitsPromotion},
	}
	for _, tt := range tests {
		t.Run(tt.id+strings.Join(tt.args, ""), func(t *testing.T) {
			f := newFakeServer(t)
			e := testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken})
			r := runCLI(context.Background(), e, append([]string{"rollout", "watch", tt.id}, tt.args...)...)
			if got := exitCode(r.err); got != tt.code {
				t.Errorf("exit %d (%v), want %d", got, r.err, tt.code)
			}
		})
	}
	t.Run("aborted meanwhile", func(t *testing.T) {
		f := newFakeServer(t)
		f.onRolloutRead = func(f *fakeServer, id string, n int) {
			if n == 2 {
				f.findRollout(id).override = api.RolloutAborted
			}
		}
		r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken}), "rollout", "watch", "ro8")
		if exitCode(r.err) != ExitRolloutFailed || !strings.Contains(r.err.Error(), "rollout ro8 aborted") {
			t.Errorf("exit %d, error %v", exitCode(r.err), r.err)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		f := newFakeServer(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f.onRolloutRead = func(f *fakeServer, id string, n int) {
			if n == 2 {
				cancel() // Ctrl-C while watching a paused rollout
			}
		}
		r := runCLI(ctx, testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken}), "rollout", "watch", "ro9")
		if r.err == nil || exitCode(r.err) == 0 || !strings.Contains(r.err.Error(), "the rollout goes on") {
			t.Errorf("error %v", r.err)
		}
	})
}

// TestWatchFollowsTheStream checks that watch reads the rollout again on
// events, and polls when the stream is refused or ends, with the same
// output either way.
func TestWatchFollowsTheStream(t *testing.T) {
	var outputs []string
	for _, mode := range []string{"", "refuse", "close"} {
		t.Run("stream "+mode, func(t *testing.T) {
			f := newFakeServer(t)
			f.stream = mode
			r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken}), "rollout", "watch", "ro8")
			if r.err != nil {
				t.Fatalf("watch: %v\n%s", r.err, r.transcript())
			}
			outputs = append(outputs, r.stdout)
			streams := slices.DeleteFunc(f.log(), func(s string) bool { return !strings.HasPrefix(s, "GET /v1/events/stream") })
			if len(streams) == 0 || streams[0] != "GET /v1/events/stream?since=0" {
				t.Errorf("stream requests %v", streams)
			}
			if mode == "refuse" && len(streams) != 1 {
				t.Errorf("a refused stream was asked again: %v", streams)
			}
			if mode != "" && !strings.Contains(r.stderr, "note: event stream: ") {
				t.Errorf("no note that the stream is lost:\n%s", r.stderr)
			}
			if mode == "" && r.stderr != "" {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
	for i := 1; i < len(outputs); i++ {
		if outputs[i] != outputs[0] {
			t.Errorf("output %d differs:\n%s\nwant:\n%s", i, outputs[i], outputs[0])
		}
	}
}

// TestDeploySendsStrategy checks slipway.toml's [strategy] and --queue
// reach the server as api.Strategy.
func TestDeploySendsStrategy(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	writeRelease(t, dir, "role=web")
	appendStrategy(t, dir, `kind = "canary"
canary_percent = 10
batch_size = 3
max_unavailable = 2
stagger = "1m30s"
analysis = "10m"
max_failures = 1
auto_revert = true
on_node_down = "skip"
windows = ["Mon-Fri 02:00-05:00 Europe/Berlin"]

[[analysis]]
name = "errors"
query = 'sum(rate(app_errors_total{instance=~"{{nodes}}"}[1m]))'
condition = "result < 0.01"
scope = "aggregate"
interval = "15s"
consecutive_error_limit = 0`)
	r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--queue", "--detach")
	if r.err != nil {
		t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
	}
	var req api.CreateReleaseRequest
	dec := json.NewDecoder(strings.NewReader(string(f.lastRequest().Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		t.Fatal(err)
	}
	want := api.Strategy{Kind: "canary", CanaryPercent: 10, BatchSize: 3, MaxUnavailable: 2, Stagger: "1m30s", Analysis: "10m0s",
		MaxFailures: 1, AutoRevert: true, OnNodeDown: "skip", Windows: []string{"Mon-Fri 02:00-05:00 Europe/Berlin"},
		AnalysisGates: []api.AnalysisGate{{Name: "errors", Query: `sum(rate(app_errors_total{instance=~"{{nodes}}"}[1m]))`, Condition: "result < 0.01",
			Scope: "aggregate", Interval: "15s", ConsecutiveErrorLimit: new(int)}}}
	if req.Strategy == nil || !reflect.DeepEqual(*req.Strategy, want) || !req.Queue {
		t.Errorf("sent strategy %+v queue %v, want %+v queue true", req.Strategy, req.Queue, want)
	}

	// Without [strategy]: all at once, said explicitly.
	f = newFakeServer(t)
	dir = t.TempDir()
	writeRelease(t, dir, "role=web")
	if r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--detach"); r.err != nil {
		t.Fatal(r.err)
	}
	req = api.CreateReleaseRequest{}
	if err := json.Unmarshal(f.lastRequest().Body, &req); err != nil {
		t.Fatal(err)
	}
	if req.Strategy == nil || !reflect.DeepEqual(*req.Strategy, api.Strategy{Kind: api.StrategyAllAtOnce, OnNodeDown: api.NodeDownWait}) || req.Queue {
		t.Errorf("sent strategy %+v queue %v", req.Strategy, req.Queue)
	}
}

// TestDeployChecksAnalysisGates: a gate the server would refuse is
// refused before any request, naming the gate and what is wrong.
func TestDeployChecksAnalysisGates(t *testing.T) {
	for _, tc := range []struct{ gate, want string }{
		{"name = \"errors\"\nquery = \"up\"\ncondition = \"errors < 1\"", `analysis "errors": condition "errors < 1": want "result OP NUMBER"`},
		{"name = \"errors\"\nquery = \"up\"\ncondition = \"result < 1\"\nscope = \"each\"", `analysis "errors": scope "each": want every-series or aggregate`},
		{"query = \"up\"\ncondition = \"result < 1\"", `analysis: name is required`},
		{"name = \"errors\"\ncondition = \"result < 1\"\ninterval = \"100ms\"", `analysis "errors": query is required`},
	} {
		f := newFakeServer(t)
		dir := t.TempDir()
		writeRelease(t, dir, "role=web")
		appendStrategy(t, dir, "kind = \"rolling\"\n\n[[analysis]]\n"+tc.gate)
		r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--detach")
		if r.err == nil || !strings.Contains(r.err.Error(), "slipway.toml: [[analysis]]: ") || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%q: %v\n%s", tc.gate, r.err, r.transcript())
		}
		if len(f.requests) != 0 {
			t.Errorf("%q: %d requests sent", tc.gate, len(f.requests))
		}
	}
}

// TestDiffReadsOnly checks diff and deploy --dry-run send no writes and
// fetch each desired manifest once.
func TestDiffReadsOnly(t *testing.T) {
	for _, args := range [][]string{{"diff"}, {"deploy", "--dry-run"}} {
		t.Run(args[0], func(t *testing.T) {
			f := newFakeServer(t)
			f.nodes = append(f.nodes, api.Node{Name: "web-3", Labels: map[string]string{"role": "web", "env": "prod"}, EnrolledAt: now, State: api.NodeConverged, Desired: idA})
			dir := t.TempDir()
			writeRelease(t, dir, "")
			r := runCLI(context.Background(), deployEnv(f), append(append(args[:1:1], dir), args[1:]...)...)
			if r.err != nil {
				t.Fatalf("%v\n%s", r.err, r.transcript())
			}
			if w := f.writes(); len(w) > 0 {
				t.Errorf("writes: %v", w)
			}
			manifests := slices.DeleteFunc(f.log(), func(s string) bool { return !strings.HasPrefix(s, "GET /v1/manifests/") })
			want := []string{"GET /v1/manifests/" + idA, "GET /v1/manifests/" + idC, "GET /v1/manifests/" + idB}
			slices.Sort(manifests)
			slices.Sort(want)
			if !slices.Equal(manifests, want) {
				t.Errorf("manifest requests %v, want each desired manifest once: %v", manifests, want)
			}
		})
	}
}

func TestDiffJSONShape(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	writeRelease(t, dir, "")
	r := runCLI(context.Background(), deployEnv(f), "diff", dir, "--json")
	if r.err != nil {
		t.Fatal(r.err)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var rep DiffReport
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	got := map[string]string{}
	for _, n := range rep.Nodes {
		got[n.Node] = n.Change
		if (n.Diff != nil) != (n.Change == ChangeNew || n.Change == ChangeUpdate) {
			t.Errorf("%s: change %s with diff %v", n.Node, n.Change, n.Diff)
		}
	}
	want := map[string]string{"db-1": ChangeUnknown, "edge-1": ChangeUpdate, "new-1": ChangeNew, "web-1": ChangeUpdate, "web-2": ChangeUpdate}
	if !maps.Equal(got, want) {
		t.Errorf("changes %v, want %v", got, want)
	}
}
