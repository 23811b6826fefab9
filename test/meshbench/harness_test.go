package meshbench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/daemon"
	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/server/config"
	serverd "github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/gossip"
)

const adminToken = "meshbench-admin-token-4b1d9e07"

// mode is how the agents find out about a publish.
type mode string

const (
	// modeWake: [gossip] on both sides; the server's desired-changed event
	// wakes the agents, an interval poll is the fallback.
	modeWake mode = "wake-ups"
	// modePoll: the agents' fetch mode is the same (gossip on, a poll
	// without waiting every poll interval), but no event reaches them: the
	// server runs without [gossip] and the agents form a serf cluster of
	// their own around a seed member that sends nothing.
	modePoll mode = "polling only"
	// modeLongPoll: [gossip] off; each agent holds one long-poll.
	modeLongPoll mode = "long-poll"
)

func (m mode) slug() string { return strings.ReplaceAll(string(m), " ", "-") }

// fleetSpec describes one fleet: a server and n agents.
type fleetSpec struct {
	n            int
	mode         mode
	pollInterval time.Duration // the agents' gossip poll_interval (gossip modes)
	stagger      time.Duration // the agents' starts are spread evenly over this
}

// fleet is a running server with its agents, all in this process.
type fleet struct {
	tb      testing.TB
	spec    fleetSpec
	dir     string
	keyring string
	logs    *logBuffer
	log     zerolog.Logger
	server  string // http://127.0.0.1:port
	admin   *api.Client
	seed    *gossip.Peer // modePoll: the agents' serf cluster's seed
	agents  []*agent
	round   int
	setup   time.Duration // start → every agent enrolled (and its member alive)

	srvStop context.CancelFunc
	srvDone chan error
	stopped bool
}

// agent is one agent daemon of the fleet.
type agent struct {
	name   string
	sd     *fakeSystemd
	wire   *wireWatch
	watch  *daemonWatch
	cancel context.CancelFunc
	done   chan error
}

// startFleet starts the server and the agents and waits until every
// agent is enrolled and, with gossip, its member is alive.
func startFleet(tb testing.TB, spec fleetSpec) *fleet {
	tb.Helper()
	f := &fleet{tb: tb, spec: spec, dir: tb.TempDir(), logs: &logBuffer{}}
	f.log = zerolog.New(f.logs).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	tb.Cleanup(f.stop)
	start := time.Now()

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		tb.Fatal(err)
	}
	f.keyring = filepath.Join(f.dir, "gossip.keys")
	if err := os.WriteFile(f.keyring, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}

	c := config.Default()
	c.Listen, c.MetricsListen, c.StateDir, c.LogLevel = "127.0.0.1:0", "", filepath.Join(f.dir, "server"), "warn"
	c.AdminTokens = []config.AdminToken{{Name: "bench", Role: api.RoleAdmin, SHA256: httpapi.HashToken(adminToken)}}
	if spec.mode == modeWake {
		c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", NodeName: "slipway-server", KeyringFile: f.keyring}
	}
	ready, gossipReady := make(chan string, 1), make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	f.srvStop, f.srvDone = cancel, make(chan error, 1)
	go func() {
		f.srvDone <- serverd.Serve(ctx, c, f.log.With().Str("node", "slipway-server").Logger(), serverd.Options{
			Spec: api.Spec, Ready: func(a string) { ready <- a }, GossipReady: func(a string) { gossipReady <- a },
		})
	}()
	select {
	case a := <-ready:
		f.server = "http://" + a
	case err := <-f.srvDone:
		f.srvDone <- err // for stop
		tb.Fatalf("server: %v\n%s", err, f.logs.tail(40))
	case <-time.After(30 * time.Second):
		tb.Fatalf("server not ready\n%s", f.logs.tail(40))
	}
	var err error
	if f.admin, err = api.NewClient(f.server, adminToken); err != nil {
		tb.Fatal(err)
	}

	var join string
	switch spec.mode {
	case modeWake:
		join = <-gossipReady
	case modePoll:
		f.seed, err = gossip.Create(gossip.Config{NodeName: "seed", BindAddr: "127.0.0.1:0", Keyring: []string{base64.StdEncoding.EncodeToString(key)}, Log: f.log})
		if err == nil {
			err = f.seed.Start()
		}
		if err != nil {
			f.seed = nil
			tb.Fatalf("seed member: %v", err)
		}
		join = f.seed.Addr()
	}
	for i := 0; i < spec.n; i++ {
		if spec.stagger > 0 {
			// Pacing, not a wait for something: agent i starts at
			// i/n of the stagger window, so the agents' poll phases are
			// spread evenly, as in a fleet that has run for a while.
			time.Sleep(time.Until(start.Add(spec.stagger * time.Duration(i) / time.Duration(spec.n))))
		}
		f.startAgent(fmt.Sprintf("n%d-%03d", spec.n, i), join)
	}
	f.waitReady()
	f.setup = time.Since(start)
	return f
}

// startAgent enrols and runs one agent daemon; join is the gossip
// member to join ("" = gossip off).
func (f *fleet) startAgent(name, join string) {
	tb := f.tb
	tb.Helper()
	root := filepath.Join(f.dir, "agents", name)
	for _, d := range []string{"units", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	jt, err := f.admin.CreateJoinToken(context.Background(), api.JoinTokenRequest{})
	if err != nil {
		tb.Fatalf("join token: %v", err)
	}
	joinFile := filepath.Join(root, "join-token")
	if err := os.WriteFile(joinFile, []byte(jt.Token+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	layout := stage.Layout{Dir: filepath.Join(root, "state")}
	db, err := state.Open(layout.DB())
	if err != nil {
		tb.Fatal(err)
	}
	log := f.log.With().Str("node", name).Logger()
	a := &agent{name: name, sd: newFakeSystemd(), wire: &wireWatch{}, watch: &daemonWatch{}, done: make(chan error, 1)}
	// The daemon (and its gossip member) logs at debug, for the lines
	// daemonWatch needs; only warnings and above are kept.
	dlog := zerolog.New(agentLog{watch: a.watch, shared: f.logs}).Level(zerolog.DebugLevel).With().Timestamp().Str("node", name).Logger()
	sw := activate.New(activate.Config{
		Layout:       layout,
		UnitDir:      filepath.Join(root, "units"),
		LinkPrefixes: []string{filepath.Join(root, "etc")},
		Keep:         5,
	}, db, &stage.Stager{Layout: layout, Log: log}, a.sd, nil, log)
	cfg := daemon.Config{
		Servers:       []string{f.server},
		Name:          name,
		Labels:        map[string]string{"bench": "meshbench"},
		JoinTokenFile: joinFile,
		TokenFile:     filepath.Join(layout.Dir, "node-token"),
		AgentVersion:  "meshbench",
		Layout:        layout,
	}
	if join != "" {
		cfg.Gossip = &daemon.Gossip{Bind: "127.0.0.1:0", KeyringFile: f.keyring, Join: []string{join}, PollInterval: f.spec.pollInterval}
	}
	cfg.Dial = a.wire.dial
	d, err := daemon.New(cfg, sw, db, a.sd, dlog)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	f.agents = append(f.agents, a)
	go func() { a.done <- d.Run(ctx) }()
}

// waitReady waits until every agent is enrolled (having dialled the server
// through its wire watch) and, with gossip, its member is alive in the
// cluster.
func (f *fleet) waitReady() {
	f.tb.Helper()
	n := f.spec.n
	waitFor(f.tb, f.logs, 2*time.Minute, "every agent enrolled and its gossip member alive", func() (bool, string) {
		nodes, err := f.admin.Nodes(context.Background())
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, nd := range nodes {
			if nd.Liveness == api.LivenessAlive {
				alive++
			}
		}
		switch f.spec.mode {
		case modePoll:
			alive = 0
			for _, m := range f.seed.Members() {
				if m.Name != "seed" && m.Status == gossip.StatusAlive {
					alive++
				}
			}
		case modeLongPoll:
			alive = n
		}
		return len(nodes) == n && alive == n, fmt.Sprintf("%d of %d enrolled, %d members alive", len(nodes), n, alive)
	})
	for _, a := range f.agents {
		if a.wire.dialCount() == 0 {
			f.tb.Fatalf("agent %s enrolled without dialling through the wire watch (daemon.Config.Dial): this benchmark would measure nothing", a.name)
		}
	}
}

// roundResult is one publish.
type roundResult struct {
	call      time.Duration   // the CreateRelease request until its answer
	pulls     []time.Duration // per agent: publish → the new desired generation on its connection
	woken     []time.Duration // per agent woken by the event: publish → its poll started (modeWake)
	unwoken   int             // agents whose pull no wake-up started (modeWake)
	tags      time.Duration   // publish → the last agent's SetTags returned (gossip; waitTags)
	tagsFails int             // agents whose SetTags timed out
	hasTags   bool            // waitTags ran
	t0        time.Time       // the publish
	succeeded time.Duration   // publish → the rollout seen succeeded (polled every 50ms after the last pull)
}

// last is the time until the last agent pulled.
func (r roundResult) last() time.Duration {
	var m time.Duration
	for _, p := range r.pulls {
		m = max(m, p)
	}
	return m
}

// manifest is the trivial generation of a round: one unit, healthy after
// 1ms (0 would mean the 5s default), no checks.
func manifest(spec fleetSpec, round int) json.RawMessage {
	unit := fmt.Sprintf("[Unit]\nDescription=meshbench %s n=%d round %d\n\n[Service]\nExecStart=/bin/sleep infinity\n", spec.mode, spec.n, round)
	b, err := json.Marshal(map[string]any{
		"name":   "bench",
		"units":  map[string]string{"bench.service": unit},
		"health": map[string]string{"min_healthy_time": "1ms"},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// publish creates a release for every node (all-at-once), waits until
// every agent has pulled it and the rollout succeeded, and returns the
// times. The clock starts right before the CreateRelease request.
func (f *fleet) publish() roundResult {
	tb := f.tb
	tb.Helper()
	f.round++
	raw := manifest(f.spec, f.round)
	m, err := generation.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := m.ID()
	if err != nil {
		tb.Fatal(err)
	}
	seen := make([]<-chan struct{}, len(f.agents))
	for i, a := range f.agents {
		seen[i] = a.wire.expect(id)
		a.watch.expect()
	}
	ctx := context.Background()
	t0 := time.Now()
	rel, err := f.admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "bench", Manifest: raw, Strategy: &api.Strategy{Kind: api.StrategyAllAtOnce}})
	res := roundResult{call: time.Since(t0)}
	if err != nil {
		tb.Fatalf("round %d: create release: %v\n%s", f.round, err, f.logs.tail(40))
	}
	if rel.Manifest != id {
		tb.Fatalf("round %d: the server published manifest %s, the agents are watched for %s", f.round, rel.Manifest, id)
	}
	limit := time.Minute
	if f.spec.mode == modePoll {
		limit = f.spec.pollInterval*6/5 + 30*time.Second
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for i, ch := range seen {
		select {
		case <-ch:
		case <-deadline.C:
			var missing []string
			for _, a := range f.agents[i:] {
				if a.wire.pulledAt().IsZero() {
					missing = append(missing, a.name)
				}
			}
			tb.Fatalf("round %d: %d agent(s) did not pull %s within %v: %v\n%s", f.round, len(missing), id, limit, missing, f.logs.tail(40))
		}
	}
	for _, a := range f.agents {
		pulled := a.wire.pulledAt()
		res.pulls = append(res.pulls, pulled.Sub(t0))
		if f.spec.mode != modeWake {
			continue
		}
		if w, _, _ := a.watch.noted(); !w.IsZero() && !w.After(pulled) {
			res.woken = append(res.woken, w.Sub(t0))
		} else {
			res.unwoken++
		}
	}
	waitFor(tb, f.logs, 2*time.Minute, "rollout "+rel.Rollout+" succeeded", func() (bool, string) {
		ro, err := f.admin.Rollout(ctx, rel.Rollout)
		if err != nil {
			return false, err.Error()
		}
		switch ro.State {
		case api.RolloutFailed, api.RolloutReverted, api.RolloutAborted:
			tb.Fatalf("round %d: rollout %s %s: %s\n%s", f.round, ro.ID, ro.State, ro.Reason, f.logs.tail(40))
		}
		return ro.State == api.RolloutSucceeded, ro.State + " " + ro.Reason
	})
	res.succeeded = time.Since(t0)
	res.t0 = t0
	return res
}

// waitTags waits until every agent's serf member has its new tags (or
// SetTags gave up): until then the agent's loop, and its wake-ups, are
// held up (see the report). Without gossip it does nothing.
func (f *fleet) waitTags(r *roundResult) {
	f.tb.Helper()
	if f.spec.mode == modeLongPoll {
		return
	}
	waitFor(f.tb, f.logs, time.Minute, "every agent's gossip tags updated", func() (bool, string) {
		done := 0
		for _, a := range f.agents {
			if _, t, _ := a.watch.noted(); !t.IsZero() {
				done++
			}
		}
		return done == len(f.agents), fmt.Sprintf("%d of %d", done, len(f.agents))
	})
	for _, a := range f.agents {
		_, t, timeout := a.watch.noted()
		r.tags = max(r.tags, t.Sub(r.t0))
		if timeout {
			r.tagsFails++
		}
	}
	r.hasTags = true
}

// stop ends the agents (as SIGTERM does: they leave the gossip cluster),
// the seed member and the server, and waits for all of them. It runs
// once; the fleet's Cleanup calls it too.
func (f *fleet) stop() {
	if f.stopped {
		return
	}
	f.stopped = true
	for _, a := range f.agents {
		a.cancel()
	}
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for _, a := range f.agents {
		select {
		case err := <-a.done:
			if err != nil {
				f.tb.Errorf("agent %s: Run: %v", a.name, err)
			}
		case <-timeout.C:
			f.tb.Errorf("agent %s: Run did not return a minute after its context ended\n%s", a.name, a.sd)
			return
		}
	}
	if f.seed != nil {
		if err := f.seed.Leave(); err != nil {
			f.tb.Errorf("seed member: %v", err)
		}
	}
	if f.srvStop != nil {
		f.srvStop()
		if err := <-f.srvDone; err != nil {
			f.tb.Errorf("server: %v", err)
		}
	}
	if f.tb.Failed() {
		f.tb.Logf("last log lines (warn and above):\n%s", f.logs.tail(60))
	}
}

// waitFor retries cond every 50ms until it holds, failing tb after
// timeout with cond's last word and the last log lines.
func waitFor(tb testing.TB, logs *logBuffer, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s: %s\n%s", timeout, what, status, logs.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkGoroutines waits until no more goroutines run than before the
// fleets started, and fails with the stacks of the extra ones otherwise.
func checkGoroutines(tb testing.TB, before int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			tb.Errorf("%d goroutines still run after every fleet stopped (%d before):\n%s", runtime.NumGoroutine(), before, b.String())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processFootprint is the process's goroutines and heap in use (server,
// agents and harness together).
func processFootprint() (goroutines int, heapMiB float64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), float64(ms.HeapInuse) / (1 << 20)
}
