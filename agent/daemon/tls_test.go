package daemon

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/tlstest"
)

// TestHTTPSServerWithCAFile: an https:// server is verified against
// tls_ca_file: with the CA that signed its certificate the agent enrols
// and reports; with another CA it reaches nothing and logs why.
func TestHTTPSServerWithCAFile(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "another CA")
	pair := ca.Server(t, "slipway-server")
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("right CA", func(t *testing.T) {
		srv := newFakeServer(t, joinToken)
		n := newNode(t, srv, srv.startTLS(cert))
		n.cfg.CAFile = ca.Write(t, dir, "ca.pem")
		n.start()
		n.waitReport("idle over HTTPS", func(r api.Report) bool { return r.State == api.AgentIdle })
		if err := n.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
	t.Run("another CA", func(t *testing.T) {
		srv := newFakeServer(t, joinToken)
		n := newNode(t, srv, srv.startTLS(cert))
		n.cfg.CAFile = other.Write(t, dir, "other.pem")
		n.start()
		want := "certificate signed by unknown authority (the server's certificate is not signed by a CA in the CA file " + filepath.Join(dir, "other.pem") + ")"
		waitFor(t, "the refused certificate in the log", func() bool { return strings.Contains(n.logs.String(), want) })
		_ = n.stop()
		if e, _, _, _, _ := srv.counts(); e != 0 {
			t.Fatalf("%d enrolments reached a server whose certificate was refused", e)
		}
	})
	t.Run("missing CA file", func(t *testing.T) {
		srv := newFakeServer(t, joinToken)
		n := newNode(t, srv, srv.startTLS(cert))
		n.cfg.CAFile = filepath.Join(dir, "missing.pem")
		if _, err := New(n.cfg, nil, n.db, n.sd, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "CA file: open "+n.cfg.CAFile+": no such file or directory") {
			t.Fatalf("New: %v, want the missing CA file named", err)
		}
	})
}
