package etcdstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

// terms records when each candidate led.
type terms struct {
	mu      sync.Mutex
	leading map[string]bool
	started map[string]time.Time
	ended   map[string]time.Time
}

func (r *terms) lead(name string) func(context.Context) {
	return func(ctx context.Context) {
		r.mu.Lock()
		r.leading[name], r.started[name] = true, time.Now()
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.leading[name], r.ended[name] = false, time.Now()
		r.mu.Unlock()
	}
}

func (r *terms) is(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading[name]
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestElectorTakeover: two candidates on one prefix; one leads, the other
// sees it as leader; the leader cut off from etcd loses the lead and the
// other takes over within about the lease's TTL; a resign on shutdown
// hands over at once.
func TestElectorTakeover(t *testing.T) {
	srv := etcdtest.Start(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	a, b := openAt(t, "http://"+p.addr, "/e/"), openAt(t, srv.Endpoint, "/e/")
	r := &terms{leading: map[string]bool{}, started: map[string]time.Time{}, ended: map[string]time.Time{}}
	const ttl = 2 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	ea := a.Elector("server-a", ttl)
	wg.Go(func() { ea.Run(ctx, r.lead("server-a")) })
	waitUntil(t, "server-a leads", 10*time.Second, func() bool { return r.is("server-a") })
	bctx, stopB := context.WithCancel(ctx)
	eb := b.Elector("server-b", ttl)
	wg.Go(func() { eb.Run(bctx, r.lead("server-b")) })
	if name, err := eb.Leader(ctx); err != nil || name != "server-a" {
		t.Fatalf("Leader seen by b = %q, %v; want server-a", name, err)
	}
	time.Sleep(2 * ttl) // a keeps the lead past its TTL
	if !r.is("server-a") || r.is("server-b") {
		t.Fatal("the lead moved while its holder was alive")
	}

	cut := time.Now()
	p.cut()
	waitUntil(t, "server-b takes over", 5*ttl, func() bool { return r.is("server-b") })
	waitUntil(t, "server-a knows it lost the lead", 5*ttl, func() bool { return !r.is("server-a") })
	r.mu.Lock()
	t.Logf("cut at 0; server-a's term ended after %s, server-b's began after %s (lease TTL %s)",
		r.ended["server-a"].Sub(cut).Round(time.Millisecond), r.started["server-b"].Sub(cut).Round(time.Millisecond), ttl)
	r.mu.Unlock()
	if name, err := eb.Leader(ctx); err != nil || name != "server-b" {
		t.Fatalf("Leader = %q, %v; want server-b", name, err)
	}

	// a back: it campaigns again and waits; b resigns: a leads at once.
	p.resume()
	time.Sleep(time.Second)
	if r.is("server-a") {
		t.Fatal("server-a took the lead back from a live leader")
	}
	resigned := time.Now()
	stopB()
	waitUntil(t, "server-a leads after server-b resigned", 3*ttl, func() bool { return r.is("server-a") })
	t.Logf("after a resign, the next leader in %s", time.Since(resigned).Round(time.Millisecond))
	cancel()
	wg.Wait()
}

// TestElectorFencesDeposedLeader: a write made with a leader's context
// applies while it leads; once another candidate took over, the deposed
// leader's write (its context kept past the end of its term, as an
// in-flight write would be) fails with ErrNotLeader and changes nothing,
// and a write without the leader's context is not fenced.
func TestElectorFencesDeposedLeader(t *testing.T) {
	srv := etcdtest.Start(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	a, b := openAt(t, "http://"+p.addr, "/f/"), openAt(t, srv.Endpoint, "/f/")
	const ttl = 2 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	leadA, leadB := make(chan context.Context, 1), make(chan context.Context, 1)
	keep := func(c chan context.Context) func(context.Context) {
		return func(ctx context.Context) {
			select {
			case c <- context.WithoutCancel(ctx):
			default: // a later term: not looked at
			}
			<-ctx.Done()
		}
	}
	wg.Go(func() { a.Elector("a", ttl).Run(ctx, keep(leadA)) })
	actx := <-leadA
	if _, err := a.Put(actx, "k", []byte("a leads")); err != nil {
		t.Fatalf("write as leader: %v", err)
	}
	wg.Go(func() { b.Elector("b", ttl).Run(ctx, keep(leadB)) })
	p.cut()
	var bctx context.Context
	select {
	case bctx = <-leadB:
	case <-time.After(5 * ttl):
		t.Fatal("b did not take over")
	}
	p.resume()
	_, err := a.Put(actx, "k", []byte("a still thinks it leads"))
	if !errors.Is(err, ErrNotLeader) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("deposed leader's write = %v, want ErrNotLeader and store.ErrUnavailable", err)
	}
	if _, err := b.Put(bctx, "k", []byte("b leads")); err != nil {
		t.Fatalf("write as the new leader: %v", err)
	}
	if _, err := a.Put(t.Context(), "other", []byte("an API write")); err != nil {
		t.Fatalf("unfenced write from a: %v", err)
	}
	e, err := b.Get(t.Context(), "k")
	if err != nil || string(e.Value) != "b leads" {
		t.Fatalf("k = %q, %v; want the new leader's write only", e.Value, err)
	}
}
