package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/cmdexit"
	"github.com/slipway-dev/slipway/shared/cmdexit/cmdexittest"
	"github.com/slipway-dev/slipway/shared/tlstest"
)

func TestMain(m *testing.M) {
	cmdexittest.RunMain(main)
	os.Exit(m.Run())
}

// startServer runs slipway-server (this test binary's main) on a loopback
// port with an admin token and JSON logs at debug level, and returns it
// with an admin client once it is ready.
func startServer(t *testing.T) (*cmdexittest.Proc, *api.Client) {
	t.Helper()
	p, listen := startServerWith(t, "")
	c, err := api.NewClient("http://"+listen, "admin-token")
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// startServerWith is startServer with top-level config keys extra; it
// returns the listen address.
func startServerWith(t *testing.T, extra string) (*cmdexittest.Proc, string) {
	t.Helper()
	dir := t.TempDir()
	sum := sha256.Sum256([]byte("admin-token"))
	cfg := filepath.Join(dir, "server.toml")
	toml := fmt.Sprintf("listen = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nlog_level = \"debug\"\nstate_dir = %q\n"+extra+
		"[[admin_token]]\nname = \"ci\"\nrole = \"admin\"\nsha256 = %q\n", filepath.Join(dir, "state"), hex.EncodeToString(sum[:]))
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := cmdexittest.Start(t, nil, "--config", cfg, "--log-format", "json")
	p.WaitStderr("slipway-server ready", 20*time.Second)
	_, log := p.Output()
	var ready struct{ Listen string }
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "slipway-server ready") {
			if err := json.Unmarshal([]byte(l), &ready); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p, ready.Listen
}

// The server's log lines name each key once: the root logger carries
// daemon=slipway-server, its parts component=<part>. A join token, an
// enrolment and a node list make the admin API, the registry and the
// daemon log.
func TestLogKeysOnce(t *testing.T) {
	p, c := startServer(t)
	ctx := context.Background()
	jt, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WithToken("").Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: jt.Token}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes(ctx); err != nil {
		t.Fatal(err)
	}
	p.WaitStderr(`"message":"node enrolled"`, 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		_, log := p.Output()
		t.Fatalf("exit %d after SIGTERM, want 0 (a clean stop):\n%s", code, log)
	}
	_, log := p.Output()
	problems, lines := cmdexittest.LogProblems(log)
	for _, want := range []string{`"component":"registry"`, `"component":"httpapi"`, `"daemon":"slipway-server"`} {
		if !strings.Contains(log, want) {
			t.Errorf("no line with %s:\n%s", want, log)
		}
	}
	if len(problems) > 0 || lines < 5 {
		t.Fatalf("%d JSON lines; problems:\n%s\nlog:\n%s", lines, strings.Join(problems, "\n"), log)
	}
}

// Ctrl-C stops the server with exit status 130.
func TestInterruptExits130(t *testing.T) {
	p, _ := startServer(t)
	p.Signal(syscall.SIGINT)
	if code := p.Wait(20 * time.Second); code != cmdexit.Interrupted {
		_, log := p.Output()
		t.Fatalf("exit %d after SIGINT, want %d:\n%s", code, cmdexit.Interrupted, log)
	}
	if _, log := p.Output(); strings.Contains(log, "slipway-server: error") {
		t.Errorf("an error line for an interrupt:\n%s", log)
	}
}

// TestTLSCertificateReloadOnSIGHUP: with tls_cert_file and tls_key_file
// the server speaks HTTPS; after the files are replaced, SIGHUP makes new
// connections get the new certificate.
func TestTLSCertificateReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	first := ca.Server(t, "first").Write(t, dir)
	p, listen := startServerWith(t, fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\n", first.CertFile, first.KeyFile))
	c, err := api.NewClient("https://"+listen, "admin-token", api.WithCAFile(ca.Write(t, dir, "ca.pem")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes(context.Background()); err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	served := func() string {
		conn, err := tls.Dial("tcp", listen, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	ca.Server(t, "second").Write(t, dir)
	p.Signal(syscall.SIGHUP)
	p.WaitStderr(`"message":"reload: TLS certificate loaded"`, 10*time.Second)
	if got := served(); got != "second" {
		t.Fatalf("after SIGHUP: served %q, want second", got)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		_, log := p.Output()
		t.Fatalf("exit %d after SIGTERM:\n%s", code, log)
	}
}
