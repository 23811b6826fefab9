package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/agent/systemd"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/api/apitest"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// fakeServer implements the agent routes of slipway-server in memory, as
// the API describes them: the desired state's ETag is api.Desired.ETag, so
// an operator's retry ends a long-poll. With retryKeepsETag it does not (a
// lost wake-up): the daemon must still see the retry by resyncing.
type fakeServer struct {
	t  *testing.T
	mu sync.Mutex

	join     string            // the valid one-time join token
	joinUsed bool              //
	tokens   map[string]string // node token -> node name
	enrolls  []api.EnrollRequest

	desired  *api.Desired
	changed  chan struct{} // closed and replaced on every change of desired
	polls    int           // answers to the desired route
	full     int           // of which with a body (200)
	none     int           // of which "no desired generation" (204)
	inflight int           // long-polls waiting
	reports  []api.Report
	confirms []api.ConfirmRequest
	never    bool // never confirm
	// legacyConfirm makes the fake a server from before confirms carried a
	// report: it refuses unknown fields, as slipway-server does (400).
	legacyConfirm bool
	carried       int // reports recorded from confirms
	badConfirms   int // confirms refused with 400
	// refusedAt is len(reports) when the last confirm was refused with
	// 400; confirmedAt, when each confirm in confirms came.
	refusedAt   int
	confirmedAt []int
	// overloaded answers confirms with its Status (and Retry-After) until
	// its Until (zero: for ever) once set.
	overloaded *overloadAnswer
	overloads  int // confirms answered overloaded
	stalls     int // confirms held unanswered (overloadAnswer.StallAfter)
	blobs      map[string][]byte
	blobGets   []string
	blobFail   int // the next blob requests answered 500
	authFail   int // requests refused for their token

	retryKeepsETag bool

	// routine makes the fake answer a routine report on the long-poll
	// (shared/routinereport) as slipway-server does; ridden counts those
	// it counted as seen.
	routine bool
	ridden  int

	waits     []time.Duration // the wait of every desired poll, in order
	pollTimes []time.Time     // when each desired poll arrived

	// whois, when set, makes the fake a tailnet listener: agent requests
	// are authorised by the caller's tailnet identity (tagged agentTag,
	// host name = the node in the route) instead of node tokens, and an
	// empty join token enrols the caller by it. noTailnetToken: such an
	// enrolment issues no node token.
	whois          func(ctx context.Context, remoteAddr string) (mesh.Identity, error)
	noTailnetToken bool

	spec *apitest.Validator // every request and answer must match openapi.yaml (apitest.Tailnet with whois)
	srv  *httptest.Server
}

func newFakeServer(t *testing.T, join string) *fakeServer {
	return &fakeServer{t: t, join: join, tokens: map[string]string{}, changed: make(chan struct{}), blobs: map[string][]byte{},
		spec: apitest.New(t)}
}

// start serves over loopback HTTP and returns the address.
func (f *fakeServer) start() string {
	f.srv = httptest.NewServer(f.handler())
	f.t.Cleanup(f.stop)
	return f.srv.URL
}

// startTLS serves over loopback HTTPS with cert and returns the address.
func (f *fakeServer) startTLS(cert tls.Certificate) string {
	f.srv = httptest.NewUnstartedServer(f.handler())
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	f.srv.StartTLS()
	f.t.Cleanup(f.stop)
	return f.srv.URL
}

// listenUnix serves on a unix socket at path (which may have been served
// before and stopped).
func (f *fakeServer) listenUnix(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(f.handler())
	f.srv.Listener.Close()
	f.srv.Listener = l
	f.srv.Start()
	f.t.Cleanup(f.stop)
}

// stop takes the server down: no listener, no connections.
func (f *fakeServer) stop() {
	if f.srv != nil {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.srv = nil
	}
}

func (f *fakeServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(api.RouteEnroll, f.enroll)
	mux.HandleFunc(api.RouteDesired, f.auth(f.getDesired))
	mux.HandleFunc(api.RouteReport, f.auth(f.report))
	mux.HandleFunc(api.RouteConfirm, f.auth(f.confirm))
	mux.HandleFunc(api.RouteAgentBlob, f.auth(f.blob))
	return f.spec.Handler(mux)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeServer) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Code: api.CodeInvalid})
		return
	}
	if req.JoinToken == "" && f.whois != nil {
		id, err := f.whois(r.Context(), r.RemoteAddr)
		switch {
		case err != nil:
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "no tailnet identity: " + err.Error(), Code: api.CodeUnauthorized})
			return
		case !id.Tagged(mesh.DefaultAgentTag) || id.NodeName != req.Name:
			writeJSON(w, http.StatusForbidden, api.Error{Error: fmt.Sprintf("node %s may not enrol as %s", id.NodeName, req.Name), Code: api.CodeForbidden})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.enrolls = append(f.enrolls, req)
		resp := api.EnrollResponse{Name: req.Name}
		if !f.noTailnetToken {
			resp.NodeToken = "node-token-" + req.Name + "-s3cret"
			f.tokens[resp.NodeToken] = req.Name
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.JoinToken != f.join || f.joinUsed {
		writeJSON(w, http.StatusUnauthorized, api.Error{Error: "invalid or used join token", Code: api.CodeUnauthorized})
		return
	}
	f.joinUsed = true
	f.enrolls = append(f.enrolls, req)
	tok := "node-token-" + req.Name + "-s3cret"
	f.tokens[tok] = req.Name
	writeJSON(w, http.StatusOK, api.EnrollResponse{Name: req.Name, NodeToken: tok})
}

// auth checks the node token against the {name} of the route.
func (f *fakeServer) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.whois != nil {
			id, err := f.whois(r.Context(), r.RemoteAddr)
			switch {
			case err != nil:
				writeJSON(w, http.StatusUnauthorized, api.Error{Error: "no tailnet identity", Code: api.CodeUnauthorized})
			case !id.Tagged(mesh.DefaultAgentTag) || id.NodeName != r.PathValue("name"):
				f.mu.Lock()
				f.authFail++
				f.mu.Unlock()
				writeJSON(w, http.StatusForbidden, api.Error{Error: "not your node", Code: api.CodeForbidden})
			default:
				h(w, r)
			}
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		name, ok := f.tokens[tok]
		if !ok || name != r.PathValue("name") {
			f.authFail++
		}
		f.mu.Unlock()
		switch {
		case !ok:
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "unknown node token", Code: api.CodeUnauthorized})
		case name != r.PathValue("name"):
			writeJSON(w, http.StatusForbidden, api.Error{Error: "not your node", Code: api.CodeForbidden})
		default:
			h(w, r)
		}
	}
}

func (f *fakeServer) getDesired(w http.ResponseWriter, r *http.Request) {
	have, _ := strconv.Unquote(r.Header.Get("If-None-Match"))
	wait, err := time.ParseDuration(r.URL.Query().Get(api.QueryWait))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "wait: " + err.Error(), Code: api.CodeInvalid})
		return
	}
	f.mu.Lock()
	f.waits = append(f.waits, wait)
	f.pollTimes = append(f.pollTimes, time.Now())
	if v := r.Header.Get(routinereport.RequestHeader); v != "" && f.routine {
		fp, _, err := routinereport.Parse(v)
		if err != nil {
			f.mu.Unlock()
			writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Code: api.CodeInvalid})
			return
		}
		answer := routinereport.Unknown
		if len(f.reports) > 0 && routinereport.Print(f.reports[len(f.reports)-1]) == fp {
			answer = routinereport.Seen
			f.ridden++
		}
		w.Header().Set(routinereport.ResponseHeader, answer)
	}
	f.mu.Unlock()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	timedOut := false
	for {
		f.mu.Lock()
		d, ch := f.desired, f.changed
		cur := d.ETag()
		if f.retryKeepsETag && d != nil {
			cur = d.ID
		}
		if cur != have || timedOut {
			f.polls++
			switch {
			case d == nil:
				f.none++
				f.mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			case cur == have:
				f.mu.Unlock()
				w.Header().Set("ETag", strconv.Quote(cur))
				w.WriteHeader(http.StatusNotModified)
			default:
				f.full++
				body := *d
				f.mu.Unlock()
				w.Header().Set("ETag", strconv.Quote(cur))
				writeJSON(w, http.StatusOK, body)
			}
			return
		}
		f.inflight++
		f.mu.Unlock()
		var gone bool
		select {
		case <-ch:
		case <-deadline.C:
			timedOut = true
		case <-r.Context().Done():
			gone = true
		}
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
		if gone {
			return
		}
	}
}

func (f *fakeServer) report(w http.ResponseWriter, r *http.Request) {
	var rep api.Report
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Code: api.CodeInvalid})
		return
	}
	f.mu.Lock()
	f.reports = append(f.reports, rep)
	if f.routine {
		w.Header().Set(routinereport.ResponseHeader, routinereport.Seen)
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// confirm confirms the desired ID once the node has reported that it
// waits for the confirm (a report posted before, or carried by the
// confirm, which the fake records as the server does).
func (f *fakeServer) confirm(w http.ResponseWriter, r *http.Request) {
	req, err := f.decodeConfirm(r)
	if err != nil {
		f.mu.Lock()
		f.badConfirms++
		f.refusedAt = len(f.reports)
		f.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "request body: " + err.Error(), Code: api.CodeInvalid})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.confirms = append(f.confirms, req)
	f.confirmedAt = append(f.confirmedAt, len(f.reports))
	if req.Report != nil {
		f.reports = append(f.reports, *req.Report)
		f.carried++
	}
	if o := f.overloaded; o != nil && (o.Until.IsZero() || time.Now().Before(o.Until)) {
		if o.StallAfter > 0 && f.overloads >= o.StallAfter {
			f.stalls++
			f.mu.Unlock()
			<-r.Context().Done()
			f.mu.Lock() // for the deferred Unlock
			return
		}
		f.overloads++
		code := api.CodeOverloaded
		if o.Status != http.StatusTooManyRequests {
			code = api.CodeUnavailable
		}
		w.Header().Set("Retry-After", o.RetryAfter)
		writeJSON(w, o.Status, api.Error{Error: "busy (fake)", Code: code})
		return
	}
	reported := false
	for _, rep := range f.reports {
		reported = reported || (rep.State == api.AgentSwitching && rep.Phase == "confirm" && rep.Target == req.ID)
	}
	ok := !f.never && reported && f.desired != nil && f.desired.ID == req.ID
	writeJSON(w, http.StatusOK, api.ConfirmResponse{Confirmed: ok, ReportRecorded: req.Report != nil})
}

// decodeConfirm reads a confirm strictly, as slipway-server does; a
// legacyConfirm fake knows only the fields before the carried report.
func (f *fakeServer) decodeConfirm(r *http.Request) (api.ConfirmRequest, error) {
	f.mu.Lock()
	legacy := f.legacyConfirm
	f.mu.Unlock()
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if legacy {
		var old struct {
			ID     string `json:"id"`
			Number int    `json:"number"`
		}
		err := dec.Decode(&old)
		return api.ConfirmRequest{ID: old.ID, Number: old.Number}, err
	}
	var req api.ConfirmRequest
	err := dec.Decode(&req)
	return req, err
}

func (f *fakeServer) blob(w http.ResponseWriter, r *http.Request) {
	sha := r.PathValue("sha256")
	f.mu.Lock()
	b, ok := f.blobs[sha]
	f.blobGets = append(f.blobGets, sha)
	fail := f.blobFail > 0
	if fail {
		f.blobFail--
	}
	f.mu.Unlock()
	if fail {
		writeJSON(w, http.StatusInternalServerError, api.Error{Error: "blob store unavailable", Code: api.CodeInternal})
		return
	}
	if !ok {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no such blob", Code: api.CodeNotFound})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// publish makes m the desired generation (Retry is kept, as the server
// keeps it per node).
func (f *fakeServer) publish(m *generation.Manifest, release string) string {
	f.t.Helper()
	raw, err := m.Canonical()
	if err != nil {
		f.t.Fatal(err)
	}
	id, err := m.ID()
	if err != nil {
		f.t.Fatal(err)
	}
	f.setDesired(&api.Desired{ID: id, Release: release, Manifest: raw})
	return id
}

func (f *fakeServer) setDesired(d *api.Desired) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d != nil && f.desired != nil {
		d.Retry = f.desired.Retry
	}
	f.desired = d
	close(f.changed)
	f.changed = make(chan struct{})
}

// retry is an operator's retry: it bumps Retry (the ID stays).
func (f *fakeServer) retry() {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := *f.desired
	d.Retry++
	f.desired = &d
	close(f.changed)
	f.changed = make(chan struct{})
}

// overloadAnswer is how the fake answers confirms while overloaded.
type overloadAnswer struct {
	Status     int
	RetryAfter string // seconds
	Until      time.Time
	// StallAfter > 0: after that many overload answers the confirms get
	// no answer at all (held until the agent gives the request up).
	StallAfter int
}

func (f *fakeServer) setOverloaded(o *overloadAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.overloaded = o
}

func (f *fakeServer) stallCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stalls
}

func (f *fakeServer) overloadCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overloads
}

func (f *fakeServer) setNever(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.never = v
}

func (f *fakeServer) addBlob(b []byte) generation.Artifact {
	h := sha256.Sum256(b)
	sha := hex.EncodeToString(h[:])
	f.mu.Lock()
	f.blobs[sha] = b
	f.mu.Unlock()
	return generation.Artifact{Name: "web", SHA256: sha, Size: int64(len(b)), Mode: "0755"}
}

// lastReport returns the newest report, if any.
func (f *fakeServer) lastReport() (api.Report, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) == 0 {
		return api.Report{}, false
	}
	return f.reports[len(f.reports)-1], true
}

func (f *fakeServer) counts() (enrolls, polls, full, reports, confirms int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.enrolls), f.polls, f.full, len(f.reports), len(f.confirms)
}

// String prints the fake's state for failure messages.
func (f *fakeServer) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	fmt.Fprintf(&b, "fake server: enrolls=%d polls=%d full=%d confirms=%d auth_failures=%d never=%v blob_gets=%d\n",
		len(f.enrolls), f.polls, f.full, len(f.confirms), f.authFail, f.never, len(f.blobGets))
	if f.desired != nil {
		fmt.Fprintf(&b, "  desired %s release=%s retry=%d\n", f.desired.ID, f.desired.Release, f.desired.Retry)
	}
	from := max(0, len(f.reports)-8)
	for _, r := range f.reports[from:] {
		fmt.Fprintf(&b, "  report state=%s phase=%s current=%d/%s last_good=%d target=%s outcome=%s reason=%q\n",
			r.State, r.Phase, r.Current, short(r.CurrentID), r.LastGood, short(r.Target), r.Outcome, r.Reason)
	}
	return b.String()
}

func short(id string) string {
	if len(id) > 15 {
		return id[:15]
	}
	return id
}

// fakeSystemd records calls and keeps unit states (after agent/activate's
// fake). Units in foreign are provided by a unit file slipway does not own.
type fakeSystemd struct {
	mu      sync.Mutex
	calls   []string
	active  map[string]string // unit -> ActiveState
	foreign map[string]string // unit -> FragmentPath
	fail    map[string]error  // unit -> error of Status
}

func newFakeSystemd() *fakeSystemd {
	return &fakeSystemd{active: map[string]string{}, foreign: map[string]string{}, fail: map[string]error{}}
}

func (f *fakeSystemd) record(op, u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+u)
}

func (f *fakeSystemd) set(u, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[u] = state
	return nil
}

func (f *fakeSystemd) Reload(context.Context) error { f.record("reload", ""); return nil }
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	f.record("start", u)
	return f.set(u, "active")
}
func (f *fakeSystemd) Restart(_ context.Context, u string) error {
	f.record("restart", u)
	return f.set(u, "active")
}
func (f *fakeSystemd) TryRestart(_ context.Context, u string) error {
	f.record("try-restart", u)
	return nil
}
func (f *fakeSystemd) Stop(_ context.Context, u string) error {
	f.record("stop", u)
	return f.set(u, "inactive")
}
func (f *fakeSystemd) ResetFailed(context.Context, string) error { return nil }
func (f *fakeSystemd) Status(_ context.Context, u string) (systemd.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[u]; err != nil {
		return systemd.Status{}, err
	}
	st := systemd.Status{Name: u, LoadState: "loaded", ActiveState: f.active[u], SubState: "running", FragmentPath: f.foreign[u]}
	if st.ActiveState != "active" {
		st.SubState = "dead"
	}
	if st.ActiveState == "" {
		st.ActiveState, st.LoadState = "inactive", "not-found"
	}
	return st, nil
}

func (f *fakeSystemd) setForeign(u, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if path == "" {
		delete(f.foreign, u)
	} else {
		f.foreign[u] = path
	}
}

// String prints the calls so far, sorted.
func (f *fakeSystemd) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := append([]string(nil), f.calls...)
	sort.Strings(c)
	return fmt.Sprintf("fake systemd: active=%v calls=%q", f.active, c)
}

func (f *fakeSystemd) count(call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == call {
			n++
		}
	}
	return n
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(sub string) int {
	return strings.Count(s.String(), sub)
}
