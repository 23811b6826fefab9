package fleetsim

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// unitName is the one unit every simulated generation has.
const unitName = "fleet-app.service"

// Fleet is n simulated agents in this process, sharing one HTTP
// transport to the server.
type Fleet struct {
	cfg    AgentConfig
	wire   *wire
	stats  *Stats
	tr     *http.Transport // requests but long-polls
	pollTr *http.Transport // long-polls
	dials  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	nEnrolled int
	enrolErr  []error
	enrolAll  chan struct{} // closed when every agent enrolled or failed to
	n         int
	tracks    map[string]*track // by manifest ID
}

// track is what the agents did with one desired generation.
type track struct {
	pulled    map[string]time.Time
	confirmed map[string]time.Time
	reverts   []Revert
}

// Revert is one agent's revert of a deployed generation.
type Revert struct {
	Node, Reason string
	// Injected: the simulated switch failed (FailureRate) or the agent
	// was stopping; else the confirm did not come (a false revert of a
	// healthy node).
	Injected bool
}

// StartFleet starts one agent per join token (one-time tokens), named
// <prefix>-00001…, against server (http://host:port), at most maxConns
// connections between them. The agents start at once: they enrol
// together, as a new fleet does when its agents are installed at once.
func StartFleet(server string, joins []string, prefix string, maxConns int, cfg AgentConfig) *Fleet {
	n := len(joins)
	cfg.Defaults()
	f := &Fleet{cfg: cfg, stats: &Stats{}, n: n, enrolAll: make(chan struct{}), tracks: map[string]*track{}}
	polls, rest := splitConns(n, maxConns)
	f.tr, f.pollTr = newTransport(rest, &f.dials), newTransport(polls, &f.dials)
	f.wire = &wire{base: server, hc: &http.Client{Transport: f.tr}, polls: &http.Client{Transport: f.pollTr}, stats: f.stats}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	for i := range n {
		a := newAgent(fmt.Sprintf("%s-%05d", prefix, i+1), &f.cfg, f.wire, f)
		join := joins[i]
		f.wg.Go(func() { a.run(ctx, join) })
	}
	return f
}

// splitConns divides maxConns between the long-polls' pool and the other
// requests' (see newTransport): every one of n agents holds one long-poll,
// the other requests keep half of maxConns or 64, whichever is less.
func splitConns(n, maxConns int) (polls, rest int) {
	polls = max(1, min(n, maxConns-min(64, maxConns/2)))
	return polls, max(1, maxConns-polls)
}

// Dials is the number of connections the agents opened so far (a
// connection the server closes is dialled again).
func (f *Fleet) Dials() int64 { return f.dials.Load() }

// Stats are the fleet's answers by route.
func (f *Fleet) Stats() *Stats { return f.stats }

// WaitEnrolled waits until every agent enrolled or was refused, or ctx
// ends, and returns the number enrolled and the refusals.
func (f *Fleet) WaitEnrolled(ctx context.Context) (int, []error, error) {
	select {
	case <-f.enrolAll:
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nEnrolled, append([]error(nil), f.enrolErr...), ctx.Err()
}

// Stop stops every agent and closes the connections.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
	f.tr.CloseIdleConnections()
	f.pollTr.CloseIdleConnections()
}

// Expect starts recording what the agents do with generation id.
func (f *Fleet) Expect(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tracks[id] = &track{pulled: map[string]time.Time{}, confirmed: map[string]time.Time{}}
}

// Progress is what the agents did with one generation so far.
type Progress struct {
	Pulled, Confirmed map[string]time.Time
	Reverts           []Revert
}

// Progress returns a copy of what the agents did with id.
func (f *Fleet) Progress(id string) Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tracks[id]
	if t == nil {
		return Progress{}
	}
	p := Progress{Pulled: make(map[string]time.Time, len(t.pulled)), Confirmed: make(map[string]time.Time, len(t.confirmed)), Reverts: append([]Revert(nil), t.reverts...)}
	for k, v := range t.pulled {
		p.Pulled[k] = v
	}
	for k, v := range t.confirmed {
		p.Confirmed[k] = v
	}
	return p
}

func (f *Fleet) enrolled(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.enrolErr = append(f.enrolErr, err)
	} else {
		f.nEnrolled++
	}
	if f.nEnrolled+len(f.enrolErr) == f.n {
		close(f.enrolAll)
	}
}

func (f *Fleet) pulled(name, id string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tracks[id]; t != nil {
		if _, ok := t.pulled[name]; !ok {
			t.pulled[name] = at
		}
	}
}

func (f *Fleet) confirmed(name, id string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tracks[id]; t != nil {
		t.confirmed[name] = at
	}
}

func (f *Fleet) reverted(name, id, reason string, injected bool, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tracks[id]; t != nil {
		t.reverts = append(t.reverts, Revert{Node: name, Reason: reason, Injected: injected})
	}
}
