package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// fakeServer answers one agent's routes and records what it was asked.
type fakeServer struct {
	t        *testing.T
	desired  *api.Desired
	confirms []int // status of each confirm answer in turn; the last repeats (0: hang until the request ends)

	mu    sync.Mutex
	calls []string
	nconf int
}

func (f *fakeServer) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeServer) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(api.HeaderProtocol) != "1" {
		f.t.Errorf("%s %s without %s", r.Method, r.URL.Path, api.HeaderProtocol)
	}
	switch {
	case r.URL.Path == "/v1/agent/enroll":
		var req api.EnrollRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.record("enroll " + req.JoinToken)
		_ = json.NewEncoder(w).Encode(api.EnrollResponse{Name: req.Name, NodeToken: "node-token"})
	case r.Header.Get("Authorization") != "Bearer node-token":
		http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
	case strings.HasSuffix(r.URL.Path, "/desired"):
		f.serveDesired(w, r)
	case strings.HasSuffix(r.URL.Path, "/status"):
		var rep api.Report
		_ = json.NewDecoder(r.Body).Decode(&rep)
		f.record(fmt.Sprintf("status %s/%s/%s", rep.State, rep.Phase, rep.Outcome))
	case strings.HasSuffix(r.URL.Path, "/confirm"):
		f.serveConfirm(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeServer) serveDesired(w http.ResponseWriter, r *http.Request) {
	have := r.Header.Get("If-None-Match")
	f.record("desired " + have)
	if have == `"`+f.desired.ID+`"` {
		select { // a long-poll that sees no change
		case <-r.Context().Done():
		case <-time.After(200 * time.Millisecond):
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_ = json.NewEncoder(w).Encode(f.desired)
}

func (f *fakeServer) serveConfirm(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	status := f.confirms[min(f.nconf, len(f.confirms)-1)]
	f.nconf++
	f.mu.Unlock()
	var req api.ConfirmRequest
	_ = json.NewDecoder(r.Body).Decode(&req)
	_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client hang up
	carried := "-"
	if req.Report != nil {
		carried = fmt.Sprintf("%s/%s", req.Report.State, req.Report.Phase)
	}
	f.record(fmt.Sprintf("confirm %d report %s", status, carried))
	switch status {
	case 0:
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	case http.StatusOK:
		_ = json.NewEncoder(w).Encode(api.ConfirmResponse{Confirmed: true, ReportRecorded: req.Report != nil})
	default:
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(api.Error{Error: "busy", Code: api.CodeOverloaded})
	}
}

// recorder is an observer that keeps what one agent did.
type recorder struct {
	mu         sync.Mutex
	gotConfirm bool
	reverts    []Revert
	done       chan struct{}
}

func (r *recorder) enrolled(string, error)           {}
func (r *recorder) pulled(string, string, time.Time) {}
func (r *recorder) confirmed(string, string, time.Time) {
	r.mu.Lock()
	r.gotConfirm = true
	r.mu.Unlock()
	close(r.done)
}

func (r *recorder) reverted(name, id, reason string, injected bool, _ time.Time) {
	r.mu.Lock()
	r.reverts = append(r.reverts, Revert{Node: name, Reason: reason, Injected: injected})
	r.mu.Unlock()
	close(r.done)
}

func desiredFor(t *testing.T, confirmTimeout time.Duration) *api.Desired {
	t.Helper()
	m := &generation.Manifest{Name: "fleet", ConfirmTimeout: generation.Duration(confirmTimeout), Units: map[string]string{unitName: "[Service]\nExecStart=/bin/sleep infinity\n"}}
	canon, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := m.ID()
	return &api.Desired{ID: id, Release: "r1-fleet", Manifest: canon}
}

// TestAgentSwitch runs one simulated agent through a switch against a
// fake server and checks its requests and whether it reverted.
func TestAgentSwitch(t *testing.T) {
	tests := []struct {
		name       string
		confirms   []int
		wantRevert string // "" = confirmed; else a substring of the revert reason
	}{
		{"confirmed at once", []int{200}, ""},
		{"not confirmed, then confirmed", []int{409, 200}, ""},
		{"overloaded past the window, then confirmed", []int{429, 503, 500, 429, 200}, ""},
		{"overloaded beyond the overload bound", []int{429}, "overload_confirm_timeout"},
		{"no answer for the window", []int{0}, "no confirm after"},
		{"the carried report refused (an older server)", []int{400, 200}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeServer{t: t, desired: desiredFor(t, 600*time.Millisecond), confirms: tt.confirms}
			srv := httptest.NewServer(fs)
			defer srv.Close()
			cfg := AgentConfig{PollWait: time.Second, ConfirmInterval: 100 * time.Millisecond, OverloadConfirmTimeout: 2 * time.Second,
				BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, RequestTimeout: 300 * time.Millisecond, SwitchTime: 50 * time.Millisecond}
			cfg.Defaults()
			rec := &recorder{done: make(chan struct{})}
			a := newAgent("sim-1", &cfg, &wire{base: srv.URL, hc: srv.Client(), stats: &Stats{}}, rec)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); a.run(ctx, "join-1") }()
			select {
			case <-rec.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the agent neither confirmed nor reverted; calls: %q", fs.log())
			}
			time.Sleep(300 * time.Millisecond) // the report after the outcome, the next long-poll
			cancel()
			<-done
			checkOutcome(t, rec, tt.wantRevert, fs.log())
			checkSequence(t, fs.log(), fs.desired.ID, tt.wantRevert == "", tt.confirms[0] == http.StatusBadRequest)
		})
	}
}

func checkOutcome(t *testing.T, rec *recorder, wantRevert string, calls []string) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	switch {
	case wantRevert == "" && !rec.gotConfirm:
		t.Errorf("reverted (%v), want confirmed; calls: %q", rec.reverts, calls)
	case wantRevert != "" && len(rec.reverts) != 1:
		t.Errorf("confirmed, want a revert (%s); calls: %q", wantRevert, calls)
	case wantRevert != "" && (rec.reverts[0].Injected || !strings.Contains(rec.reverts[0].Reason, wantRevert)):
		t.Errorf("revert %+v, want a false revert with %q", rec.reverts[0], wantRevert)
	}
}

// checkSequence checks the order of the real agent's requests: enrol,
// then a "switching" report, confirms carrying the confirm phase's report,
// the outcome's report; and after the last confirm a long-poll for the new
// ETag. Against an older server (refused: its first confirm is answered
// 400), the report is posted apart after that answer and the confirms
// that follow carry none. (The first report and the first long-poll go out
// together, as do the outcome's report and the next long-poll.)
func checkSequence(t *testing.T, calls []string, id string, confirmed, refused bool) {
	t.Helper()
	outcome := "status idle//switched"
	if !confirmed {
		outcome = "status failed//reverted"
	}
	want := []string{"enroll join-1", "status switching/stage/", "confirm", outcome}
	if refused {
		want = []string{"enroll join-1", "status switching/stage/", "confirm 400 report switching/confirm", "status switching/confirm/", "confirm 200 report -", outcome}
	}
	for _, c := range calls {
		switch {
		case c == "status switching/confirm/" && !refused:
			t.Errorf("requests %q: the confirm phase's report was posted apart", calls)
		case strings.HasPrefix(c, "confirm ") && !refused && !strings.HasSuffix(c, " report switching/confirm"):
			t.Errorf("requests %q: a confirm without the confirm phase's report", calls)
		}
	}
	i, lastConfirm, repoll := 0, -1, -1
	for j, c := range calls {
		if i < len(want) && strings.HasPrefix(c, want[i]) {
			i++
		}
		if strings.HasPrefix(c, "confirm") {
			lastConfirm = j
		}
		if c == `desired "`+id+`"` {
			repoll = j
		}
	}
	if i < len(want) {
		t.Errorf("requests %q: missing %q (in order %q)", calls, want[i], want)
	}
	if repoll < lastConfirm {
		t.Errorf("requests %q: no long-poll for the new ETag after the last confirm", calls)
	}
}

// TestIdleWindow: the idle measurement lasts whole poll cycles, the number
// nearest the asked window; shorter than one cycle, as asked.
func TestIdleWindow(t *testing.T) {
	const cycle = 55 * time.Second
	for _, tc := range []struct{ asked, want time.Duration }{
		{60 * time.Second, 55 * time.Second},
		{55 * time.Second, 55 * time.Second},
		{80 * time.Second, 55 * time.Second},
		{85 * time.Second, 110 * time.Second},
		{3 * time.Minute, 165 * time.Second},
		{30 * time.Second, 30 * time.Second},
		{time.Second, time.Second},
	} {
		p := Params{IdleWindow: tc.asked, Agent: AgentConfig{PollWait: cycle}}
		if got := p.idleWindow(); got != tc.want {
			t.Errorf("idle window asked %s: %s, want %s", tc.asked, got, tc.want)
		}
	}
}

// TestSplitConns: every agent gets a long-poll connection when the budget
// allows, and the other requests always keep some (the dashboard test's
// fleet of 6 agents on 16 connections once got a single poll connection).
func TestSplitConns(t *testing.T) {
	for _, tc := range []struct{ n, max, polls, rest int }{
		{10000, 18000, 10000, 8000},
		{50, 164, 50, 114},
		{6, 16, 6, 10},
		{100, 16, 8, 8},
		{1, 1, 1, 1},
	} {
		if p, r := splitConns(tc.n, tc.max); p != tc.polls || r != tc.rest {
			t.Errorf("splitConns(%d, %d) = %d, %d; want %d, %d", tc.n, tc.max, p, r, tc.polls, tc.rest)
		}
	}
}

func TestValidateIdleDelay(t *testing.T) {
	p := Params{ServerBin: "x", Sizes: []int{1}, RollingPercent: 10, IdleDelay: -time.Second}
	if err := p.validate(); err == nil || !strings.Contains(err.Error(), "idle delay -1s") {
		t.Fatalf("validate = %v, want the negative idle delay named", err)
	}
	p.IdleDelay = 0
	if err := p.validate(); err != nil {
		t.Fatalf("validate = %v", err)
	}
}
