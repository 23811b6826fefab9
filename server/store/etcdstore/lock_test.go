package etcdstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

func TestLock(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openAt(t, srv.Endpoint, "/l/"), openAt(t, srv.Endpoint, "/l/")
	other := openAt(t, srv.Endpoint, "/other/")
	ctx := t.Context()
	la, err := a.Lock(ctx, "server-a", 2*time.Second)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	_, err = b.Lock(ctx, "server-b", 2*time.Second)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "server-a") {
		t.Fatalf("second lock = %v, want ErrHeld naming server-a", err)
	}
	lo, err := other.Lock(ctx, "server-o", 2*time.Second)
	if err != nil {
		t.Fatalf("lock on another prefix: %v", err)
	}
	defer lo.Release()
	// Held past its TTL: the client keeps the lease alive.
	time.Sleep(3 * time.Second)
	if _, err := b.Lock(ctx, "server-b", 2*time.Second); !errors.Is(err, ErrHeld) {
		t.Fatalf("lock after the TTL passed while held = %v, want ErrHeld", err)
	}
	if err := la.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Lost():
	default:
		t.Error("Lost not closed after Release")
	}
	lb, err := b.Lock(ctx, "server-b", 2*time.Second)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	defer lb.Release()
}

// TestLockLost: etcd gone for longer than the lease: Lost closes, and the
// lock is free for another once etcd is back.
func TestLockLost(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openAt(t, srv.Endpoint, "/l/")
	l, err := s.Lock(t.Context(), "server-a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	select {
	case <-l.Lost():
	case <-time.After(20 * time.Second):
		t.Fatal("Lost not closed 20s after etcd died, with a 2s lease")
	}
	srv.Restart()
	b := openAt(t, srv.Endpoint, "/l/")
	deadline := time.Now().Add(20 * time.Second)
	for {
		lb, err := b.Lock(t.Context(), "server-b", 2*time.Second)
		if err == nil {
			lb.Release()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock still refused 20s after etcd came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLockFencesWrites: the lock's lease revoked behind the holder's back
// (as etcd expires it while the holder is paused): the holder's next
// writes fail with ErrLockLost and write nothing, before it notices.
func TestLockFencesWrites(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openAt(t, srv.Endpoint, "/f/"), openAt(t, srv.Endpoint, "/f/")
	ctx := t.Context()
	l, err := a.Lock(ctx, "server-a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Put(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatalf("Put while holding the lock: %v", err)
	}
	if _, err := b.Client().Revoke(ctx, l.sess.Lease()); err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func() error{
		"Put":    func() error { _, err := a.Put(ctx, "k2", []byte("x")); return err },
		"Delete": func() error { return a.Delete(ctx, "k") },
		"Txn": func() error {
			_, err := a.Txn(ctx, []store.Cond{{Key: "k", Rev: rev}}, []store.Op{{Key: "k", Value: []byte("2")}})
			return err
		},
	} {
		if err := write(); !errors.Is(err, ErrLockLost) || !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s after the lock was lost = %v, want ErrLockLost", name, err)
		}
	}
	if e, err := b.Get(ctx, "k"); err != nil || string(e.Value) != "1" {
		t.Errorf("k = %+v, %v; want 1, untouched", e, err)
	}
	if _, err := b.Get(ctx, "k2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("k2 written after the lock was lost: %v", err)
	}
	// Unlocked stores are not fenced.
	if _, err := b.Put(ctx, "k3", []byte("x")); err != nil {
		t.Errorf("Put on a store without a lock: %v", err)
	}
}
