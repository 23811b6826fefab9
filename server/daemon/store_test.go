package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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
	"github.com/slipway-dev/slipway/shared/generation"
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

// leaderOf asks every server who leads; it returns the index of the one
// that says it leads, -1 if none does, and fails the test if two do or
// they name different leaders.
func leaderOf(t *testing.T, servers ...*testServer) int {
	t.Helper()
	lead, name := -1, ""
	for i, s := range servers {
		r, err := s.admin.Ready(t.Context())
		if err != nil {
			return -1
		}
		if r.Server == nil || r.Server.Address != s.addr {
			t.Fatalf("server %d names itself %+v, want address %s", i, r.Server, s.addr)
		}
		if r.Leader == nil {
			return -1
		}
		if name != "" && r.Leader.Address != name {
			t.Fatalf("servers disagree on the leader: %s and %s", name, r.Leader.Address)
		}
		name = r.Leader.Address
		if r.Leading {
			if lead >= 0 {
				t.Fatalf("servers %d and %d both lead", lead, i)
			}
			lead = i
		}
	}
	if lead >= 0 && servers[lead].addr != name {
		t.Fatalf("server %d leads but the leader is named %s", lead, name)
	}
	return lead
}

// TestServersShareEtcd: two servers on one prefix both serve; exactly one
// leads (readyz, slipway_leader); a release created on the leader wakes a
// long-poll and an event stream held on the other, whose agent downloads the release's blob
// from that other server (blobs are shared through etcd); when the
// leader stops, the other leads.
func TestServersShareEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	cfg := etcdStoreConfig(etcd.Endpoint, "/fleet/")
	servers := []*testServer{startServeWith(t, cfg), startServeWith(t, cfg)}
	var lead int
	waitFor(t, "one leader", func() bool { lead = leaderOf(t, servers...); return lead >= 0 })
	leader, other := servers[lead], servers[1-lead]
	if v := metric(scrape(t, leader.metrics), "slipway_leader", nil); v != 1 {
		t.Errorf("slipway_leader on the leader = %v, want 1", v)
	}
	if v := metric(scrape(t, other.metrics), "slipway_leader", nil); v != 0 {
		t.Errorf("slipway_leader on the other = %v, want 0", v)
	}

	ctx := t.Context()
	node := leader.enrolOver("http://"+other.addr, "web-1")
	blob := []byte("the web binary")
	sha := fmt.Sprintf("%x", sha256.Sum256(blob))
	if err := leader.admin.PutBlob(ctx, sha, bytes.NewReader(blob), int64(len(blob))); err != nil {
		t.Fatal(err)
	}
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web\n"},
		Artifacts: []generation.Artifact{{Name: "web", SHA256: sha, Size: int64(len(blob)), Mode: "0755"}}}
	canon, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan *api.Desired, 1)
	go func() {
		d, _, err := node.Desired(ctx, "web-1", "", 20*time.Second)
		if err != nil {
			t.Errorf("long-poll on the other server: %v", err)
		}
		polled <- d
	}()
	evs, err := other.admin.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	streamed := make(chan api.Event, 1)
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	go func() {
		_ = other.admin.StreamEvents(sctx, evs[len(evs)-1].Seq, func(e api.Event) error {
			if e.Action == "release.create" {
				streamed <- e
			}
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond) // the poll and the stream are held
	start := time.Now()
	if _, err := leader.admin.CreateRelease(ctx, api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: canon}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-polled:
		if d == nil {
			t.Fatal("the long-poll on the other server answered without a desired generation")
		}
		t.Logf("long-poll on the other server answered %s after the release was created on the leader", time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("the long-poll on the other server did not answer the leader's publish")
	}
	select {
	case e := <-streamed:
		t.Logf("event stream on the other server sent %s %s", e.Action, e.Target)
	case <-time.After(15 * time.Second):
		t.Fatal("the event stream on the other server did not send the leader's release.create")
	}
	rc, err := node.Blob(ctx, "web-1", sha)
	if err != nil {
		t.Fatalf("blob from the server that did not receive it: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("blob = %q, %v; want %q", got, err, blob)
	}

	stopped := time.Now()
	if err := leader.stop(); err != nil {
		t.Fatalf("leader: %v", err)
	}
	waitFor(t, "the other server leads", func() bool { return leaderOf(t, other) == 0 })
	t.Logf("after the leader stopped (it resigns), the other led in %s", time.Since(stopped).Round(time.Millisecond))
	if v := metric(scrape(t, other.metrics), "slipway_leader_changes_total", nil); v != 1 {
		t.Errorf("slipway_leader_changes_total on the new leader = %v, want 1", v)
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

// TestServeRefusesWhileMigrating: a server does not start on a prefix a
// migration holds (it names the migration), and starts once it is done.
func TestServeRefusesWhileMigrating(t *testing.T) {
	etcd := etcdtest.Start(t)
	cfg := etcdStoreConfig(etcd.Endpoint, "/fleet/")
	ec, err := EtcdConfig(config.Store{Endpoints: []string{etcd.Endpoint}, Prefix: "/fleet/"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	st, err := etcdstore.Open(t.Context(), ec)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lock, err := st.Lock(t.Context(), "slipway-server migrate on test", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := serveOnce(t, cfg); !errors.Is(err, etcdstore.ErrHeld) || !strings.Contains(err.Error(), "slipway-server migrate on test") {
		t.Fatalf("Serve during a migration = %v, want a refusal naming it", err)
	}
	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	if err := serveOnce(t, cfg); err != nil {
		t.Fatalf("Serve after the migration: %v", err)
	}
}
