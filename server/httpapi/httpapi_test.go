package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/api/apitest"
	"github.com/slipway-dev/slipway/shared/generation"
)

const (
	adminTok    = "admin-token-0123456789"
	deployerTok = "deployer-token-0123456789"
	viewerTok   = "viewer-token-0123456789"
)

type fixture struct {
	t      *testing.T
	url    string
	dir    string
	admin  *api.Client
	viewer *api.Client
	deploy *api.Client
	anon   *api.Client
	close  func()
	spec   *apitest.Validator
	reg    *registry.Registry
	ros    *rollout.Machine
}

func start(t *testing.T, dir string) *fixture {
	t.Helper()
	return startWith(t, dir, nil, 0)
}

// startWith starts a fixture whose registry sees the store through wrapStore
// (nil: as it is) and whose agent writes are limited to limit (0: none).
func startWith(t *testing.T, dir string, wrapStore func(store.Store) store.Store, limit int) *fixture {
	t.Helper()
	return startWait(t, dir, wrapStore, limit, 0)
}

// startWait is startWith whose agent writes beyond limit wait up to
// writeWait for a slot.
func startWait(t *testing.T, dir string, wrapStore func(store.Store) store.Store, limit int, writeWait time.Duration) *fixture {
	t.Helper()
	return startConfig(t, dir, wrapStore, limit, writeWait, rollout.Config{})
}

// startConfig is startWait with the rollout machine's config.
func startConfig(t *testing.T, dir string, wrapStore func(store.Store) store.Store, limit int, writeWait time.Duration, cfg rollout.Config) *fixture {
	t.Helper()
	bst, err := boltstore.Open(filepath.Join(dir, "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store = bst
	if wrapStore != nil {
		st = wrapStore(bst)
	}
	blobs, err := blobstore.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, blobs, registry.Config{}, zerolog.Nop())
	ros := rollout.New(reg, cfg, zerolog.Nop())
	h := New(reg, ros, blobs, []AdminToken{
		{Name: "ops", Role: api.RoleAdmin, SHA256: HashToken(adminTok)},
		{Name: "ci", Role: api.RoleDeployer, SHA256: HashToken(deployerTok)},
		{Name: "dash", Role: api.RoleViewer, SHA256: HashToken(viewerTok)},
	}, api.Spec, zerolog.Nop())
	h.LimitAgentWrites(limit, writeWait)
	wrapped, v := wrap(t, h)
	srv := httptest.NewServer(wrapped)
	f := &fixture{t: t, url: srv.URL, dir: dir, spec: v, reg: reg, ros: ros}
	mk := func(tok string) *api.Client {
		c, err := api.NewClient(srv.URL, tok)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	f.admin, f.deploy, f.viewer, f.anon = mk(adminTok), mk(deployerTok), mk(viewerTok), mk("")
	closed := false
	f.close = func() {
		if !closed {
			srv.Close()
			bst.Close()
			closed = true
		}
	}
	t.Cleanup(f.close)
	return f
}

func (f *fixture) enroll(name string, labels map[string]string) *api.Client {
	f.t.Helper()
	c, _ := f.enrollToken(name, labels)
	return c
}

func (f *fixture) enrollToken(name string, labels map[string]string) (*api.Client, string) {
	f.t.Helper()
	ctx := context.Background()
	jt, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: labels, AgentVersion: "test"})
	if err != nil {
		f.t.Fatal(err)
	}
	return f.anon.WithToken(resp.NodeToken), resp.NodeToken
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func manifestWith(blob []byte, msg string) json.RawMessage {
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web " + msg + "\n"},
		Artifacts: []generation.Artifact{{Name: "web", SHA256: sum(blob), Size: int64(len(blob)), Mode: "0755"}}}
	b, err := m.Canonical()
	if err != nil {
		panic(err)
	}
	return b
}

func TestAPI(t *testing.T) {
	ctx := context.Background()
	f := start(t, t.TempDir())

	// Enrolment needs a valid one-time join token.
	if _, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: "swj_bogus"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("enroll with a bogus join token: %v", err)
	}
	jt, _ := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "1h"})
	if _, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "bad/name", JoinToken: jt.Token}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("enroll with a bad name: %v", err)
	}
	a := f.enroll("web-1", map[string]string{"role": "web"})
	b := f.enroll("web-2", map[string]string{"role": "web"})
	db := f.enroll("db-1", map[string]string{"role": "db"})
	if _, err := f.viewer.CreateJoinToken(ctx, api.JoinTokenRequest{}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer created a join token: %v", err)
	}

	// A node reads and reports only for itself.
	if _, _, err := a.Desired(ctx, "web-2", "", time.Millisecond); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("web-1 read web-2's desired: %v", err)
	}
	if err := a.Report(ctx, "web-2", api.Report{State: api.AgentIdle}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("web-1 reported for web-2: %v", err)
	}
	if _, _, err := f.anon.Desired(ctx, "web-1", "", time.Millisecond); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("anonymous read desired: %v", err)
	}
	if _, err := f.admin.WithToken("wrong-token-0123456789").Nodes(ctx); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("wrong admin token: %v", err)
	}

	// wait=0 answers at once (it used to be a 500: the read ran on an
	// already expired context).
	if d, _, err := a.Desired(ctx, "web-1", "", 0); err != nil || d != nil {
		t.Fatalf("desired with wait=0: %v %v", d, err)
	}
	// No desired generation yet: 204 after the wait.
	d, changed, err := a.Desired(ctx, "web-1", "", 20*time.Millisecond)
	if err != nil || d != nil || !changed {
		t.Fatalf("desired before any release: %v %v %v", d, changed, err)
	}

	// Blobs: only what is missing is uploaded, and it is verified.
	blob := []byte("#!/bin/sh\necho web\n")
	if ok, err := f.deploy.HasBlob(ctx, sum(blob)); ok || err != nil {
		t.Fatalf("HasBlob before upload: %v %v", ok, err)
	}
	if err := f.deploy.PutBlob(ctx, sum([]byte("other")), bytes.NewReader(blob), int64(len(blob))); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("upload with the wrong sha256: %v", err)
	}
	if err := f.viewer.PutBlob(ctx, sum(blob), bytes.NewReader(blob), int64(len(blob))); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer uploaded: %v", err)
	}
	m1 := manifestWith(blob, "v1")
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1}); err == nil || !strings.Contains(err.Error(), "not uploaded") {
		t.Fatalf("release with a missing blob: %v", err)
	}
	if err := f.deploy.PutBlob(ctx, sum(blob), bytes.NewReader(blob), int64(len(blob))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=nope", Manifest: m1}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("release selecting nothing: %v", err)
	}
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Manifest: json.RawMessage(`{"units":{"../x.service":"x"}}`)}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("release with an invalid manifest: %v", err)
	}

	// A long-poll wakes up when the release lands.
	type res struct {
		d   *api.Desired
		err error
	}
	got := make(chan res, 1)
	go func() {
		d, _, err := a.Desired(ctx, "web-1", "", 10*time.Second)
		got <- res{d, err}
	}()
	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	rel, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1})
	if err != nil || len(rel.Nodes) != 2 || rel.CreatedBy != "token:ci" {
		t.Fatalf("release: %+v %v", rel, err)
	}
	r := <-got
	if r.err != nil || r.d == nil || r.d.Release != rel.ID || !bytes.Equal(r.d.Manifest, m1) {
		t.Fatalf("woken long-poll: %+v %v", r.d, r.err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("long-poll woke %s after the release", took)
	}
	// Unchanged: 304 after the wait.
	if d, changed, err := a.Desired(ctx, "web-1", r.d.ID, 20*time.Millisecond); err != nil || changed || d != nil {
		t.Fatalf("unchanged desired: %v %v %v", d, changed, err)
	}

	// Blobs by node: only those of generations published to it.
	rc, err := a.Blob(ctx, "web-1", sum(blob))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(body, blob) {
		t.Fatalf("blob body %q", body)
	}
	if _, err := db.Blob(ctx, "db-1", sum(blob)); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("db-1 read a blob not published to it: %v", err)
	}

	// Reports and confirm drive the node state.
	gen := func(n int, id, status string) api.GenerationReport {
		return api.GenerationReport{Number: n, ID: id, Status: status}
	}
	must(t, a.Report(ctx, "web-1", api.Report{State: api.AgentSwitching, Phase: "verify", Target: r.d.ID}))
	if n, _ := f.viewer.Node(ctx, "web-1"); n.State != api.NodeSwitching {
		t.Fatalf("state %q, want switching", n.State)
	}
	if c, err := a.Confirm(ctx, "web-1", api.ConfirmRequest{ID: r.d.ID, Number: 1}); err != nil || !c.Confirmed {
		t.Fatalf("confirm: %v %v", c, err)
	}
	// A confirm may carry the confirm phase's report: recorded with it.
	cr := api.Report{State: api.AgentSwitching, Phase: "confirm", Target: r.d.ID}
	if c, err := b.Confirm(ctx, "web-2", api.ConfirmRequest{ID: r.d.ID, Number: 1, Report: &cr}); err != nil || !c.Confirmed || !c.ReportRecorded {
		t.Fatalf("confirm with a report: %+v %v", c, err)
	}
	if n, _ := f.viewer.Node(ctx, "web-2"); n.Report == nil || n.Report.Phase != "confirm" || n.Report.Target != r.d.ID {
		t.Fatalf("the report carried by the confirm: %+v", n.Report)
	}
	cr.State = "pwned"
	if _, err := b.Confirm(ctx, "web-2", api.ConfirmRequest{ID: r.d.ID, Number: 2, Report: &cr}); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "report: ") || !strings.Contains(err.Error(), "state") {
		t.Fatalf("confirm carrying a report with a made-up state: %v", err)
	}
	if _, err := a.Confirm(ctx, "web-1", api.ConfirmRequest{ID: "sha256-" + strings.Repeat("0", 64), Number: 2}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("confirm of an unpublished generation: %v", err)
	}
	// Reports and confirms an agent cannot make are 400, naming the field.
	if err := a.Report(ctx, "web-1", api.Report{State: "pwned"}); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "state") {
		t.Fatalf("report with a made-up state: %v", err)
	}
	if err := a.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Current: -5}); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "current") {
		t.Fatalf("report with a negative generation: %v", err)
	}
	if _, err := a.Confirm(ctx, "web-1", api.ConfirmRequest{ID: r.d.ID, Number: 0}); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "number") {
		t.Fatalf("confirm of generation 0: %v", err)
	}
	must(t, a.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "switched", Current: 1, CurrentID: r.d.ID, LastGood: 1, Generations: []api.GenerationReport{gen(1, r.d.ID, "good")}}))
	must(t, b.Report(ctx, "web-2", api.Report{State: api.AgentFailed, Outcome: "reverted", Reason: "unit web.service failed", Target: r.d.ID}))
	nodes, err := f.viewer.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, n := range nodes {
		states[n.Name] = n.State
	}
	if states["web-1"] != api.NodeConverged || states["web-2"] != api.NodeFailed || states["db-1"] != api.NodeNew {
		t.Fatalf("states %v", states)
	}

	// The rollout of release 1 halts: web-2 failed and max_failures is 0.
	must(t, f.ros.Tick(ctx))
	ro, err := f.viewer.Rollout(ctx, rel.Rollout)
	if err != nil || ro.State != api.RolloutFailed || ro.Failures != 1 || !strings.Contains(ro.Reason, "web-2: unit web.service failed") {
		t.Fatalf("rollout after web-2 failed: %+v %v", ro, err)
	}
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m1}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("re-deploying a manifest quarantined fleet-wide: %v", err)
	}
	if ros, err := f.viewer.Rollouts(ctx); err != nil || len(ros) != 1 {
		t.Fatalf("rollouts: %v %v", ros, err)
	}
	if _, err := f.viewer.RolloutRetry(ctx, rel.Rollout, api.RolloutRetryRequest{Node: "web-2"}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer retried a rollout: %v", err)
	}
	ro, err = f.deploy.RolloutRetry(ctx, rel.Rollout, api.RolloutRetryRequest{Node: "web-2"})
	if err != nil || ro.State != api.RolloutRunning {
		t.Fatalf("rollout retry: %+v %v", ro, err)
	}
	// (The node-level retry below bumps the counter again.)
	must(t, b.Report(ctx, "web-2", api.Report{State: api.AgentIdle, Outcome: "switched", Current: 1, CurrentID: r.d.ID}))
	must(t, f.ros.Tick(ctx))
	if ro, _ = f.viewer.Rollout(ctx, rel.Rollout); ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout after the retry: %+v", ro)
	}
	for _, action := range []string{"pause", "resume", "promote", "abort"} {
		if _, err := f.deploy.RolloutAction(ctx, rel.Rollout, action); !errors.Is(err, api.ErrConflict) {
			t.Errorf("%s on a finished rollout: %v", action, err)
		}
	}
	if _, err := f.deploy.RolloutAction(ctx, rel.Rollout, "rollback"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("rollback to nothing: %v", err)
	}
	if raw, err := f.viewer.Manifest(ctx, r.d.ID); err != nil || !bytes.Equal(raw, m1) {
		t.Errorf("manifest: %s %v", raw, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var streamed []api.Event
	err = f.viewer.StreamEvents(sctx, 0, func(e api.Event) error {
		streamed = append(streamed, e)
		if len(streamed) == 3 {
			return errStop
		}
		return nil
	})
	cancel()
	if !errors.Is(err, errStop) || streamed[0].Seq != 1 {
		t.Errorf("event stream: %v %v", streamed, err)
	}

	// A node retry of a node where nothing failed is a conflict that says
	// so. One of a node that failed bumps the desired retry counter (the
	// rollout retry above bumped it once) and wakes the agent, whose ETag
	// changes with it.
	if _, err := f.deploy.Retry(ctx, "web-2"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "web-2 has nothing failed to retry: it runs its desired generation") {
		t.Fatalf("retry of a converged node: %v", err)
	}
	must(t, b.Report(ctx, "web-2", api.Report{State: api.AgentFailed, Outcome: "reverted", Reason: "unit web.service failed again", Target: r.d.ID}))
	if n, err := f.deploy.Retry(ctx, "web-2"); err != nil || n.Retry != 2 {
		t.Fatalf("retry: %+v %v", n, err)
	}
	if d, changed, err := b.Desired(ctx, "web-2", r.d.ID+"+retry1", time.Second); err != nil || !changed || d.Retry != 2 {
		t.Fatalf("desired after retry: %+v %v %v", d, changed, err)
	}

	// Release 2 as a canary: pause, resume, abort; then roll web-1 back.
	m2 := manifestWith(blob, "v2")
	rel2, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m2, Strategy: &api.Strategy{Kind: api.StrategyCanary, Canary: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: manifestWith(blob, "v3")}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("a second release for a busy group: %v", err)
	}
	d2, _, _ := a.Desired(ctx, "web-1", r.d.ID, time.Second)
	for _, action := range []string{"pause", "resume", "abort"} {
		if ro, err := f.deploy.RolloutAction(ctx, rel2.Rollout, action); err != nil {
			t.Fatalf("%s: %+v %v", action, ro, err)
		}
	}
	// The abort sent the canary, which had not confirmed, back to its
	// previous desired generation, and marked the rest aborted.
	if n, _ := f.viewer.Node(ctx, "web-1"); n.Desired != r.d.ID {
		t.Fatalf("web-1 desired %s after the abort, want %s back", n.Desired, r.d.ID)
	}
	if ro, _ := f.viewer.Rollout(ctx, rel2.Rollout); ro.State != api.RolloutAborted || ro.Waves[0].State != api.WaveAborted || ro.Waves[1].Nodes[0].State != api.RolloutNodeAborted {
		t.Fatalf("aborted rollout: %+v", ro)
	}
	must(t, a.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Outcome: "switched", Current: 2, CurrentID: d2.ID, LastGood: 2,
		Generations: []api.GenerationReport{gen(1, r.d.ID, "good"), gen(2, d2.ID, "good")}}))
	if _, err := f.viewer.Rollback(ctx, "web-1", api.RollbackRequest{}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("viewer rolled back: %v", err)
	}
	n, err := f.deploy.Rollback(ctx, "web-1", api.RollbackRequest{})
	if err != nil || n.Desired != r.d.ID {
		t.Fatalf("rollback: %+v %v", n, err)
	}
	if _, err := f.deploy.Rollback(ctx, "web-1", api.RollbackRequest{To: 7}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("rollback to an unknown generation: %v", err)
	}
	rels, _ := f.viewer.Releases(ctx)
	if len(rels) != 2 || rels[0].ID != rel2.ID {
		t.Fatalf("releases %+v", rels)
	}

	// The audit log says who did what.
	if ns, err := f.viewer.Notifications(ctx, 5); err != nil || len(ns) != 0 {
		t.Fatalf("notifications without [[notify]]: %v %v", ns, err)
	}
	evs, err := f.viewer.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Actor+" "+e.Action)
	}
	all := strings.Join(actions, "\n")
	for _, want := range []string{"node:web-1 node.enroll", "token:ci release.create", "token:ci node.rollback", "token:ci node.retry", "node:web-1 auth.denied", "node:web-1 node.confirm", "node:web-2 node.failed", "anonymous auth.denied", "token:dash auth.denied"} {
		if !strings.Contains(all, want) {
			t.Errorf("audit log lacks %q:\n%s", want, all)
		}
	}
	if evs2, _ := f.viewer.Events(ctx, evs[len(evs)-3].Seq, 10); len(evs2) < 2 {
		t.Errorf("events since: %v", evs2)
	}
	if got, err := f.viewer.Release(ctx, rel.ID); err != nil || got.Manifest != r.d.ID {
		t.Errorf("release %s: %+v %v", rel.ID, got, err)
	}
	if _, err := f.viewer.Release(ctx, "r99-nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("unknown release: %v", err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		resp, err := http.Get(f.url + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %v %v", path, resp, err)
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	// A node reset is for admins only (the rules: TestEnrolTakeover).
	if _, err := f.deploy.ResetNode(ctx, "db-1"); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("reset by a deployer: %v, want ErrForbidden", err)
	}
	if _, err := f.admin.ResetNode(ctx, "nope-1"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("reset of an unknown node: %v, want ErrNotFound", err)
	}
	if n, err := f.admin.ResetNode(ctx, "db-1"); err != nil || n.Name != "db-1" {
		t.Errorf("reset: %+v %v", n, err)
	}
	f.close()
	f.spec.RequireCoverage(t)
}

func TestRestartKeepsEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := start(t, dir)
	_, tok := f.enrollToken("web-1", map[string]string{"role": "web"})
	blob := []byte("x")
	must(t, f.deploy.PutBlob(ctx, sum(blob), bytes.NewReader(blob), 1))
	rel, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Manifest: manifestWith(blob, "v1")})
	if err != nil {
		t.Fatal(err)
	}
	f.close()

	g := start(t, dir)
	// The node token, the desired generation and the release survived.
	d, _, err := g.anon.WithToken(tok).Desired(ctx, "web-1", "", time.Second)
	if err != nil || d == nil || d.Release != rel.ID {
		t.Fatalf("after restart: %+v %v", d, err)
	}
	if rels, _ := g.viewer.Releases(ctx); len(rels) != 1 {
		t.Fatalf("releases after restart: %v", rels)
	}
}

var errStop = errors.New("stop")

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
