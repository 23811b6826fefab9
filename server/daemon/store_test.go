package daemon

import (
	"context"
	"crypto/x509"
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
	"github.com/slipway-dev/slipway/server/store/etcdstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/tlstest"
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

// TestEtcdTLS: a server's [store] with ca_file reaches an etcd served over
// HTTPS by a private CA; without it the certificate is refused.
func TestEtcdTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "etcd-ca")
	pair := ca.Server(t, "etcd").Write(t, dir)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	etcd := etcdtest.StartTLS(t, pair.CertFile, pair.KeyFile, pool)
	sc := config.DefaultStore()
	sc.Kind, sc.Endpoints, sc.RequestTimeout = config.StoreEtcd, []string{etcd.Endpoint}, config.Duration(2*time.Second)
	sc.DialTimeout = config.Duration(2 * time.Second)

	cfg, err := EtcdConfig(sc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcdstore.Open(t.Context(), cfg); err == nil {
		t.Fatal("Open over HTTPS by an unknown CA succeeded without ca_file")
	}
	sc.CAFile = ca.Write(t, dir, "ca.pem")
	if cfg, err = EtcdConfig(sc, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	st, err := etcdstore.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open with ca_file: %v", err)
	}
	st.Close()
}

func TestEtcdConfigFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := tlstest.NewCA(t, "etcd-ca")
	pair := ca.Server(t, "etcd").Write(t, dir)
	other := tlstest.NewCA(t, "other").Server(t, "other")
	wrongKey := file("wrong-key.pem", string(other.KeyPEM))
	for _, tt := range []struct {
		name string
		set  func(*config.Store)
		want string
	}{
		{"password", func(s *config.Store) { s.Username, s.PasswordFile = "slipway", file("pw", "s3cret\n") }, ""},
		{"missing password file", func(s *config.Store) { s.Username, s.PasswordFile = "slipway", filepath.Join(dir, "nope") }, "store.password_file: open " + filepath.Join(dir, "nope")},
		{"empty password file", func(s *config.Store) { s.Username, s.PasswordFile = "slipway", file("empty", "\n") }, "store.password_file: " + filepath.Join(dir, "empty") + " is empty"},
		{"ca file not PEM", func(s *config.Store) { s.CAFile = file("ca.txt", "not a certificate") }, "store.ca_file: " + filepath.Join(dir, "ca.txt") + " holds no PEM certificate"},
		{"client certificate", func(s *config.Store) { s.CertFile, s.KeyFile = pair.CertFile, pair.KeyFile }, ""},
		{"key of another certificate", func(s *config.Store) { s.CertFile, s.KeyFile = pair.CertFile, wrongKey }, "store.cert_file and store.key_file: tls: private key does not match public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := config.DefaultStore()
			sc.Kind, sc.Endpoints = config.StoreEtcd, []string{"https://127.0.0.1:2379"}
			tt.set(&sc)
			if err := sc.Validate(); err != nil {
				t.Fatal(err)
			}
			cfg, err := EtcdConfig(sc, zerolog.Nop())
			if !checkWant(t, err, tt.want) && tt.name == "password" && cfg.Password != "s3cret" {
				t.Errorf("password %q, want s3cret (the file's trailing newline dropped)", cfg.Password)
			}
		})
	}
}

// checkWant fails t unless err is nil (want "") or contains want; it
// reports whether an error was wanted.
func checkWant(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
	return true
}
