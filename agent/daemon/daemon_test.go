package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/health"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

const joinToken = "join-7f3a9c-secret"

// node is one agent under test: its state directory, fake systemd and a
// daemon that can be started, stopped and started again (a restart).
type node struct {
	t      *testing.T
	srv    *fakeServer
	layout stage.Layout
	db     *state.DB
	sd     *fakeSystemd
	logs   *syncBuffer
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	seen   int // reports already looked at by waitReport
}

func newNode(t *testing.T, srv *fakeServer, server string) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{t: t, srv: srv, layout: stage.Layout{Dir: filepath.Join(root, "state")}, sd: newFakeSystemd(), logs: &syncBuffer{}}
	for _, d := range []string{"units", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	db, err := state.Open(n.layout.DB())
	if err != nil {
		t.Fatal(err)
	}
	n.db = db
	join := filepath.Join(root, "join-token")
	if err := os.WriteFile(join, []byte(joinToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.cfg = Config{
		Servers:            []string{server},
		Name:               "web-1",
		Labels:             map[string]string{"role": "web", "env": "test"},
		JoinTokenFile:      join,
		TokenFile:          filepath.Join(n.layout.Dir, "node-token"),
		AgentVersion:       "v1.2.3-test",
		Layout:             n.layout,
		PollWait:           200 * time.Millisecond,
		ReportInterval:     100 * time.Millisecond,
		ConfirmInterval:    20 * time.Millisecond,
		BackoffMin:         10 * time.Millisecond,
		BackoffMax:         50 * time.Millisecond,
		RequestTimeout:     5 * time.Second,
		ResyncInterval:     100 * time.Millisecond,
		MinPollInterval:    5 * time.Millisecond,
		FinalReportTimeout: 2 * time.Second,
	}
	t.Cleanup(func() {
		if n.cancel != nil {
			n.stop()
		}
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(n.logs.String()), "\n")
			t.Logf("%s\n%s\nlast log lines:\n%s", n.srv, n.sd, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return n
}

// start runs a fresh daemon (and a fresh activate.Switcher) on the node's
// state, as after a restart of the agent.
func (n *node) start() {
	n.t.Helper()
	if n.cancel != nil {
		n.t.Fatal("already running")
	}
	log := zerolog.New(n.logs).Level(zerolog.DebugLevel)
	root := filepath.Dir(n.layout.Dir)
	v := &health.Verifier{Probe: activate.Probe(n.sd), Log: log, UnitInterval: 5 * time.Millisecond}
	a := activate.New(activate.Config{
		Layout:       n.layout,
		UnitDir:      filepath.Join(root, "units"),
		LinkPrefixes: []string{filepath.Join(root, "etc")},
		Keep:         5,
	}, n.db, &stage.Stager{Layout: n.layout, Log: log}, n.sd, v, log)
	d, err := New(n.cfg, a, n.db, n.sd, log)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- d.Run(ctx) }()
}

// stop ends the daemon as SIGTERM does and returns Run's error.
func (n *node) stop() error {
	n.t.Helper()
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		return err
	case <-time.After(20 * time.Second):
		n.t.Fatal("Run did not return after its context ended")
		return nil
	}
}

// runErr waits for Run to return on its own.
func (n *node) runErr() error {
	n.t.Helper()
	select {
	case err := <-n.done:
		n.cancel()
		n.cancel = nil
		return err
	case <-time.After(10 * time.Second):
		n.t.Fatal("Run did not return")
		return nil
	}
}

func (n *node) snap() state.Snapshot {
	n.t.Helper()
	s, err := n.db.Snapshot()
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

// gens counts the generations of the history with manifest ID id.
func (n *node) gens(id string) int {
	c := 0
	for _, g := range n.snap().Generations {
		if g.ID == id {
			c++
		}
	}
	return c
}

// waitFor retries cond until it holds, failing the test after 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitReport waits for the first report after the one the previous
// waitReport returned that matches, so a test reads the reports in order.
func (n *node) waitReport(what string, match func(api.Report) bool) api.Report {
	n.t.Helper()
	var got api.Report
	waitFor(n.t, "report: "+what, func() bool {
		n.srv.mu.Lock()
		defer n.srv.mu.Unlock()
		for i := n.seen; i < len(n.srv.reports); i++ {
			if match(n.srv.reports[i]) {
				got, n.seen = n.srv.reports[i], i+1
				return true
			}
		}
		return false
	})
	return got
}

// skipReports makes the next waitReport look only at reports from now on.
func (n *node) skipReports() {
	n.srv.mu.Lock()
	defer n.srv.mu.Unlock()
	n.seen = len(n.srv.reports)
}

// waitPolls waits until the server has answered k more desired polls.
func (n *node) waitPolls(k int) {
	n.t.Helper()
	_, polls, _, _, _ := n.srv.counts()
	waitFor(n.t, "polls", func() bool {
		_, p, _, _, _ := n.srv.counts()
		return p >= polls+k
	})
}

// waitResyncs waits until the server has answered k more desired polls
// with a body: the daemon has looked at the desired generation again k
// times.
func (n *node) waitResyncs(k int) {
	n.t.Helper()
	_, _, full, _, _ := n.srv.counts()
	waitFor(n.t, "resyncs", func() bool {
		_, _, f, _, _ := n.srv.counts()
		return f >= full+k
	})
}

func svc(tag string) string { return "[Service]\nExecStart=/usr/bin/web\n# " + tag + "\n" }

func webManifest(tag string, art generation.Artifact) *generation.Manifest {
	return &generation.Manifest{
		Name:      "web",
		Units:     map[string]string{"web.service": svc(tag) + "# artifacts/web\n"},
		Artifacts: []generation.Artifact{art},
		Health:    generation.Health{MinHealthyTime: 1},
	}
}

func idOf(t *testing.T, m *generation.Manifest) string {
	t.Helper()
	id, err := m.ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEnrolOnceThenReuseToken(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.start()
	r := n.waitReport("idle without a desired generation", func(r api.Report) bool { return r.State == api.AgentIdle })
	if r.AgentVersion != "v1.2.3-test" || r.Current != 0 {
		t.Fatalf("first report %+v", r)
	}
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	srv.mu.Lock()
	enrolls := append([]api.EnrollRequest(nil), srv.enrolls...)
	srv.mu.Unlock()
	want := api.EnrollRequest{Name: "web-1", JoinToken: joinToken, Labels: map[string]string{"role": "web", "env": "test"}, AgentVersion: "v1.2.3-test"}
	if len(enrolls) != 1 || !reflect.DeepEqual(enrolls[0], want) {
		t.Fatalf("enrolments %+v, want one %+v", enrolls, want)
	}
	fi, err := os.Stat(n.cfg.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	b, _ := os.ReadFile(n.cfg.TokenFile)
	if strings.TrimSpace(string(b)) != "node-token-web-1-s3cret" {
		t.Fatalf("token file holds %q", b)
	}

	// A restart uses the stored token: the one-time join token is spent.
	_, _, _, reports, _ := srv.counts()
	n.start()
	waitFor(t, "a report after the restart", func() bool { _, _, _, r, _ := srv.counts(); return r > reports })
	if err := n.stop(); err != nil {
		t.Fatalf("Run after restart: %v", err)
	}
	if e, _, _, _, _ := srv.counts(); e != 1 {
		t.Fatalf("%d enrolments, want 1", e)
	}
	srv.mu.Lock()
	authFail := srv.authFail
	srv.mu.Unlock()
	if authFail != 0 {
		t.Fatalf("%d requests refused for their token", authFail)
	}
	if logs := n.logs.String(); strings.Contains(logs, joinToken) || strings.Contains(logs, "s3cret") {
		t.Fatalf("a token was logged:\n%s", logs)
	}
}

func TestWrongJoinToken(t *testing.T) {
	srv := newFakeServer(t, "the-right-one")
	n := newNode(t, srv, srv.start())
	n.start()
	err := n.runErr()
	if !errors.Is(err, ErrEnrollRefused) || !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("Run: %v, want ErrEnrollRefused wrapping ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), n.cfg.JoinTokenFile) || !strings.Contains(err.Error(), "join token") {
		t.Fatalf("error does not name the join token file: %v", err)
	}
	if strings.Contains(err.Error(), joinToken) || strings.Contains(n.logs.String(), joinToken) {
		t.Fatalf("the join token leaked: %v", err)
	}
	if _, err := os.Stat(n.cfg.TokenFile); !os.IsNotExist(err) {
		t.Fatalf("token file after a refused enrolment: %v", err)
	}
}

func TestNoJoinTokenFile(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.JoinTokenFile = ""
	n.start()
	if err := n.runErr(); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("Run: %v", err)
	}
}

func TestSwitchConfirmReport(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	art := srv.addBlob([]byte("#!/bin/sh\necho web\n"))
	m1 := webManifest("1", art)
	startReported(n)
	id1 := srv.publish(m1, "r1-web")

	r := n.waitReport("idle on the desired generation", func(r api.Report) bool {
		return r.State == api.AgentIdle && r.CurrentID == id1
	})
	if r.Current != 1 || r.LastGood != 1 || r.Outcome != "switched" || r.Reason != "" || r.Phase != "" {
		t.Fatalf("report after the switch: %+v", r)
	}
	if want := []api.GenerationReport{{Number: 1, ID: id1, Status: state.StatusGood}}; !reflect.DeepEqual(r.Generations, want) {
		t.Fatalf("generations %+v, want %+v", r.Generations, want)
	}
	if want := []api.UnitReport{{Name: "web.service", Active: "active", Sub: "running"}}; !reflect.DeepEqual(r.Units, want) {
		t.Fatalf("units %+v, want %+v", r.Units, want)
	}
	srv.mu.Lock()
	var switching, confirmPhase bool
	for _, rep := range srv.reports {
		switching = switching || (rep.State == api.AgentSwitching && rep.Target == id1)
		confirmPhase = confirmPhase || rep.Phase == state.PhaseConfirm
	}
	confirms := append([]api.ConfirmRequest(nil), srv.confirms...)
	blobGets := append([]string(nil), srv.blobGets...)
	confirmedAt := srv.confirmedAt[0]
	srv.mu.Unlock()
	if !switching || !confirmPhase {
		t.Fatalf("no switching report in the confirm phase before the confirm")
	}
	// The report in the confirm phase rode on the first confirm, which the
	// server therefore granted at once; it was not posted apart.
	if len(confirms) != 1 || confirms[0].ID != id1 || confirms[0].Number != 1 {
		t.Fatalf("confirms %+v, want one of generation 1 %s", confirms, id1)
	}
	if c := confirms[0].Report; c == nil || c.State != api.AgentSwitching || c.Phase != state.PhaseConfirm || c.Target != id1 {
		t.Fatalf("the confirm carried the report %+v, want the confirm phase's (switching to %s)", c, id1)
	}
	// None was posted before the confirm (the reporter's timed report may
	// fall in the confirm phase after it).
	if n := confirmPhaseReports(srv, 0, confirmedAt); n != 0 {
		t.Fatalf("%d reports in the confirm phase posted before the confirm, want 0 (the confirm carried it)", n)
	}
	if !reflect.DeepEqual(blobGets, []string{art.SHA256}) {
		t.Fatalf("blob downloads %q", blobGets)
	}
	if c := n.sd.count("start web.service"); c != 1 {
		t.Fatalf("web.service started %d times", c)
	}
	if g, _ := n.snap().Generation(1); g.Source != "server release r1-web" {
		t.Fatalf("history source %q", g.Source)
	}

	// The same desired generation again (resyncs): nothing restarts.
	n.waitResyncs(3)
	if c := n.sd.count("start web.service") + n.sd.count("restart web.service"); c != 1 {
		t.Fatalf("web.service (re)started %d times", c)
	}

	// A new release converges too; the unchanged blob is not fetched again.
	m2 := webManifest("2", art)
	id2 := srv.publish(m2, "r2-web")
	n.waitReport("idle on the second generation", func(r api.Report) bool {
		return r.State == api.AgentIdle && r.CurrentID == id2 && r.Current == 2
	})
	if c := n.sd.count("restart web.service"); c != 1 {
		t.Fatalf("web.service restarted %d times", c)
	}
	srv.mu.Lock()
	blobGets = append([]string(nil), srv.blobGets...)
	srv.mu.Unlock()
	if len(blobGets) != 1 {
		t.Fatalf("blob fetched again: %q", blobGets)
	}

	// No desired generation any more: idle, nothing touched.
	srv.setDesired(nil)
	waitFor(t, "a poll without desired generation", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return srv.none > 0 })
	n.skipReports()
	r = n.waitReport("idle without desired", func(api.Report) bool { return true })
	if r.State != api.AgentIdle || r.Target != "" || r.CurrentID != id2 {
		t.Fatalf("report without a desired generation: %+v", r)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if c := n.sd.count("stop web.service"); c != 0 {
		t.Fatalf("web.service stopped %d times", c)
	}
}

// startReported starts n and waits for its first report, so that the
// report of a switch published next is built when the switch starts, not
// late, after the reporter's first post (a slow machine, -race), when the
// switch may be in its confirm phase already.
func startReported(n *node) {
	n.t.Helper()
	n.start()
	n.waitReport("the first report", func(api.Report) bool { return true })
}

// confirmPhaseReports counts the reports in the confirm phase among the
// server's reports [from, to) (posted, or carried by a confirm).
func confirmPhaseReports(srv *fakeServer, from, to int) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	n := 0
	for _, rep := range srv.reports[from:to] {
		if rep.Phase == state.PhaseConfirm {
			n++
		}
	}
	return n
}

// A server from before confirms carried a report refuses the field (400):
// the agent posts the report apart, confirms without it, and the switch
// goes through; no revert.
func TestConfirmReportRefusedByOlderServer(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	srv.legacyConfirm = true
	n := newNode(t, srv, srv.start())
	art := srv.addBlob([]byte("web binary"))
	n.cfg.ReportInterval = time.Hour // reports on changes only: none timed in the confirm phase
	startReported(n)
	id1 := srv.publish(webManifest("1", art), "r1-web")
	r := n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	if r.Outcome != "switched" {
		t.Fatalf("report after the switch: %+v", r)
	}
	srv.mu.Lock()
	confirms, carried, bad := append([]api.ConfirmRequest(nil), srv.confirms...), srv.carried, srv.badConfirms
	srv.mu.Unlock()
	// The first confirm carried the report and was refused; the second
	// came without it, at once.
	if bad != 1 || len(confirms) != 1 || confirms[0].Report != nil || carried != 0 {
		t.Fatalf("confirms the older server took: %+v (%d carried reports, %d refused)", confirms, carried, bad)
	}
	// Between the refusal and the confirm without it, the report was
	// posted apart, once.
	srv.mu.Lock()
	from, to := srv.refusedAt, srv.confirmedAt[0]
	srv.mu.Unlock()
	if n := confirmPhaseReports(srv, from, to); n != 1 {
		t.Fatalf("%d reports in the confirm phase posted between the refused confirm and the confirm, want 1", n)
	}
}

// switchToFirst enrols n and brings it to a confirmed generation 1.
func switchToFirst(t *testing.T, n *node, srv *fakeServer) (generation.Artifact, string) {
	t.Helper()
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })
	return art, id1
}

func TestNoConfirmReverts(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	art, id1 := switchToFirst(t, n, srv)

	srv.setNever(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(500 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	r := n.waitReport("failed after the revert", func(r api.Report) bool { return r.State == api.AgentFailed })
	if r.Outcome != "reverted" || !strings.Contains(r.Reason, "no confirm from the server within confirm_timeout 500ms") ||
		r.Target != id2 || r.Current != 1 || r.CurrentID != id1 || r.LastGood != 1 {
		t.Fatalf("report after the revert: %+v", r)
	}
	if len(r.Generations) != 2 || r.Generations[1].Status != state.StatusQuarantined || r.Generations[1].ID != id2 {
		t.Fatalf("generations %+v", r.Generations)
	}
	if _, _, _, _, c := srv.counts(); c < 3 { // one for generation 1, at least two for 2
		t.Fatalf("%d confirm attempts: generation 2's confirm was not retried", c)
	}
	if _, ok := n.snap().Quarantined(id2); !ok {
		t.Fatal("generation 2 not quarantined")
	}
}

func TestQuarantinedRetriedOnlyAfterRetryBump(t *testing.T) {
	tests := []struct {
		name           string
		retryKeepsETag bool
	}{
		{"retry wakes the long-poll", false},
		{"server ETag ignores Retry: seen by a resync", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testQuarantinedRetry(t, tt.retryKeepsETag) })
	}
}

func testQuarantinedRetry(t *testing.T, retryKeepsETag bool) {
	srv := newFakeServer(t, joinToken)
	srv.retryKeepsETag = retryKeepsETag
	n := newNode(t, srv, srv.start())
	if !retryKeepsETag {
		n.cfg.ResyncInterval = time.Hour // the retry must arrive by the long-poll
	}
	art, _ := switchToFirst(t, n, srv)

	srv.setNever(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(500 * time.Millisecond)
	id2 := srv.publish(m2, "r2-web")
	n.waitReport("reverted", func(r api.Report) bool { return r.State == api.AgentFailed && r.Outcome == "reverted" })

	// Not retried while Retry stays: the daemon keeps looking (resyncs)
	// and keeps reporting the failure.
	n.waitPolls(3)
	n.skipReports()
	r := n.waitReport("heartbeat", func(api.Report) bool { return true })
	if r.State != api.AgentFailed || r.Target != id2 || r.Outcome != "reverted" || !strings.Contains(r.Reason, "no confirm") || r.Current != 1 {
		t.Fatalf("report %+v", r)
	}
	if g := n.gens(id2); g != 1 {
		t.Fatalf("quarantined generation tried %d times", g)
	}

	// An operator retry (Retry 1): tried once more, fails again.
	n.skipReports()
	srv.retry()
	waitFor(t, "second attempt", func() bool { return n.gens(id2) == 2 })
	r = n.waitReport("reverted again", func(r api.Report) bool {
		return r.State == api.AgentFailed && len(r.Generations) == 3 && r.Generations[2].Status == state.StatusQuarantined
	})
	if r.Outcome != "reverted" || r.Current != 1 || !strings.Contains(r.Reason, "no confirm") {
		t.Fatalf("report %+v", r)
	}
	if seen, ok := n.snap().Retry(id2); !ok || seen != 1 {
		t.Fatalf("retry record %d, %v", seen, ok)
	}

	// A restart does not use the same retry again.
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n.skipReports()
	n.start()
	n.waitPolls(3)
	r = n.waitReport("quarantined after restart", func(r api.Report) bool {
		return r.State == api.AgentFailed && r.Outcome == OutcomeQuarantined
	})
	if r.Target != id2 || !strings.Contains(r.Reason, "no confirm") {
		t.Fatalf("report %+v", r)
	}
	if g := n.gens(id2); g != 2 {
		t.Fatalf("after a restart the quarantined generation was tried %d times, want 2", g)
	}

	// The next retry, with a confirming server, converges.
	srv.setNever(false)
	srv.retry()
	n.waitReport("idle on the retried generation", func(r api.Report) bool {
		return r.State == api.AgentIdle && r.CurrentID == id2
	})
	if g := n.gens(id2); g != 3 {
		t.Fatalf("%d attempts, want 3", g)
	}
}

// A generation quarantined by a local `apply` is not retried with the
// Retry the server happens to have; a later operator retry switches.
func TestQuarantinedLocallyTakesRetryAsBaseline(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	art, _ := switchToFirst(t, n, srv)
	srv.retry()
	srv.retry() // Retry 2 from earlier operator retries on this node
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	m2 := webManifest("2", art)
	id2 := idOf(t, m2)
	err := n.db.Update(func(tx *state.Tx) error {
		return tx.Quarantine(state.Quarantine{ID: id2, Number: 9, Reason: "failed in a local apply"})
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.publish(m2, "r2-web")
	n.start()
	n.waitResyncs(3)
	r := n.waitReport("quarantined", func(r api.Report) bool { return r.Outcome == OutcomeQuarantined })
	if r.Reason != "failed in a local apply" || n.gens(id2) != 0 {
		t.Fatalf("report %+v, %d attempts", r, n.gens(id2))
	}
	srv.retry()
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
}

func TestRejectedNotRetriedUntilRetry(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	art, id1 := switchToFirst(t, n, srv)

	// A unit slipway does not own: refused before any change.
	m2 := webManifest("2", art)
	m2.Units["other.service"] = svc("x")
	n.sd.setForeign("other.service", "/lib/systemd/system/other.service")
	id2 := srv.publish(m2, "r2-web")
	r := n.waitReport("rejected", func(r api.Report) bool { return r.Outcome == OutcomeRejected })
	if r.State != api.AgentFailed || r.Target != id2 || r.CurrentID != id1 || !strings.Contains(r.Reason, "not managed by slipway") {
		t.Fatalf("report %+v", r)
	}
	n.waitResyncs(3)
	if l := n.logs.count("desired generation rejected"); l != 1 {
		t.Fatalf("rejected generation tried %d times", l)
	}
	n.sd.setForeign("other.service", "")
	srv.retry()
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })

	// A desired generation whose manifest does not hash to its ID.
	bad := webManifest("3", art)
	raw, _ := bad.Canonical()
	srv.setDesired(&api.Desired{ID: "sha256-" + strings.Repeat("0", 64), Release: "r3-bad", Manifest: raw})
	r = n.waitReport("rejected mismatch", func(r api.Report) bool { return r.Outcome == OutcomeRejected })
	if !strings.Contains(r.Reason, "does not match the desired ID") || r.CurrentID != id2 {
		t.Fatalf("report %+v", r)
	}
}

func TestBlobFailures(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	_, id1 := switchToFirst(t, n, srv)

	// The server fails to serve the blob for a while (HTTP 500): the
	// daemon reports that it retries, and converges.
	art2 := srv.addBlob([]byte("web binary 2"))
	srv.mu.Lock()
	srv.blobFail = 3
	srv.mu.Unlock()
	id2 := srv.publish(webManifest("2", art2), "r2-web")
	r := n.waitReport("retrying", func(r api.Report) bool { return r.Outcome == OutcomeRetrying })
	if r.State != api.AgentIdle || r.Target != id2 || r.CurrentID != id1 || !strings.Contains(r.Reason, "HTTP 500") {
		t.Fatalf("report %+v", r)
	}
	// The next attempt says it is switching and why the last one failed.
	n.waitReport("switching again, with the last attempt's reason", func(r api.Report) bool {
		return r.State == api.AgentSwitching && r.Target == id2 && r.Outcome == OutcomeRetrying && strings.Contains(r.Reason, "HTTP 500")
	})
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })

	// A blob the server does not have (404) and no url: rejected, not
	// retried until an operator retry.
	missing := generation.Artifact{Name: "web", SHA256: strings.Repeat("ab", 32), Size: 3, Mode: "0755"}
	id3 := srv.publish(webManifest("3", missing), "r3-web")
	r = n.waitReport("rejected", func(r api.Report) bool { return r.Outcome == OutcomeRejected })
	if r.State != api.AgentFailed || r.Target != id3 || r.CurrentID != id2 || !strings.Contains(r.Reason, "no such blob") {
		t.Fatalf("report %+v", r)
	}
	n.waitResyncs(3)
	if g := n.gens(id3); g != 1 {
		t.Fatalf("rejected generation staged %d times", g)
	}
}

func TestServerDownAtStartThenConverges(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	sock := filepath.Join(t.TempDir(), "server.sock")
	n := newNode(t, srv, "unix://"+sock)
	art := srv.addBlob([]byte("web binary"))
	id1 := srv.publish(webManifest("1", art), "r1-web")
	n.start()
	waitFor(t, "enrolment retries", func() bool { return n.logs.count("cannot enrol yet") >= 3 })

	srv.listenUnix(sock)
	n.waitReport("idle on generation 1", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id1 })

	// Down again: the node keeps its generation and keeps trying.
	srv.stop()
	waitFor(t, "poll retries", func() bool { return n.logs.count("cannot get the desired generation") >= 3 })
	if s := n.snap(); s.Meta.Current != 1 || s.Journal != nil {
		t.Fatalf("state while the server is down: %+v", s.Meta)
	}
	// Back with a new release: converges.
	id2 := srv.publish(webManifest("2", art), "r2-web")
	srv.listenUnix(sock)
	n.waitReport("idle on generation 2", func(r api.Report) bool { return r.State == api.AgentIdle && r.CurrentID == id2 })
	if !strings.Contains(n.logs.String(), "server reachable again") {
		t.Fatal("recovery not logged")
	}
}

func TestStopWhileIdleIsPrompt(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	// stop gives Run 20s: far less than a long-poll, so Run must cut it short.
	n.cfg.PollWait = 5 * time.Minute
	n.cfg.ReportInterval = 5 * time.Minute
	n.start()
	n.waitReport("idle", func(r api.Report) bool { return r.State == api.AgentIdle })
	waitFor(t, "a long-poll in flight", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return srv.inflight > 0 })
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestStopDuringConfirmReverts(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	art, id1 := switchToFirst(t, n, srv)
	srv.setNever(true)
	m2 := webManifest("2", art)
	m2.ConfirmTimeout = generation.Duration(time.Minute)
	id2 := srv.publish(m2, "r2-web")
	_, _, _, _, confirms := srv.counts()
	waitFor(t, "confirm attempts for generation 2", func() bool { _, _, _, _, c := srv.counts(); return c >= confirms+2 })
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := n.snap()
	if s.Meta.Current != 1 || s.Journal != nil {
		t.Fatalf("after stopping mid-confirm: meta %+v journal %+v", s.Meta, s.Journal)
	}
	r, _ := srv.lastReport()
	if r.State != api.AgentFailed || r.CurrentID != id1 || r.Target != id2 || !strings.Contains(r.Reason, "agent stopping") {
		t.Fatalf("final report %+v", r)
	}
}

func TestRecoverFailureIsReportedNotFatal(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	// A journal pointing at generations that are not on disk: recover fails.
	err := n.db.Update(func(tx *state.Tx) error {
		return tx.PutJournal(state.Journal{Op: "switch", From: 1, To: 2, Phase: state.PhaseUnits})
	})
	if err != nil {
		t.Fatal(err)
	}
	n.start()
	r := n.waitReport("recover failure", func(r api.Report) bool { return r.Outcome == OutcomeRecoverFailed })
	if r.State != api.AgentFailed || r.Reason == "" {
		t.Fatalf("report %+v", r)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestUnits(t *testing.T) {
	sd := newFakeSystemd()
	sd.set("a.service", "active")
	sd.set("b.socket", "failed")
	sd.fail["c.timer"] = errors.New("dbus: timeout")
	m := &generation.Manifest{Units: map[string]string{"c.timer": "", "b.socket": "", "a.service": "", "d.service": ""}}
	got, err := Units(context.Background(), sd, m)
	want := []api.UnitReport{
		{Name: "a.service", Active: "active", Sub: "running"},
		{Name: "b.socket", Active: "failed", Sub: "dead"},
		{Name: "c.timer", Active: "unknown"},
		{Name: "d.service", Active: "inactive", Sub: "dead"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Units = %+v\nwant %+v", got, want)
	}
	if err == nil || !strings.Contains(err.Error(), "unit c.timer: dbus: timeout") {
		t.Fatalf("error %v", err)
	}
	// *systemd.Conn has what Units needs.
	var _ interface {
		Status(context.Context, string) (systemd.Status, error)
	} = (*systemd.Conn)(nil)
}

func TestBackoff(t *testing.T) {
	b := backoff{min: time.Second, max: 30 * time.Second}
	wantMax := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i, w := range wantMax {
		d := b.next()
		if hi := w * time.Second; d < hi/2 || d > hi {
			t.Fatalf("delay %d: %s, want in [%s, %s]", i, d, hi/2, hi)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after reset: %s", d)
	}
}

func TestNewRejectsBadServer(t *testing.T) {
	_, err := New(Config{Servers: []string{"ftp://x"}, Name: "n", TokenFile: "/x"}, nil, nil, nil, zerolog.Nop())
	if err == nil {
		t.Fatal("accepted ftp://")
	}
}
