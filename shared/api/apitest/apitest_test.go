package apitest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/slipway-dev/slipway/shared/api/apitest"
)

// recordTB is a testing.TB that records Errorf instead of failing, so the
// tests can assert that the validator caught something.
type recordTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordTB) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

var (
	t0      = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	genID   = "sha256-" + strings.Repeat("ab", 32)
	blob    = bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<19) // 2 MiB: beyond apitest.MaxBody
	blobSHA = sha256Hex(blob)
	node    = api.Node{Name: "web-1", EnrolledAt: t0, State: api.NodeConverged, Desired: genID, Actual: genID, ActualNumber: 1}
	release = api.Release{ID: "r1-web", Rollout: "ro1", Name: "web", Manifest: genID, Nodes: []string{"web-1"}, CreatedAt: t0, CreatedBy: "token:ci"}
	rollout = api.Rollout{
		ID: "ro1", Release: "r1-web", Group: "role=web", Manifest: genID,
		Strategy: api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Stagger: "10s"},
		State:    api.RolloutRunning, Wave: 0,
		Waves: []api.Wave{
			{Name: "canary", State: api.WaveRunning, StartedAt: t0, Nodes: []api.RolloutNode{{Name: "web-1", State: api.RolloutNodeSwitching, PublishedAt: t0}}},
			{Name: "wave 1", State: api.WavePending, Nodes: []api.RolloutNode{{Name: "web-2", State: api.RolloutNodePending}}},
		},
		CreatedAt: t0, UpdatedAt: t0, CreatedBy: "token:ci",
	}
	streamed = []api.Event{
		{Seq: 1, Time: t0, Actor: "token:ci", Action: "release.create", Target: "r1-web"},
		{Seq: 2, Time: t0, Actor: "server", Action: "rollout.wave", Target: "ro1", Detail: "canary started"},
	}
)

// writeSSE writes one event as the server does.
func writeSSE(w io.Writer, e api.Event) {
	b, _ := json.Marshal(e)
	fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Action, b)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.Error{Error: msg, Code: code})
}

// fakeServer serves every route in api.Routes the way the spec says.
func fakeServer(t testing.TB) http.Handler {
	var mu sync.Mutex
	blobs := map[string][]byte{blobSHA: blob}
	ro := rollout
	mux := http.NewServeMux()
	decode := func(w http.ResponseWriter, r *http.Request, v any) bool {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
			return false
		}
		return true
	}
	mux.HandleFunc(api.RouteEnroll, func(w http.ResponseWriter, r *http.Request) {
		var req api.EnrollRequest
		if !decode(w, r, &req) {
			return
		}
		if req.JoinToken != "jt" {
			writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "join token not valid")
			return
		}
		writeJSON(w, http.StatusOK, api.EnrollResponse{Name: req.Name, NodeToken: "nt"})
	})
	mux.HandleFunc(api.RouteDesired, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "new-1" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		etag := strconv.Quote(genID)
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		writeJSON(w, http.StatusOK, api.Desired{ID: genID, Release: "r1-web", Manifest: json.RawMessage(`{"units":{}}`)})
	})
	mux.HandleFunc(api.RouteReport, func(w http.ResponseWriter, r *http.Request) {
		var rep api.Report
		if decode(w, r, &rep) {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc(api.RouteConfirm, func(w http.ResponseWriter, r *http.Request) {
		var req api.ConfirmRequest
		if decode(w, r, &req) {
			writeJSON(w, http.StatusOK, api.ConfirmResponse{Confirmed: req.ID == genID})
		}
	})
	mux.HandleFunc(api.RouteAgentBlob, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := blobs[r.PathValue("sha256")]
		mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such blob")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	mux.HandleFunc(api.RouteNodes, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []api.Node{node})
	})
	mux.HandleFunc(api.RouteNode, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != node.Name {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such node")
			return
		}
		writeJSON(w, http.StatusOK, node)
	})
	mux.HandleFunc(api.RouteNodeRollback, func(w http.ResponseWriter, r *http.Request) {
		var req api.RollbackRequest
		if decode(w, r, &req) {
			writeJSON(w, http.StatusOK, node)
		}
	})
	mux.HandleFunc(api.RouteNodeRetry, func(w http.ResponseWriter, r *http.Request) {
		var req struct{}
		if decode(w, r, &req) {
			n := node
			n.Retry++
			writeJSON(w, http.StatusOK, n)
		}
	})
	mux.HandleFunc(api.RouteNodeReset, func(w http.ResponseWriter, r *http.Request) {
		var req struct{}
		if decode(w, r, &req) {
			writeJSON(w, http.StatusOK, node)
		}
	})
	mux.HandleFunc(api.RouteReleases, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []api.Release{release})
	})
	mux.HandleFunc(api.RouteRelease, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, release)
	})
	mux.HandleFunc(api.RouteCreateRelease, func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateReleaseRequest
		if decode(w, r, &req) {
			writeJSON(w, http.StatusCreated, release)
		}
	})
	mux.HandleFunc(api.RouteBlobHead, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := blobs[r.PathValue("sha256")]
		mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such blob")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc(api.RouteBlobPut, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, err.Error())
			return
		}
		sha := r.PathValue("sha256")
		if sha256Hex(b) != sha {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, "sha256 mismatch")
			return
		}
		mu.Lock()
		blobs[sha] = b
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc(api.RouteCreateJoinToken, func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinTokenRequest
		if decode(w, r, &req) {
			writeJSON(w, http.StatusCreated, api.JoinToken{Token: "jt", ExpiresAt: t0, Node: req.Node})
		}
	})
	mux.HandleFunc(api.RouteEvents, func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		out := []api.Event{}
		if since < 1 {
			out = append(out, api.Event{Seq: 1, Time: t0, Actor: "server", Action: "enroll", Target: "web-1"})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc(api.RouteNotifications, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []api.Notification{{ID: "n1", Notifier: "ops", Kind: api.NotifySucceeded, Time: t0, Rollout: "ro1",
			Release: "r1-web", Group: "role=web", State: api.RolloutSucceeded, Delivery: api.DeliveryDelivered, Attempts: 1, DeliveredAt: t0}})
	})
	mux.HandleFunc(api.RouteRollouts, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		writeJSON(w, http.StatusOK, []api.Rollout{ro})
	})
	mux.HandleFunc(api.RouteRollout, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.PathValue("id") != ro.ID {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such rollout")
			return
		}
		writeJSON(w, http.StatusOK, ro)
	})
	// action moves the rollout from one of the states in from to state to.
	action := func(to string, from ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req struct{}
			if !decode(w, r, &req) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if r.PathValue("id") != ro.ID {
				writeError(w, http.StatusNotFound, api.CodeNotFound, "no such rollout")
				return
			}
			if !slices.Contains(from, ro.State) {
				writeError(w, http.StatusConflict, api.CodeConflict, "rollout is "+ro.State)
				return
			}
			ro.State = to
			writeJSON(w, http.StatusOK, ro)
		}
	}
	mux.HandleFunc(api.RouteRolloutPause, action(api.RolloutPaused, api.RolloutRunning))
	mux.HandleFunc(api.RouteRolloutResume, action(api.RolloutRunning, api.RolloutPaused))
	mux.HandleFunc(api.RouteRolloutPromote, action(api.RolloutRunning, api.RolloutAwaiting, api.RolloutHeld))
	mux.HandleFunc(api.RouteRolloutAbort, action(api.RolloutAborted, api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting))
	mux.HandleFunc(api.RouteRolloutRollback, func(w http.ResponseWriter, r *http.Request) {
		var req struct{}
		if !decode(w, r, &req) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		back := ro
		back.ID, back.Rollback, back.Strategy = "ro2", true, api.Strategy{Kind: api.StrategyAllAtOnce}
		back.Waves = []api.Wave{{Name: "wave 1", State: api.WaveRunning, Nodes: []api.RolloutNode{{Name: "web-1", State: api.RolloutNodeSwitching, Previous: genID}}}}
		writeJSON(w, http.StatusCreated, back)
	})
	mux.HandleFunc(api.RouteRolloutRetry, func(w http.ResponseWriter, r *http.Request) {
		var req api.RolloutRetryRequest
		if !decode(w, r, &req) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if req.Node != "" && req.Node != "web-1" && req.Node != "web-2" {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "node "+req.Node+" is not in rollout "+ro.ID)
			return
		}
		writeJSON(w, http.StatusOK, ro)
	})
	mux.HandleFunc(api.RouteManifest, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != genID {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such manifest")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"units":{"web.service":"[Service]\nExecStart=/bin/true\n"}}`)
	})
	mux.HandleFunc(api.RouteEventStream, func(w http.ResponseWriter, r *http.Request) {
		since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		if err != nil || since < 0 {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, "since: want a sequence number")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, ": keepalive\n\n")
		for _, e := range streamed {
			if e.Seq > since {
				writeSSE(w, e)
			}
		}
		_ = http.NewResponseController(w).Flush()
		// The stream ends here, as when the server shuts down.
	})
	mux.HandleFunc(api.RouteOpenAPI, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", api.SpecContentType)
		_, _ = w.Write(api.Spec)
	})
	mux.HandleFunc(api.RouteHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc(api.RouteReadyz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

// TestClientAgainstFakeServer drives a correct server through api.Client:
// every call must pass, every operation must be covered. It checks
// client.go against the spec as a side effect.
func TestClientAgainstFakeServer(t *testing.T) {
	v := apitest.New(t)
	srv := httptest.NewServer(v.Handler(fakeServer(t)))
	defer srv.Close()
	ctx := context.Background()
	admin, err := api.NewClient(srv.URL, "admin-token")
	if err != nil {
		t.Fatal(err)
	}
	agent := admin.WithToken("nt")
	anon := admin.WithToken("")
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}

	_, err = anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: "jt", Labels: map[string]string{"role": "web"}})
	check("enroll", err)
	if _, err := anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: "wrong"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("enroll with a wrong join token: %v, want ErrUnauthorized", err)
	}
	d, _, err := agent.Desired(ctx, "web-1", "", time.Second)
	check("desired", err)
	if d == nil || d.ID != genID {
		t.Errorf("desired = %+v", d)
	}
	_, _, err = agent.Desired(ctx, "web-1", genID, 0)
	check("desired unchanged", err)
	_, _, err = agent.Desired(ctx, "new-1", "", api.DefaultPollWait)
	check("desired none", err)
	check("report", agent.Report(ctx, "web-1", api.Report{State: api.AgentIdle, Current: 1, LastGood: 1, Time: t0,
		Units: []api.UnitReport{{Name: "web.service", Active: "active"}}}))
	_, err = agent.Confirm(ctx, "web-1", api.ConfirmRequest{ID: genID, Number: 1})
	check("confirm", err)
	rc, err := agent.Blob(ctx, "web-1", blobSHA)
	check("blob", err)
	if err == nil {
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, blob) {
			t.Errorf("blob: got %d bytes, want the %d bytes served", len(got), len(blob))
		}
	}
	if _, err := agent.Blob(ctx, "web-1", strings.Repeat("0", 64)); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("missing blob: %v, want ErrNotFound", err)
	}

	_, err = admin.Nodes(ctx)
	check("nodes", err)
	_, err = admin.Node(ctx, "web-1")
	check("node", err)
	if _, err := admin.Node(ctx, "web-2"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("node web-2: %v, want ErrNotFound", err)
	}
	_, err = admin.Rollback(ctx, "web-1", api.RollbackRequest{})
	check("rollback", err)
	_, err = admin.Retry(ctx, "web-1")
	check("retry", err)
	_, err = admin.ResetNode(ctx, "web-1")
	check("reset", err)
	_, err = admin.Releases(ctx)
	check("releases", err)
	_, err = admin.Release(ctx, "r1-web")
	check("release", err)
	_, err = admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Manifest: json.RawMessage(`{"units":{}}`)})
	check("create release", err)
	other := []byte("another blob")
	has, err := admin.HasBlob(ctx, sha256Hex(other))
	check("has blob", err)
	if has {
		t.Error("HasBlob: true before upload")
	}
	check("put blob", admin.PutBlob(ctx, sha256Hex(other), bytes.NewReader(other), int64(len(other))))
	check("put blob again", admin.PutBlob(ctx, blobSHA, bytes.NewReader(blob), int64(len(blob))))
	has, err = admin.HasBlob(ctx, sha256Hex(other))
	check("has blob", err)
	if !has {
		t.Error("HasBlob: false after upload")
	}
	_, err = admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "1h", Node: "web-9"})
	check("join token", err)
	_, err = admin.Events(ctx, 0, 100)
	check("events", err)
	_, err = admin.Events(ctx, 1, 0)
	check("events", err)

	_, err = admin.Notifications(ctx, 10)
	check("notifications", err)
	_, err = admin.Rollouts(ctx)
	check("rollouts", err)
	_, err = admin.Rollout(ctx, "ro1")
	check("rollout", err)
	if _, err := admin.Rollout(ctx, "ro9"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("rollout ro9: %v, want ErrNotFound", err)
	}
	for _, a := range []string{"pause", "resume", "pause", "abort", "rollback"} {
		_, err = admin.RolloutAction(ctx, "ro1", a)
		check("rollout "+a, err)
	}
	if _, err := admin.RolloutAction(ctx, "ro1", "resume"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("resume an aborted rollout: %v, want ErrConflict", err)
	}
	if _, err := admin.RolloutAction(ctx, "ro1", "promote"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("promote an aborted rollout: %v, want ErrConflict", err)
	}
	_, err = admin.RolloutRetry(ctx, "ro1", api.RolloutRetryRequest{})
	check("rollout retry", err)
	_, err = admin.RolloutRetry(ctx, "ro1", api.RolloutRetryRequest{Node: "web-2"})
	check("rollout retry node", err)
	if _, err := admin.RolloutRetry(ctx, "ro1", api.RolloutRetryRequest{Node: "db-1"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("retry a node outside the rollout: %v, want ErrNotFound", err)
	}
	m, err := admin.Manifest(ctx, genID)
	check("manifest", err)
	if !strings.Contains(string(m), "web.service") {
		t.Errorf("manifest = %s", m)
	}
	if _, err := admin.Manifest(ctx, "sha256-"+strings.Repeat("0", 64)); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("missing manifest: %v, want ErrNotFound", err)
	}
	var got []int64
	// The fake server ends the stream after its events: a clean close.
	if err := admin.StreamEvents(ctx, 1, func(e api.Event) error {
		got = append(got, e.Seq)
		return nil
	}); !errors.Is(err, api.ErrStreamClosed) {
		t.Errorf("stream events: %v, want ErrStreamClosed", err)
	}
	if !slices.Equal(got, []int64{2}) {
		t.Errorf("streamed seqs %v, want [2]", got)
	}

	for _, path := range []string{"/openapi.yaml", "/healthz", "/readyz"} {
		resp, err := http.Get(srv.URL + path)
		check(path, err)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	srv.Close() // waits for the handlers, and so for their validation
	v.RequireCoverage(t)
	ex := v.Exercised()
	for route, want := range map[string][]int{
		api.RouteDesired:  {200, 204, 304},
		api.RouteBlobHead: {200, 404},
		api.RouteBlobPut:  {204},
		api.RouteEnroll:   {200, 401},

		api.RouteRollout:         {200, 404},
		api.RouteRolloutPause:    {200},
		api.RouteRolloutResume:   {200, 409},
		api.RouteRolloutPromote:  {409},
		api.RouteRolloutRollback: {201},
		api.RouteRolloutRetry:    {200, 404},
		api.RouteManifest:        {200, 404},
		api.RouteEventStream:     {200},
	} {
		if !slices.Equal(ex[route], want) {
			t.Errorf("Exercised()[%q] = %v, want %v", route, ex[route], want)
		}
	}
	if p := v.Problems(); len(p) > 0 {
		t.Errorf("Problems() = %q", p)
	}
}

func TestRequireCoverage(t *testing.T) {
	rec := &recordTB{TB: t}
	v := apitest.New(rec)
	srv := httptest.NewServer(v.Handler(fakeServer(t)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv.Close()
	v.RequireCoverage(rec)
	errs := rec.errors()
	if len(errs) != 1 {
		t.Fatalf("errors = %q, want one", errs)
	}
	msg := errs[0]
	if !strings.Contains(msg, fmt.Sprintf("%d of %d operations never exercised", len(api.Routes)-1, len(api.Routes))) {
		t.Errorf("message %q does not count the missing operations", msg)
	}
	for _, r := range api.Routes {
		if got := strings.Contains(msg, r+" ("); got != (r != api.RouteHealthz) {
			t.Errorf("message lists %s: %v\n%s", r, got, msg)
		}
	}
}

// TestCatches serves one request from a handler and checks what the
// validator reports.
func TestCatches(t *testing.T) {
	const auth = "Bearer x"
	sha := strings.Repeat("0f", 32)
	validNode := `{"name":"a","state":"new","enrolled_at":"2026-11-22T10:00:00Z"}`
	respond := func(status int, ct, body string, hdr ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			if ct != "" {
				w.Header().Set("Content-Type", ct)
			}
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
	}
	jsonOK := func(body string) http.HandlerFunc { return respond(200, "application/json", body) }
	etag := strconv.Quote(genID)
	desired := `{"id":"` + genID + `","release":"r1-web","manifest":{}}`
	errBody := `{"error":"bad","code":"invalid"}`
	big := strings.Repeat("x", 2<<20)
	sse := "id: 1\nevent: enroll\ndata: {\"seq\":1}\n\n: keepalive\n\n"
	bigSSE := strings.Repeat(sse, (2<<20)/len(sse)+1)
	validRollout, _ := json.Marshal(rollout)

	tests := []struct {
		name    string
		strict  bool
		tailnet bool // apitest.Tailnet
		method  string
		path    string
		hdr     []string // pairs; Authorization: auth unless given
		ct      string
		body    string
		handler http.Handler
		want    []string // substrings of the one reported error; none = no error
	}{
		// Correct traffic passes.
		{name: "healthz", method: "GET", path: "/healthz", handler: jsonOK(`{"status":"ok"}`)},
		{name: "node", method: "GET", path: "/v1/nodes/a", handler: jsonOK(validNode)},
		{name: "node json charset", method: "GET", path: "/v1/nodes/a", handler: respond(200, "application/json; charset=utf-8", validNode)},
		{name: "desired", method: "GET", path: "/v1/agent/nodes/a/desired?wait=30s", handler: respond(200, "application/json", desired, "ETag", etag)},
		{name: "desired after a retry", method: "GET", path: "/v1/agent/nodes/a/desired?wait=30s", handler: respond(200, "application/json", desired, "ETag", `"`+genID+`+retry2"`)},
		{name: "desired 304", method: "GET", path: "/v1/agent/nodes/a/desired", hdr: []string{"If-None-Match", etag}, handler: respond(304, "", "", "ETag", etag)},
		{name: "head 404", method: "HEAD", path: "/v1/blobs/" + sha, handler: respond(404, "application/json", errBody)},
		{name: "put blob", method: "PUT", path: "/v1/blobs/" + sha, ct: "application/octet-stream", body: "\x00\xff binary", handler: respond(204, "", "")},
		{name: "big blob streams", method: "GET", path: "/v1/agent/nodes/a/blobs/" + sha, handler: respond(200, "application/octet-stream", big)},
		{name: "bad request rejected", method: "POST", path: "/v1/agent/enroll", hdr: []string{"Authorization", ""}, ct: "application/json", body: `{"name":"a"}`, handler: respond(400, "application/json", errBody)},
		{name: "missing token rejected", method: "GET", path: "/v1/nodes", hdr: []string{"Authorization", ""}, handler: respond(401, "application/json", `{"error":"no token","code":"unauthorized"}`)},
		{name: "event stream", method: "GET", path: "/v1/events/stream?since=0", handler: respond(200, "text/event-stream", sse)},
		{name: "event stream with charset", method: "GET", path: "/v1/events/stream", handler: respond(200, "text/event-stream; charset=utf-8", sse)},
		{name: "big event stream", method: "GET", path: "/v1/events/stream", handler: respond(200, "text/event-stream", bigSSE)},
		{name: "event stream refused", method: "GET", path: "/v1/events/stream?since=x", handler: respond(400, "application/json", errBody)},
		{name: "unknown route rejected", method: "GET", path: "/v1/widgets", handler: respond(404, "application/json", errBody)},

		// Mismatches are caught.
		{name: "extra field", method: "GET", path: "/v1/nodes", handler: jsonOK(`[{"name":"a","state":"new","enrolled_at":"2026-11-22T10:00:00Z","colour":"blue"}]`),
			want: []string{"GET /v1/nodes → 200", "response does not match", "colour"}},
		{name: "missing field", method: "GET", path: "/v1/nodes/a", handler: jsonOK(`{"name":"a","state":"new"}`),
			want: []string{"GET /v1/nodes/a → 200", "enrolled_at"}},
		{name: "null list", method: "GET", path: "/v1/releases", handler: jsonOK(`null`),
			want: []string{"GET /v1/releases → 200", "null"}},
		{name: "undeclared status", method: "GET", path: "/healthz", handler: respond(418, "application/json", errBody),
			want: []string{"GET /healthz → 418", "status 418 not declared"}},
		{name: "unknown route served", method: "GET", path: "/v1/widgets", handler: jsonOK(`[]`),
			want: []string{"GET /v1/widgets → 200", "route not in the spec"}},
		{name: "unknown route strict", strict: true, method: "GET", path: "/v1/widgets", handler: respond(404, "application/json", errBody),
			want: []string{"GET /v1/widgets → 404", "route not in the spec"}},
		{name: "wrong method", method: "DELETE", path: "/v1/nodes/a", handler: respond(204, "", ""),
			want: []string{"DELETE /v1/nodes/a → 204", "route not in the spec", "method not allowed"}},
		{name: "plain text error", method: "GET", path: "/v1/nodes/b", handler: http.NotFoundHandler(),
			want: []string{"GET /v1/nodes/b → 404", "Content-Type", "text/plain"}},
		{name: "error without message", method: "GET", path: "/v1/nodes/b", handler: respond(404, "application/json", `{"code":"not_found"}`),
			want: []string{"GET /v1/nodes/b → 404", `"error"`}},
		{name: "desired without ETag", method: "GET", path: "/v1/agent/nodes/a/desired", handler: jsonOK(desired),
			want: []string{"→ 200", `"ETag" missing`}},
		{name: "304 without ETag", method: "GET", path: "/v1/agent/nodes/a/desired", hdr: []string{"If-None-Match", etag}, handler: respond(304, "", ""),
			want: []string{"→ 304", `"ETag" missing`}},
		{name: "unquoted ETag", method: "GET", path: "/v1/agent/nodes/a/desired", handler: respond(200, "application/json", desired, "ETag", genID),
			want: []string{"→ 200", "ETag"}},
		{name: "head undeclared status", method: "HEAD", path: "/v1/blobs/" + sha, handler: respond(409, "application/json", errBody),
			want: []string{"HEAD /v1/blobs/" + sha + " → 409", "status 409 not declared"}},
		{name: "invalid request accepted", method: "POST", path: "/v1/agent/enroll", hdr: []string{"Authorization", ""}, ct: "application/json", body: `{"name":"a"}`, handler: respond(200, "application/json", `{"name":"a","node_token":"t"}`),
			want: []string{"POST /v1/agent/enroll → 200", "request does not match", "join_token"}},
		{name: "invalid request strict", strict: true, method: "POST", path: "/v1/agent/enroll", ct: "application/json", body: `{"name":"a","join_token":"j","x":1}`, handler: respond(400, "application/json", errBody),
			want: []string{"→ 400", "request does not match", `"x"`}},
		{name: "invalid request crashes server", method: "POST", path: "/v1/nodes/a/rollback", ct: "application/json", body: `{"to":-1}`, handler: respond(500, "application/json", `{"error":"boom","code":"internal"}`),
			want: []string{"→ 500", "request does not match", "to"}},
		{name: "missing token accepted", method: "GET", path: "/v1/nodes", hdr: []string{"Authorization", ""}, handler: jsonOK(`[]`),
			want: []string{"→ 200", "adminToken", "bearer"}},
		{name: "bad node name", method: "GET", path: "/v1/nodes/-a", handler: jsonOK(validNode),
			want: []string{"→ 200", `parameter "name"`}},
		{name: "bad sha256", method: "PUT", path: "/v1/blobs/XYZ", ct: "application/octet-stream", body: "x", handler: respond(204, "", ""),
			want: []string{"→ 204", `parameter "sha256"`}},
		{name: "blob sent as JSON", method: "PUT", path: "/v1/blobs/" + sha, ct: "application/json", body: `{}`, handler: respond(204, "", ""),
			want: []string{"→ 204", "Content-Type"}},
		{name: "body on GET", method: "GET", path: "/v1/nodes", ct: "application/json", body: `{}`, handler: jsonOK(`[]`),
			want: []string{"→ 200", "request body not allowed"}},
		{name: "undeclared query", method: "GET", path: "/v1/nodes?verbose=1", handler: jsonOK(`[]`),
			want: []string{"→ 200", `query parameter "verbose" not declared`}},
		{name: "bad wait", method: "GET", path: "/v1/agent/nodes/a/desired?wait=forever", handler: respond(200, "application/json", desired, "ETag", etag),
			want: []string{"→ 200", `parameter "wait"`}},
		{name: "limit too large", method: "GET", path: "/v1/events?limit=5000", handler: jsonOK(`[]`),
			want: []string{"→ 200", `parameter "limit"`}},
		{name: "spec as text", method: "GET", path: "/openapi.yaml", handler: respond(200, "text/plain", string(api.Spec)),
			want: []string{"→ 200", "Content-Type"}},
		{name: "big response wrong type", method: "GET", path: "/v1/nodes", handler: respond(200, "text/plain", big),
			want: []string{"→ 200", "Content-Type"}},
		{name: "event stream as JSON", method: "GET", path: "/v1/events/stream", handler: jsonOK(`[]`),
			want: []string{"GET /v1/events/stream → 200", "Content-Type"}},
		{name: "event stream as text", method: "GET", path: "/v1/events/stream", handler: respond(200, "text/plain", sse),
			want: []string{"GET /v1/events/stream → 200", "Content-Type"}},
		{name: "JSON route answers a stream", method: "GET", path: "/v1/nodes", handler: respond(200, "text/event-stream", sse),
			want: []string{"GET /v1/nodes → 200", `Content-Type "text/event-stream" not declared`}},
		{name: "stream on a route without a body", method: "POST", path: "/v1/agent/nodes/a/status", ct: "application/json",
			body: `{"state":"idle","current":0,"last_good":0,"time":"2026-11-22T10:00:00Z"}`, handler: respond(202, "text/event-stream", sse),
			want: []string{"→ 202", "status 202 not declared"}},
		{name: "stream with an error status", method: "GET", path: "/v1/events/stream", handler: respond(500, "text/event-stream", sse),
			want: []string{"GET /v1/events/stream → 500", "Content-Type"}},
		{name: "stream undeclared status", method: "GET", path: "/v1/events/stream", handler: respond(418, "text/event-stream", sse),
			want: []string{"→ 418", "status 418 not declared"}},
		{name: "stream bad since", method: "GET", path: "/v1/events/stream?since=-1", handler: respond(200, "text/event-stream", sse),
			want: []string{"→ 200", `parameter "since"`}},
		{name: "rollout bad id", method: "GET", path: "/v1/rollouts/r1-web", handler: jsonOK(string(validRollout)),
			want: []string{"→ 200", `parameter "id"`}},
		{name: "rollout action with a body", method: "POST", path: "/v1/rollouts/ro1/pause", ct: "application/json", body: `{"force":true}`, handler: jsonOK(string(validRollout)),
			want: []string{"→ 200", "request does not match"}},
		{name: "no body at all", method: "GET", path: "/v1/nodes", handler: respond(200, "application/json", ""),
			want: []string{"→ 200", "decode"}},

		// Over the tailnet, agent and admin requests need no token (the
		// caller's tailnet identity, {} in the spec); elsewhere they do.
		{name: "tailnet agent without token", tailnet: true, method: "GET", path: "/v1/agent/nodes/a/desired", hdr: []string{"Authorization", ""}, handler: respond(200, "application/json", desired, "ETag", etag)},
		{name: "tailnet admin without token", tailnet: true, method: "GET", path: "/v1/nodes", hdr: []string{"Authorization", ""}, handler: jsonOK(`[]`)},
		{name: "tailnet admin with token", tailnet: true, method: "GET", path: "/v1/nodes", handler: jsonOK(`[]`)},
		{name: "tailnet no identity", tailnet: true, strict: true, method: "GET", path: "/v1/nodes", hdr: []string{"Authorization", ""}, handler: respond(401, "application/json", `{"error":"no tailnet identity","code":"unauthorized"}`)},
		{name: "tailnet wrong node", tailnet: true, strict: true, method: "POST", path: "/v1/agent/nodes/a/confirm", hdr: []string{"Authorization", ""}, ct: "application/json", body: `{"id":"` + genID + `","number":3}`, handler: respond(403, "application/json", `{"error":"not your node","code":"forbidden"}`)},
		{name: "tailnet still checks the rest", tailnet: true, method: "GET", path: "/v1/nodes?verbose=1", hdr: []string{"Authorization", ""}, handler: jsonOK(`[]`),
			want: []string{"→ 200", `query parameter "verbose" not declared`}},
		{name: "agent without token off the tailnet", method: "GET", path: "/v1/agent/nodes/a/desired", hdr: []string{"Authorization", ""}, handler: respond(200, "application/json", desired, "ETag", etag),
			want: []string{"→ 200", "nodeToken", "bearer"}},
		{name: "agent without token off the tailnet strict", strict: true, method: "GET", path: "/v1/agent/nodes/a/desired", hdr: []string{"Authorization", ""}, handler: respond(401, "application/json", `{"error":"no token","code":"unauthorized"}`),
			want: []string{"→ 401", "request does not match", "nodeToken"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordTB{TB: t}
			var opts []apitest.Option
			if tt.strict {
				opts = append(opts, apitest.Strict())
			}
			if tt.tailnet {
				opts = append(opts, apitest.Tailnet())
			}
			v := apitest.New(rec, opts...)
			srv := httptest.NewServer(v.Handler(tt.handler))
			defer srv.Close()

			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body == "" {
				req.Body = http.NoBody
				req.ContentLength = 0
			}
			req.Header.Set("Authorization", auth)
			if tt.ct != "" {
				req.Header.Set("Content-Type", tt.ct)
			}
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tt.handler != nil && tt.name == "big blob streams" && n != int64(len(big)) {
				t.Errorf("client got %d bytes, want %d", n, len(big))
			}
			if tt.name == "big event stream" && n != int64(len(bigSSE)) {
				t.Errorf("client got %d bytes, want %d", n, len(bigSSE))
			}
			srv.Close() // waits for the handler, and so for the validation

			errs := rec.errors()
			if len(tt.want) == 0 {
				if len(errs) > 0 {
					t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
				}
				return
			}
			if len(errs) == 1 {
				t.Logf("reported: %s", errs[0])
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%s", len(errs), strings.Join(errs, "\n"))
			}
			for _, w := range tt.want {
				if !strings.Contains(errs[0], w) {
					t.Errorf("error does not mention %q:\n%s", w, errs[0])
				}
			}
			if p := v.Problems(); len(p) != 1 {
				t.Errorf("Problems() = %q, want the one error", p)
			}
		})
	}
}

// TestWithoutServer uses the handler directly with a ResponseRecorder, and
// checks what net/http would fill in: an implicit 200 for a handler that
// writes nothing, a sniffed Content-Type for one that sets none.
func TestWithoutServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"writes nothing", func(w http.ResponseWriter, r *http.Request) {}, `Content-Type has unexpected value: ""`},
		{"no Content-Type", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"status":"ok"}`) }, `"text/plain; charset=utf-8"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordTB{TB: t}
			v := apitest.New(rec)
			w := httptest.NewRecorder()
			v.Handler(tc.handler).ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
			errs := rec.errors()
			if len(errs) != 1 || !strings.Contains(errs[0], "GET /healthz → 200") || !strings.Contains(errs[0], tc.want) {
				t.Errorf("errors = %q, want one mentioning %q", errs, tc.want)
			}
			if got := v.Exercised()[api.RouteHealthz]; !slices.Equal(got, []int{200}) {
				t.Errorf("Exercised()[healthz] = %v", got)
			}
		})
	}
}

// TestClientGone checks that an answer nobody receives (the client gave up
// a long-poll) is not validated, though the operation counts as exercised.
func TestClientGone(t *testing.T) {
	rec := &recordTB{TB: t}
	v := apitest.New(rec)
	started := make(chan struct{})
	srv := httptest.NewServer(v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		w.WriteHeader(http.StatusTeapot)
	})))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c, _ := api.NewClient(srv.URL, "nt")
	go func() {
		<-started
		cancel()
	}()
	if _, _, err := c.Desired(ctx, "web-1", "", time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Desired: %v, want context.Canceled", err)
	}
	srv.Close()
	if errs := rec.errors(); len(errs) > 0 {
		t.Errorf("errors = %q, want none", errs)
	}
	if got := v.Exercised()[api.RouteDesired]; !slices.Equal(got, []int{http.StatusTeapot}) {
		t.Errorf("Exercised()[desired] = %v", got)
	}
}

// TestBodiesPassThrough checks the handler reads exactly what the client
// sent, for a small JSON body, a JSON body beyond MaxBody, and a large
// binary body, and that the client reads exactly what the handler wrote.
func TestBodiesPassThrough(t *testing.T) {
	var got []byte
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		switch r.Method {
		case http.MethodPut:
			w.WriteHeader(http.StatusNoContent)
		default:
			writeJSON(w, http.StatusCreated, release)
		}
	})
	bigManifest := `{"name":"web","manifest":{"pad":"` + strings.Repeat("y", apitest.MaxBody) + `"}}`
	for _, tc := range []struct {
		name, method, path, ct, body string
	}{
		{"small json", "POST", "/v1/releases", "application/json", `{"name":"web","manifest":{}}`},
		{"json beyond MaxBody", "POST", "/v1/releases", "application/json", bigManifest},
		{"binary", "PUT", "/v1/blobs/" + blobSHA, "application/octet-stream", string(blob)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := apitest.New(t)
			srv := httptest.NewServer(v.Handler(h))
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ct)
			req.Header.Set("Authorization", "Bearer x")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			srv.Close()
			if string(got) != tc.body {
				t.Errorf("handler read %d bytes, client sent %d", len(got), len(tc.body))
			}
		})
	}
}

// TestConcurrent runs many requests at once (meaningful under -race).
func TestConcurrent(t *testing.T) {
	v := apitest.New(t)
	srv := httptest.NewServer(v.Handler(fakeServer(t)))
	defer srv.Close()
	c, _ := api.NewClient(srv.URL, "x")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := c.Nodes(context.Background()); err != nil {
				t.Error(err)
			}
			if _, _, err := c.Desired(context.Background(), "web-1", "", time.Duration(i)*time.Millisecond); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := v.Exercised()[api.RouteNodes]; !slices.Equal(got, []int{200}) {
		t.Errorf("Exercised()[nodes] = %v", got)
	}
}

// TestEventStreamFlushes checks that an event stream reaches the client as
// the handler flushes it, not when the handler returns, and that a stream
// the client leaves is not validated.
func TestEventStreamFlushes(t *testing.T) {
	rec := &recordTB{TB: t}
	v := apitest.New(rec)
	first := make(chan struct{})
	srv := httptest.NewServer(v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		writeSSE(w, streamed[0])
		_ = http.NewResponseController(w).Flush()
		select {
		case <-first: // the client read the first event while the handler runs
		case <-time.After(10 * time.Second):
			t.Error("the client did not get the first event before the handler returned")
			return
		}
		_, _ = io.WriteString(w, ": keepalive\n\n")
		writeSSE(w, streamed[1])
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})))
	defer srv.Close()
	c, _ := api.NewClient(srv.URL, "x")
	errStop := errors.New("stop")
	var got []int64
	err := c.StreamEvents(context.Background(), 0, func(e api.Event) error {
		got = append(got, e.Seq)
		if e.Seq == 1 {
			close(first)
			return nil
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("StreamEvents: %v, want the callback's error", err)
	}
	if !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("seqs %v, want [1 2]", got)
	}
	srv.Close()
	if errs := rec.errors(); len(errs) > 0 {
		t.Errorf("errors = %q, want none", errs)
	}
	if got := v.Exercised()[api.RouteEventStream]; !slices.Equal(got, []int{200}) {
		t.Errorf("Exercised()[stream] = %v", got)
	}
}
