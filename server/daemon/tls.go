package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// certs is the listen address's TLS certificate (tls_cert_file,
// tls_key_file): loaded at start, loaded again by reload (SIGHUP), and
// served through tls.Config.GetCertificate, so connections opened after a
// reload get the new certificate and open ones keep theirs.
type certs struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// loadCerts reads the pair; its errors name the file and what is wrong.
func loadCerts(certFile, keyFile string) (*certs, error) {
	c := &certs{certFile: certFile, keyFile: keyFile}
	cert, err := c.read()
	if err != nil {
		return nil, err
	}
	c.cur.Store(cert)
	return c, nil
}

// read loads and checks the pair without installing it.
func (c *certs) read() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file %s and tls_key_file %s: %w", c.certFile, c.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls_cert_file %s: %w", c.certFile, err)
		}
	}
	return &cert, nil
}

// leaf is the certificate served now.
func (c *certs) leaf() *x509.Certificate { return c.cur.Load().Leaf }

// config is the listener's TLS config: TLS 1.2 at least, HTTP/1.1 (the
// limits count connections, and a request is one on its connection).
func (c *certs) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := c.cur.Load(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("no certificate")
		},
	}
}

// validity describes a certificate for the log: its subject and expiry.
func validity(leaf *x509.Certificate, now time.Time) (subject string, notAfter time.Time, expired bool) {
	return leaf.Subject.String(), leaf.NotAfter, now.After(leaf.NotAfter)
}
