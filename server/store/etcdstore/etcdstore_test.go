package etcdstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/server/store/storetest"
)

// openAt opens a store on endpoint under prefix, closed when the test ends.
func openAt(t *testing.T, endpoint, prefix string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{
		Endpoints:      []string{endpoint},
		Prefix:         prefix,
		DialTimeout:    5 * time.Second,
		RequestTimeout: 5 * time.Second,
		Log:            zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func randomPrefix(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "/test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(b) + "/"
}

// TestContract runs the store contract on one real etcd, each subtest
// under a prefix of its own.
func TestContract(t *testing.T) {
	srv := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openAt(t, srv.Endpoint, randomPrefix(t))
	})
}

// TestPersistence: the "file" is a prefix on one etcd, closed and opened
// again.
func TestPersistence(t *testing.T) {
	srv := etcdtest.Start(t)
	storetest.RunPersistence(t, func(t *testing.T, path string) store.Store {
		return openAt(t, srv.Endpoint, "/persist"+path+"/")
	})
}

func TestPrefixesAreSeparate(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openAt(t, srv.Endpoint, "/a/"), openAt(t, srv.Endpoint, "/ab/")
	if _, err := a.Put(t.Context(), "k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if es, err := b.List(t.Context(), ""); err != nil || len(es) != 0 {
		t.Fatalf("store at /ab/ lists %v, %v; want nothing of /a/'s", es, err)
	}
	if n, err := b.Rev(t.Context()); err != nil || n != 0 {
		t.Fatalf("store at /ab/: Rev = %d, %v; want 0 (no write of its own)", n, err)
	}
}

func TestSchemaChecked(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openAt(t, srv.Endpoint, "/s/")
	for _, tt := range []struct{ value, want string }{
		{"3", "schema 3 is newer than this slipway's (2)"},
		{"x", `not a slipway store: /s/schema holds "x"`},
	} {
		if _, err := s.Client().Put(t.Context(), "/s/schema", tt.value); err != nil {
			t.Fatal(err)
		}
		_, err := Open(t.Context(), Config{Endpoints: []string{srv.Endpoint}, Prefix: "/s/"})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open with schema %q = %v, want %q", tt.value, err, tt.want)
		}
	}
}

func TestUnreachable(t *testing.T) {
	start := time.Now()
	_, err := Open(t.Context(), Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond, RequestTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Open of a closed port = %v, want an error naming the endpoint", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Open took %s with 500ms timeouts", d)
	}
}

// TestUnavailable: with etcd gone, calls fail within the request timeout
// with ErrUnavailable naming the endpoint; once it is back they succeed.
func TestUnavailable(t *testing.T) {
	srv := etcdtest.Start(t)
	s, err := Open(t.Context(), Config{Endpoints: []string{srv.Endpoint}, Prefix: "/u/", RequestTimeout: time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv.Kill()
	for name, call := range map[string]func() error{
		"Get": func() error { _, err := s.Get(t.Context(), "k"); return err },
		"Put": func() error { _, err := s.Put(t.Context(), "k", []byte("v")); return err },
		"Txn": func() error {
			_, err := s.Txn(t.Context(), []store.Cond{{Key: "k", Rev: 0}}, []store.Op{{Key: "k", Value: []byte("v")}})
			return err
		},
		"Rev": func() error { _, err := s.Rev(t.Context()); return err },
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s with etcd down = %v, want ErrUnavailable naming %s", name, err, srv.Endpoint)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %s with a 1s request timeout", name, d)
		}
	}
	srv.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := s.Put(t.Context(), "k", []byte("v"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Put 20s after etcd came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
