package etcdstore

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

// proxy forwards TCP connections from a loopback address to target until
// cut: then it closes them all and refuses new ones, until resumed on the
// same address.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) resume() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy resume on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// keyLog is a Watch function that records its keys.
type keyLog struct {
	mu   sync.Mutex
	keys []string
	ch   chan struct{}
}

func newKeyLog() *keyLog { return &keyLog{ch: make(chan struct{}, 1)} }

func (l *keyLog) fn(key string) {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

// waitKey waits until key has been seen.
func (l *keyLog) waitKey(t *testing.T, key string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for _, k := range l.keys {
			if k == key {
				l.mu.Unlock()
				return
			}
		}
		got := strings.Join(l.keys, " ")
		l.mu.Unlock()
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("Watch function not called with %q within %s (called with %q)", key, d, got)
		}
	}
}

// TestWatchResumesAfterCompaction: a store cut off from etcd while another
// writes and etcd compacts its history cannot replay what it missed; once
// it is reconnected every watcher is woken (a Watch function with its own
// prefix), and later writes are delivered again as usual.
func TestWatchResumesAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	a := openAt(t, "http://"+p.addr, "/c/")
	b := openAt(t, srv.Endpoint, "/c/")
	ctx := t.Context()
	log := newKeyLog()
	defer a.Watch("k/", log.fn)()
	ch := a.Changes(ctx, "k/")

	if _, err := b.Put(ctx, "k/1", []byte("1")); err != nil {
		t.Fatal(err)
	}
	log.waitKey(t, "k/1", 10*time.Second)
	<-ch

	p.cut()
	var rev int64
	for _, k := range []string{"k/2", "k/3"} {
		var err error
		if rev, err = b.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Client().Compact(ctx, rev); err != nil {
		t.Fatalf("compact: %v", err)
	}
	p.resume()
	log.waitKey(t, "k/", 30*time.Second)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no Changes signal after the resync")
	}
	if _, err := b.Put(ctx, "k/4", []byte("x")); err != nil {
		t.Fatal(err)
	}
	log.waitKey(t, "k/4", 10*time.Second)
}

// TestWatchAfterEtcdRestart: etcd killed and started again; the watch
// reconnects and delivers the next write.
func TestWatchAfterEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openAt(t, srv.Endpoint, "/r/")
	log := newKeyLog()
	defer s.Watch("", log.fn)()
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.Put(t.Context(), "after-restart", []byte("x"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Put after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.waitKey(t, "after-restart", 30*time.Second)
}
