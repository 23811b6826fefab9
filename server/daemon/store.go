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
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore"
)

// serverStore is the store [store] names, with what the server must watch
// while it runs on it.
type serverStore struct {
	store.Store
	// lost is closed if the server loses its exclusive hold on the store
	// (etcd: the lock's lease expired); nil for bbolt, whose file lock
	// cannot be lost.
	lost <-chan struct{}
	lock *etcdstore.Lock
}

// openStore opens the bbolt file in state_dir, or the etcd store with
// this server's lock on its prefix: one server per prefix until servers
// elect a leader.
func openStore(ctx context.Context, c config.Server, log zerolog.Logger) (*serverStore, error) {
	if c.Store.Kind != config.StoreEtcd {
		st, err := boltstore.Open(filepath.Join(c.StateDir, "store.db"), boltstore.Options{})
		if err != nil {
			return nil, err
		}
		return &serverStore{Store: st}, nil
	}
	cfg, err := EtcdConfig(c.Store, log)
	if err != nil {
		return nil, err
	}
	st, err := etcdstore.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	lock, err := st.Lock(ctx, holder(c), time.Duration(c.Store.LeaseTTL))
	if err != nil {
		st.Close()
		return nil, err
	}
	log.Info().Strs("endpoints", cfg.Endpoints).Str("prefix", cfg.Prefix).Msg("state in etcd; this server holds the prefix's lock")
	return &serverStore{Store: st, lost: lock.Lost(), lock: lock}, nil
}

// Close releases the lock (etcd) and closes the store.
func (s *serverStore) Close() error {
	var errs []error
	if s.lock != nil {
		errs = append(errs, s.lock.Release())
	}
	errs = append(errs, s.Store.Close())
	return errors.Join(errs...)
}

// errLockLost is Serve's error when the etcd lock's lease expired.
var errLockLost = errors.New("lost this server's lock on the etcd store (etcd unreachable for longer than store.lease_ttl?); another server may hold it now, so this one stops")

// holder describes this server to a second one its lock refuses.
func holder(c config.Server) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("slipway-server on %s (pid %d, listen %s)", host, os.Getpid(), c.Listen)
}

// EtcdConfig is the etcd store's configuration from [store]: it reads the
// TLS and password files, and an error names the key and the file.
func EtcdConfig(s config.Store, log zerolog.Logger) (etcdstore.Config, error) {
	cfg := etcdstore.Config{
		Endpoints:      s.Endpoints,
		Prefix:         s.Prefix,
		Username:       s.Username,
		DialTimeout:    time.Duration(s.DialTimeout),
		RequestTimeout: time.Duration(s.RequestTimeout),
		Log:            log,
	}
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("store.password_file: %w", err)
		}
		if cfg.Password = strings.TrimRight(string(b), " \t\r\n"); cfg.Password == "" {
			return cfg, fmt.Errorf("store.password_file: %s is empty", s.PasswordFile)
		}
	}
	tc, err := etcdTLS(s)
	cfg.TLS = tc
	return cfg, err
}

// etcdTLS is the TLS configuration of [store] (nil without ca_file,
// cert_file and https endpoints).
func etcdTLS(s config.Store) (*tls.Config, error) {
	https := false
	for _, e := range s.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if !https && s.CAFile == "" && s.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store.ca_file: %s holds no PEM certificate", s.CAFile)
		}
	}
	if s.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store.cert_file and store.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
