package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

func TestEventsFollow(t *testing.T) {
	for _, jsonOut := range []bool{false, true} {
		name := "text"
		if jsonOut {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			f := newFakeServer(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f.onEvents = func(f *fakeServer, n int) {
				switch n {
				case 2: // nothing new at the first poll; then an event arrives
					f.events = append(f.events, api.Event{Seq: 6, Time: now, Actor: "token:ci", Action: "node.retry", Target: "web-2"})
				case 4:
					cancel()
				}
			}
			args := []string{"events", "--follow", "--since", "3"}
			if jsonOut {
				args = append(args, "--json")
			}
			vars := map[string]string{envServer: f.URL(), envToken: viewerToken}
			r := runCLI(ctx, testEnv(vars), args...)
			if r.err != nil {
				t.Fatalf("events --follow: %v", r.err)
			}
			wantLog := []string{
				"GET /v1/events?since=3",
				"GET /v1/events?since=5",
				"GET /v1/events?since=5",
				"GET /v1/events?since=6",
			}
			if got := f.log(); strings.Join(got, "\n") != strings.Join(wantLog, "\n") {
				t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLog, "\n"))
			}
			if !jsonOut {
				want := "SEQ     TIME                 ACTOR             ACTION            TARGET        DETAIL\n" +
					"4       2026-11-23 11:50:00  node:web-2        node.failed       web-2         generation 5 reverted\n" +
					"5       2026-11-23 11:59:00  server            auth.denied       -\n" +
					"6       2026-11-23 12:00:00  token:ci          node.retry        web-2\n"
				if r.stdout != want {
					t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
				}
				return
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			var seqs []int64
			for _, l := range lines {
				var e api.Event
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				seqs = append(seqs, e.Seq)
			}
			if len(seqs) != 3 || seqs[0] != 4 || seqs[2] != 6 {
				t.Errorf("seqs %v, want 4 5 6", seqs)
			}
		})
	}
}

func TestEventsFollowPagesThroughWithoutWaiting(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Three full pages of 2, then an empty answer, after which the test ends.
	f.events = append(f.events, api.Event{Seq: 6, Time: now, Actor: "server", Action: "node.offline", Target: "db-1"})
	f.onEvents = func(f *fakeServer, n int) {
		if n == 4 {
			cancel()
		}
	}
	e := testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken})
	e.pollInterval = time.Hour // a wait between full pages would hang the test
	r := runCLI(ctx, e, "events", "--follow", "--limit", "2")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := strings.Count(r.stdout, "\n"); got != 1+6 {
		t.Errorf("want a header and 6 events:\n%s", r.stdout)
	}
	want := []string{"GET /v1/events?limit=2&since=0", "GET /v1/events?limit=2&since=2", "GET /v1/events?limit=2&since=4", "GET /v1/events?limit=2&since=6"}
	if got := f.log(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("requests %v, want %v", got, want)
	}
}

func TestEventsFollowStopsOnServerErrors(t *testing.T) {
	f := newFakeServer(t)
	e := testEnv(map[string]string{envServer: f.URL(), envToken: "unknown-token-x"})
	r := runCLI(context.Background(), e, "events", "--follow")
	if !errors.Is(r.err, api.ErrUnauthorized) {
		t.Fatalf("error %v, want unauthorized", r.err)
	}
}

// closedAddr returns an address where nothing listens.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestConnectionRefused(t *testing.T) {
	server := "http://" + closedAddr(t)
	sock := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name string
		vars map[string]string
		args []string
		hint string
	}{
		{"tcp from the environment", map[string]string{envServer: server}, []string{"status"},
			"is slipway-server running at " + server + "? (server from SLIPWAY_SERVER)"},
		{"tcp from the flag", nil, []string{"nodes", "--server", server},
			"is slipway-server running at " + server + "? (server from --server)"},
		{"unix socket", nil, []string{"events", "--server", sock},
			"is slipway-server running at " + sock + "? (server from --server)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(context.Background(), testEnv(tt.vars), tt.args...)
			if r.err == nil {
				t.Fatal("no error")
			}
			if got := Hint(r.err); got != tt.hint {
				t.Errorf("hint %q, want %q", got, tt.hint)
			}
			if exitCode(r.err) != 1 {
				t.Errorf("exit code %d", exitCode(r.err))
			}
		})
	}
}

func TestBadServerAddress(t *testing.T) {
	r := runCLI(context.Background(), testEnv(nil), "nodes", "--server", "ftp://host")
	if r.err == nil || !strings.Contains(r.err.Error(), "scheme must be http, https or unix") || Hint(r.err) == "" {
		t.Fatalf("error %v, hint %q", r.err, Hint(r.err))
	}
}

func TestCommandsWithoutServer(t *testing.T) {
	// None of these asks the server, so none needs a token or a config.
	e := testEnv(map[string]string{envServer: "http://" + closedAddr(t)})
	for _, args := range [][]string{
		{"--help"}, {"--version"}, {"deploy", "--help"},
		{"completion", "bash"}, {"completion", "zsh"}, {"completion", "fish"}, {"completion", "powershell"},
	} {
		r := runCLI(context.Background(), e, args...)
		if r.err != nil || r.stdout == "" {
			t.Errorf("%v: error %v, stdout %d bytes", args, r.err, len(r.stdout))
		}
	}
	r := runCLI(context.Background(), e, "completion", "bash")
	if !strings.Contains(r.stdout, "__start_slipway") {
		t.Errorf("bash completion does not look like one:\n%.200s", r.stdout)
	}
}

func TestCompleteNodeNames(t *testing.T) {
	f := newFakeServer(t)
	e := testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken})
	r := runCLI(context.Background(), e, "__complete", "rollback", "")
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, n := range []string{"db-1\toffline", "web-1\tconverged", "web-2\tfailed"} {
		if !strings.Contains(r.stdout, n+"\n") {
			t.Errorf("completion lacks %q:\n%s", n, r.stdout)
		}
	}
}

func TestStatusExitCodes(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		nodes int // keep the first n canned nodes
		code  int
	}{
		{"view exits 0 with failed nodes", []string{"status"}, 5, 0},
		{"json view exits 0 too", []string{"status", "--json"}, 5, 0},
		{"fail on unhealthy", []string{"status", "--fail-on-unhealthy"}, 5, ExitUnhealthy},
		{"fail on unhealthy, json", []string{"status", "--fail-on-unhealthy", "--json"}, 5, ExitUnhealthy},
		{"all converged", []string{"status", "--fail-on-unhealthy"}, 1, 0},
		{"no nodes", []string{"status", "--fail-on-unhealthy"}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			f.nodes = f.nodes[:tt.nodes]
			r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken}), tt.args...)
			if got := exitCode(r.err); got != tt.code {
				t.Errorf("exit code %d (%v), want %d", got, r.err, tt.code)
			}
			if r.stdout == "" {
				t.Error("no output")
			}
		})
	}
}

func TestJSONShapes(t *testing.T) {
	f := newFakeServer(t)
	e := testEnv(map[string]string{envServer: f.URL(), envToken: adminToken})
	decode := func(args []string, v any) {
		t.Helper()
		r := runCLI(context.Background(), e, append(args, "--json")...)
		if r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
		dec := json.NewDecoder(strings.NewReader(r.stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.stdout)
		}
	}
	var nodes []api.Node
	decode([]string{"nodes"}, &nodes)
	if len(nodes) != 5 || nodes[0].Name != "db-1" {
		t.Errorf("nodes: %d, first %q", len(nodes), nodes[0].Name)
	}
	var status []api.Node
	decode([]string{"status"}, &status)
	for _, n := range status {
		if explained(n.State) && n.Report == nil {
			t.Errorf("status --json: %s (%s) without its report", n.Name, n.State)
		}
	}
	var node api.Node
	decode([]string{"node", "show", "web-2"}, &node)
	if node.Report == nil || len(node.Report.Generations) != 5 {
		t.Errorf("node show: %+v", node)
	}
	var gens []GenerationView
	decode([]string{"generations", "web-2"}, &gens)
	if len(gens) != 5 || !gens[3].Current || !gens[3].LastGood || gens[4].Current {
		t.Errorf("generations: %+v", gens)
	}
	var none []GenerationView
	decode([]string{"generations", "new-1"}, &none)
	if none == nil || len(none) != 0 {
		t.Errorf("generations of a node without report: %#v, want []", none)
	}
	var evs []api.Event
	decode([]string{"events", "--since", "5"}, &evs)
	if evs == nil || len(evs) != 0 {
		t.Errorf("no events: %#v, want []", evs)
	}
	var jt api.JoinToken
	decode([]string{"token", "create", "--ttl", "2h"}, &jt)
	if jt.Token == "" || !jt.ExpiresAt.Equal(now.Add(2*time.Hour)) {
		t.Errorf("join token %+v", jt)
	}
	var rb api.Node
	decode([]string{"rollback", "web-2"}, &rb)
	if rb.Desired != idA {
		t.Errorf("rollback desired %s", rb.Desired)
	}
}

func TestJoinTokenAloneOnStdout(t *testing.T) {
	f := newFakeServer(t)
	r := runCLI(context.Background(), testEnv(map[string]string{envServer: f.URL(), envToken: adminToken}), "token", "create")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stdout != "join-0123456789\n" {
		t.Errorf("stdout %q, want the token alone", r.stdout)
	}
	if strings.Contains(r.stderr, "join-0123456789") || !strings.Contains(r.stderr, "expires at") {
		t.Errorf("stderr %q", r.stderr)
	}
	var req api.JoinTokenRequest
	if err := json.Unmarshal(f.lastRequest().Body, &req); err != nil || req.TTL != "24h0m0s" {
		t.Errorf("request %s (%v), want ttl 24h", f.lastRequest().Body, err)
	}
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{24 * time.Hour, "24h"}, {90 * time.Minute, "1h30m"}, {10 * time.Minute, "10m"}, {45 * time.Second, "45s"},
		{time.Hour + time.Second, "1h1s"}, {0, "0s"},
	} {
		if got := durationString(tt.d); got != tt.want {
			t.Errorf("durationString(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "0s"}, {45 * time.Millisecond, "45ms"}, {1234 * time.Millisecond, "1.2s"}, {90 * time.Second, "90.0s"}} {
		if got := tookString(tt.d); got != tt.want {
			t.Errorf("tookString(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestCompleteRolloutIDs(t *testing.T) {
	f := newFakeServer(t)
	e := testEnv(map[string]string{envServer: f.URL(), envToken: viewerToken})
	r := runCLI(context.Background(), e, "__complete", "rollout", "watch", "")
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, id := range []string{"ro5\t", "ro6\t", "ro7\t"} {
		if !strings.Contains(r.stdout, id) {
			t.Errorf("completion lacks %q:\n%s", id, r.stdout)
		}
	}
	// A second argument is not completed.
	if r := runCLI(context.Background(), e, "__complete", "rollout", "watch", "ro5", ""); strings.Contains(r.stdout, "ro6") {
		t.Errorf("completed a second argument:\n%s", r.stdout)
	}
}
