package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/tlstest"
)

// served is the certificate the server at addr presents now.
func served(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestTLSListenAndReload: with tls_cert_file and tls_key_file the API is
// HTTPS; a client with the right CA file works, one with another CA is
// refused with a clear error; a reload (SIGHUP) serves a renewed pair, and
// a broken pair on a reload keeps the running one.
func TestTLSListenAndReload(t *testing.T) {
	certDir := t.TempDir()
	ca1, ca2 := tlstest.NewCA(t, "first CA"), tlstest.NewCA(t, "second CA")
	first := ca1.Server(t, "slipway-first").Write(t, certDir)
	ca1File, ca2File := ca1.Write(t, certDir, "ca1.pem"), ca2.Write(t, certDir, "ca2.pem")
	s := startServeWithOpts(t, fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\n", first.CertFile, first.KeyFile), api.WithCAFile(ca1File))
	ctx := context.Background()
	if _, err := s.admin.Nodes(ctx); err != nil {
		t.Fatalf("HTTPS with the right CA: %v", err)
	}
	wrong, err := api.NewClient("https://"+s.addr, adminToken, api.WithCAFile(ca2File))
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Nodes(ctx)
	if want := "certificate signed by unknown authority (the server's certificate is not signed by a CA in the CA file " + ca2File + ")"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("HTTPS with another CA: %v, want an error containing %q", err, want)
	}
	if got := served(t, s.addr); got.Subject.CommonName != "slipway-first" {
		t.Fatalf("served %s", got.Subject)
	}

	// Renewal: new files (by rename), then SIGHUP.
	ca2.Server(t, "slipway-second").Write(t, certDir)
	s.doReload()
	if got := served(t, s.addr); got.Subject.CommonName != "slipway-second" {
		t.Fatalf("after the reload: served %s, want slipway-second", got.Subject)
	}
	if _, err := wrong.Nodes(ctx); err != nil {
		t.Fatalf("after the reload, the second CA's client: %v", err)
	}

	// A key that does not match: the reload is refused, the pair kept.
	other := ca1.Server(t, "slipway-third")
	if err := os.WriteFile(filepath.Join(certDir, "cert.pem"), other.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.doReload()
	if got := served(t, s.addr); got.Subject.CommonName != "slipway-second" {
		t.Fatalf("after a broken reload: served %s, want slipway-second kept", got.Subject)
	}
	if !strings.Contains(s.log.String(), "private key does not match public key") {
		t.Fatalf("the broken pair is not logged:\n%s", s.log)
	}
}

// TestTLSStartErrors: a missing, unreadable or mismatched pair stops the
// server at start with an error naming the file and the problem, before
// it changes anything on disk.
func TestTLSStartErrors(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "CA")
	a := ca.Server(t, "a").Write(t, filepath.Join(dir))
	b := ca.Server(t, "b")
	mismatched := filepath.Join(dir, "b-key.pem")
	if err := os.WriteFile(mismatched, b.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct{ name, cert, key, want string }{
		{"missing cert", missing, a.KeyFile, "tls_cert_file: open " + missing + ": no such file or directory"},
		{"missing key", a.CertFile, missing, "tls_key_file: open " + missing + ": no such file or directory"},
		{"mismatched", a.CertFile, mismatched, "tls_cert_file " + a.CertFile + " and tls_key_file " + mismatched + ": tls: private key does not match public key"},
		{"not PEM", garbage, a.KeyFile, "tls_cert_file " + garbage + " and tls_key_file " + a.KeyFile + ": tls: failed to find any PEM data in certificate input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.Listen, c.MetricsListen, c.StateDir = "127.0.0.1:0", "", filepath.Join(t.TempDir(), "state")
			c.TLSCertFile, c.TLSKeyFile = tc.cert, tc.key
			err := Serve(context.Background(), c, zerolog.Nop(), Options{Spec: api.Spec})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Serve: %v\nwant %s", err, tc.want)
			}
			if _, err := os.Stat(c.StateDir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state dir after the refused start: %v, want none made", err)
			}
		})
	}
}
