package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/shared/api"
)

func etcdStoreConfig(endpoint, prefix string) string {
	return fmt.Sprintf("[store]\nkind = \"etcd\"\nendpoints = [%q]\nprefix = %q\nlease_ttl = \"2s\"\ndial_timeout = \"2s\"\nrequest_timeout = \"2s\"\n", endpoint, prefix)
}

// serveOnce runs Serve with a config of extra in a directory of its own
// and returns its error; it must fail to start.
func serveOnce(t *testing.T, extra string) error {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "server.toml")
	body := fmt.Sprintf("listen = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nstate_dir = %q\n%s", filepath.Join(dir, "state"), extra)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return Serve(ctx, c, zerolog.New(zerolog.NewTestWriter(t)), Options{Spec: api.Spec, Ready: func(string) { cancel() }})
}

// TestServeOnEtcd: a server keeps its state in etcd; a second server on
// the same prefix refuses to start and names the first; after the first
// stops, another starts on the same state.
func TestServeOnEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	cfg := etcdStoreConfig(etcd.Endpoint, "/fleet/")
	first := startServeWith(t, cfg)
	first.enrol("web-1")

	err := serveOnce(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "held by another server: slipway-server on") || !strings.Contains(err.Error(), "/fleet/lock") {
		t.Fatalf("second server on the prefix: %v, want a refusal naming the lock and its holder", err)
	}
	if err := serveOnce(t, etcdStoreConfig(etcd.Endpoint, "/other/")); err != nil {
		t.Fatalf("a server on another prefix: %v", err)
	}
	if err := first.stop(); err != nil {
		t.Fatalf("first server: %v", err)
	}
	next := startServeWith(t, cfg)
	nodes, err := next.admin.Nodes(t.Context())
	if err != nil || len(nodes) != 1 || nodes[0].Name != "web-1" {
		t.Fatalf("nodes after a restart on etcd: %+v, %v; want web-1", nodes, err)
	}
}

// TestServeStopsWhenLockLost: etcd gone for longer than the lease: the
// server stops with an error saying why.
func TestServeStopsWhenLockLost(t *testing.T) {
	etcd := etcdtest.Start(t)
	s := startServeWith(t, etcdStoreConfig(etcd.Endpoint, "/fleet/"))
	etcd.Kill()
	select {
	case err := <-s.done:
		s.stopOnce.Do(func() {})
		if !errors.Is(err, errLockLost) {
			t.Fatalf("Serve = %v, want errLockLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve still running 30s after etcd died, with a 2s lease")
	}
}

func TestServeEtcdUnreachable(t *testing.T) {
	err := serveOnce(t, etcdStoreConfig("http://127.0.0.1:1", "/fleet/"))
	if err == nil || !strings.Contains(err.Error(), "open etcd store [http://127.0.0.1:1]") {
		t.Fatalf("Serve with etcd unreachable = %v, want an error naming the endpoint", err)
	}
}

// TestWatchdogStoreUnavailable: an unreachable etcd is not a wedged
// server: the watchdog keeps pinging (the server answers 503), while any
// other failure of the store withholds the pings.
func TestWatchdogStoreUnavailable(t *testing.T) {
	for _, tt := range []struct {
		name  string
		err   error
		pings bool
	}{
		{"answers", nil, true},
		{"etcd unavailable", fmt.Errorf("rev: etcd [http://a:2379]: %w: context deadline exceeded", store.ErrUnavailable), true},
		{"wedged", context.DeadlineExceeded, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &states{}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				watchdog(ctx, 20*time.Millisecond, func(context.Context) error { return tt.err }, st.add, zerolog.Nop())
			}()
			time.Sleep(200 * time.Millisecond) // ~20 ticks
			cancel()
			<-done
			if got := st.count("WATCHDOG=1") > 0; got != tt.pings {
				t.Errorf("pinged %d times, want pings: %v", st.count("WATCHDOG=1"), tt.pings)
			}
		})
	}
}
