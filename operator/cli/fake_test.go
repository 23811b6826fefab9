package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/selector"
)

// Tokens the fake server knows, by role.
const (
	adminToken    = "admin-secret-0123"
	deployerToken = "deployer-secret-4567"
	viewerToken   = "viewer-secret-89ab"
)

// now is the fixed clock of the tests.
var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// fakeID is a manifest ID made from s.
func fakeID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + hex.EncodeToString(sum[:])
}

var (
	idA = fakeID("a")
	idB = fakeID("b")
	idC = fakeID("c")
)

// request is one request the fake server received.
type request struct {
	Method string
	Path   string
	Query  string
	Auth   string
	Body   []byte
}

func (r request) String() string { return r.Method + " " + r.Path }

// fakeServer implements the admin routes the CLI uses, over canned state,
// and records every request.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	roles    map[string]string // token → role
	nodes    []api.Node        // with reports; the list leaves them out
	blobs    map[string][]byte
	releases []api.Release
	events   []api.Event
	notes    []api.Notification // newest first
	requests []request
	// onEvents, if set, runs after the n-th (from 1) events request is
	// answered, with the lock held.
	onEvents func(f *fakeServer, n int)
	nEvents  int
	// ready, if set, is /readyz's answer (else 404, as an old server's
	// would not name a leader).
	ready *api.Ready

	fakeRollouts // rollouts, manifests and the event stream (fake_rollout_test.go)
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{
		t:      t,
		roles:  map[string]string{adminToken: api.RoleAdmin, deployerToken: api.RoleDeployer, viewerToken: api.RoleViewer},
		nodes:  cannedNodes(),
		blobs:  map[string][]byte{},
		events: cannedEvents(),
		notes:  cannedNotifications(),
	}
	f.fakeRollouts = newFakeRollouts()
	mux := http.NewServeMux()
	handle := func(route, role string, h func(w http.ResponseWriter, r *http.Request, body []byte)) {
		mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				t.Errorf("fake: read body: %v", err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			f.requests = append(f.requests, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), body})
			if r.Header.Get(api.HeaderProtocol) != strconv.Itoa(api.ProtocolVersion) {
				t.Errorf("fake: %s %s without the protocol header", r.Method, r.URL.Path)
			}
			tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			got, ok := f.roles[tok]
			if !ok {
				writeErr(w, http.StatusUnauthorized, api.CodeUnauthorized, "missing or unknown token")
				return
			}
			if rank(got) < rank(role) {
				writeErr(w, http.StatusForbidden, api.CodeForbidden, "role "+got+" may not do this")
				return
			}
			h(w, r, body)
		})
	}
	handle(api.RouteNodes, api.RoleViewer, f.listNodes)
	handle(api.RouteNode, api.RoleViewer, f.getNode)
	handle(api.RouteNodeRollback, api.RoleDeployer, f.rollback)
	handle(api.RouteNodeRetry, api.RoleDeployer, f.retry)
	handle(api.RouteNodeReset, api.RoleAdmin, f.reset)
	handle(api.RouteBlobHead, api.RoleViewer, f.headBlob)
	handle(api.RouteBlobPut, api.RoleDeployer, f.putBlob)
	handle(api.RouteCreateRelease, api.RoleDeployer, f.createRelease)
	handle(api.RouteCreateJoinToken, api.RoleAdmin, f.createJoinToken)
	handle(api.RouteEvents, api.RoleViewer, f.listEvents)
	handle(api.RouteNotifications, api.RoleViewer, f.listNotifications)
	f.handleRollouts(mux, handle)
	mux.HandleFunc(api.RouteReadyz, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.ready == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "no route")
			return
		}
		writeJSON(w, http.StatusOK, f.ready)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func rank(role string) int {
	return slices.Index([]string{api.RoleViewer, api.RoleDeployer, api.RoleAdmin}, role)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.Error{Error: msg, Code: code})
}

// URL is the server address to give the CLI.
func (f *fakeServer) URL() string { return f.srv.URL }

// writes lists the requests that are not reads.
func (f *fakeServer) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			out = append(out, r.String())
		}
	}
	return out
}

// log lists every request as "METHOD PATH[?QUERY]".
func (f *fakeServer) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		s := r.String()
		if r.Query != "" {
			s += "?" + r.Query
		}
		out = append(out, s)
	}
	return out
}

func (f *fakeServer) lastRequest() request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		f.t.Fatal("fake: no request")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeServer) find(name string) *api.Node {
	for i := range f.nodes {
		if f.nodes[i].Name == name {
			return &f.nodes[i]
		}
	}
	return nil
}

func (f *fakeServer) listNodes(w http.ResponseWriter, r *http.Request, _ []byte) {
	out := make([]api.Node, len(f.nodes))
	for i, n := range f.nodes {
		// The server's list carries a trimmed report; this fake keeps
		// only its unit-file warnings, which `status` shows.
		if n.Report != nil && len(n.Report.Warnings) > 0 {
			n.Report = &api.Report{Current: n.Report.Current, Warnings: n.Report.Warnings}
		} else {
			n.Report = nil
		}
		out[i] = n
	}
	// The list is not sorted by name: the CLI sorts.
	slices.Reverse(out)
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeServer) getNode(w http.ResponseWriter, r *http.Request, _ []byte) {
	n := f.find(r.PathValue("name"))
	if n == nil {
		writeErr(w, http.StatusNotFound, api.CodeNotFound, "no node "+strconv.Quote(r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (f *fakeServer) rollback(w http.ResponseWriter, r *http.Request, body []byte) {
	n := f.find(r.PathValue("name"))
	if n == nil {
		writeErr(w, http.StatusNotFound, api.CodeNotFound, "no node "+strconv.Quote(r.PathValue("name")))
		return
	}
	var req api.RollbackRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	to := req.To
	if to == 0 {
		to = n.Report.LastGood
	}
	for _, gen := range n.Report.Generations {
		if gen.Number == to {
			n.Desired, n.DesiredFrom, n.State = gen.ID, "", api.NodePending
			writeJSON(w, http.StatusOK, n)
			return
		}
	}
	writeErr(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("node %s has no generation %d", n.Name, to))
}

func (f *fakeServer) retry(w http.ResponseWriter, r *http.Request, _ []byte) {
	n := f.find(r.PathValue("name"))
	if n == nil {
		writeErr(w, http.StatusNotFound, api.CodeNotFound, "no node "+strconv.Quote(r.PathValue("name")))
		return
	}
	if n.State != api.NodeFailed {
		// As the registry: a retry needs a failure to retry.
		writeErr(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("node %s has nothing failed to retry: it runs its desired generation %s", n.Name, n.Desired))
		return
	}
	n.Retry++
	n.State = api.NodePending
	writeJSON(w, http.StatusOK, n)
}

func (f *fakeServer) reset(w http.ResponseWriter, r *http.Request, _ []byte) {
	n := f.find(r.PathValue("name"))
	if n == nil {
		writeErr(w, http.StatusNotFound, api.CodeNotFound, "no node "+strconv.Quote(r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (f *fakeServer) headBlob(w http.ResponseWriter, r *http.Request, _ []byte) {
	if _, ok := f.blobs[r.PathValue("sha256")]; !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (f *fakeServer) putBlob(w http.ResponseWriter, r *http.Request, body []byte) {
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != r.PathValue("sha256") {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, "sha256 mismatch")
		return
	}
	f.blobs[r.PathValue("sha256")] = body
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeServer) createRelease(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.CreateReleaseRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	m, err := generation.Parse(req.Manifest)
	if err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	id, err := m.ID()
	if err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	sel, err := selector.Parse(req.Target)
	if err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	rel := api.Release{
		ID:        fmt.Sprintf("r%d-%s", len(f.releases)+1, req.Name),
		Name:      req.Name,
		Target:    req.Target,
		Manifest:  id,
		Nodes:     []string{},
		CreatedAt: now,
		CreatedBy: "token:ci",
	}
	for i := range f.nodes {
		if sel.Matches(f.nodes[i].Labels) {
			rel.Nodes = append(rel.Nodes, f.nodes[i].Name)
		}
	}
	slices.Sort(rel.Nodes)
	if len(rel.Nodes) == 0 {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("invalid: target %q selects no enrolled node", req.Target))
		return
	}
	if !f.startRollout(w, &rel, req) {
		return
	}
	f.releases = append(f.releases, rel)
	writeJSON(w, http.StatusCreated, rel)
}

func (f *fakeServer) createJoinToken(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.JoinTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, api.JoinToken{Token: "join-0123456789", ExpiresAt: now.Add(ttl), Node: req.Node})
}

func (f *fakeServer) listEvents(w http.ResponseWriter, r *http.Request, _ []byte) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit == 0 {
		limit = 100
	}
	out := []api.Event{}
	for _, e := range f.events {
		if e.Seq > since && len(out) < limit {
			out = append(out, e)
		}
	}
	writeJSON(w, http.StatusOK, out)
	f.nEvents++
	if f.onEvents != nil {
		f.onEvents(f, f.nEvents)
	}
}

func (f *fakeServer) listNotifications(w http.ResponseWriter, r *http.Request, _ []byte) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit == 0 {
		limit = 100
	}
	writeJSON(w, http.StatusOK, f.notes[:min(limit, len(f.notes))])
}

// cannedNotifications: one pending after failed attempts, one given up,
// one delivered; newest first.
func cannedNotifications() []api.Notification {
	n := func(id, notifier, kind, delivery string, attempts int, ago time.Duration) api.Notification {
		return api.Notification{ID: id, Notifier: notifier, Kind: kind, Time: now.Add(-ago), Rollout: "ro6", Release: "r8-db", Group: "role=db",
			State: api.RolloutReverted, Delivery: delivery, Attempts: attempts}
	}
	pending := n("n3", "ops", api.NotifyReverted, api.DeliveryPending, 2, time.Minute)
	pending.NextAttempt, pending.LastError = now.Add(8*time.Second), "HTTP 503: busy"
	failed := n("n2", "chat", api.NotifyNodeFailed, api.DeliveryFailed, 30, 2*time.Hour)
	failed.Node, failed.LastError = "db-3", "gave up after 30 attempts: post: dial tcp 10.0.0.9:443: connect: connection refused"
	delivered := n("n1", "ops", api.NotifyRolloutStarted, api.DeliveryDelivered, 1, 3*time.Hour)
	delivered.DeliveredAt = now.Add(-3 * time.Hour)
	return []api.Notification{pending, failed, delivered}
}

func cannedNodes() []api.Node {
	gens := func(current int, extra ...api.GenerationReport) []api.GenerationReport {
		out := []api.GenerationReport{
			{Number: 1, ID: fakeID("g1"), Status: "collected"},
			{Number: 2, ID: idC, Status: "good"},
			{Number: 3, ID: fakeID("g3"), Status: "quarantined", Reason: "unit web.service: start job failed"},
			{Number: 4, ID: idA, Status: "good"},
		}
		return append(out, extra...)
	}
	return []api.Node{
		{
			Name: "web-1", Labels: map[string]string{"role": "web", "env": "prod"},
			AgeRecipient: "age1web1", AgentVersion: "0.3.0",
			EnrolledAt: now.Add(-72 * time.Hour), LastSeen: now.Add(-12 * time.Second),
			State: api.NodeConverged, Desired: idA, DesiredFrom: "r7-web", Actual: idA, ActualNumber: 4, Confirmed: idA,
			Report: &api.Report{
				AgentVersion: "0.3.0", State: api.AgentIdle, Current: 4, CurrentID: idA, LastGood: 4,
				Generations: gens(4),
				Units: []api.UnitReport{
					{Name: "web.socket", Active: "active", Sub: "listening"},
					{Name: "web.service", Active: "active", Sub: "running"},
				},
				Time: now.Add(-12 * time.Second),
			},
		},
		{
			Name: "web-2", Labels: map[string]string{"role": "web", "env": "prod"},
			AgentVersion: "0.3.0",
			EnrolledAt:   now.Add(-72 * time.Hour), LastSeen: now.Add(-3 * time.Second),
			State: api.NodeFailed, Desired: idB, DesiredFrom: "r8-web", Actual: idA, ActualNumber: 4, Confirmed: idA,
			Report: &api.Report{
				AgentVersion: "0.3.0", State: api.AgentFailed, Current: 4, CurrentID: idA, LastGood: 4,
				Outcome: "reverted",
				Reason:  `health check "web-http": GET http://127.0.0.1:8080/health: connection refused (3 failures)`,
				Generations: gens(4, api.GenerationReport{Number: 5, ID: idB, Status: "quarantined",
					Reason: `health check "web-http" failed`}),
				Units: []api.UnitReport{{Name: "web.service", Active: "active", Sub: "running"}},
				Time:  now.Add(-3 * time.Second),
			},
		},
		{
			Name: "db-1", Labels: map[string]string{"role": "db", "env": "prod"},
			AgentVersion: "0.2.9",
			EnrolledAt:   now.Add(-30 * 24 * time.Hour), LastSeen: now.Add(-3 * time.Hour),
			State: api.NodeOffline, Desired: idC, Actual: idC, ActualNumber: 2, Confirmed: idC,
			Report: &api.Report{State: api.AgentIdle, Current: 2, CurrentID: idC, LastGood: 2, Time: now.Add(-3 * time.Hour)},
		},
		{
			Name: "edge-1", Labels: map[string]string{"role": "edge", "env": "staging"},
			AgentVersion: "0.3.0",
			EnrolledAt:   now.Add(-5 * time.Minute), LastSeen: now.Add(-40 * time.Second),
			State: api.NodeDrift, Desired: idA, Actual: idC, ActualNumber: 2,
			Report: &api.Report{State: api.AgentIdle, Current: 2, CurrentID: idC, LastGood: 2,
				Reason: "switched by hand with slipway-agent apply", Time: now.Add(-40 * time.Second)},
		},
		{
			Name: "new-1", AgentVersion: "0.3.0",
			EnrolledAt: now.Add(-20 * time.Second),
			State:      api.NodeNew,
		},
	}
}

func cannedEvents() []api.Event {
	return []api.Event{
		{Seq: 1, Time: now.Add(-72 * time.Hour), Actor: "token:ops", Action: "enroll", Target: "web-1", Detail: "labels env=prod,role=web"},
		{Seq: 2, Time: now.Add(-2 * time.Hour), Actor: "token:ci", Action: "release.create", Target: "r7-web", Detail: "3 nodes"},
		{Seq: 3, Time: now.Add(-90 * time.Minute), Actor: "node:web-1", Action: "node.confirm", Target: "web-1", Detail: "generation 4"},
		{Seq: 4, Time: now.Add(-10 * time.Minute), Actor: "node:web-2", Action: "node.failed", Target: "web-2", Detail: "generation 5 reverted"},
		{Seq: 5, Time: now.Add(-1 * time.Minute), Actor: "server", Action: "auth.denied"},
	}
}
