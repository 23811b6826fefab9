package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/slipway-dev/slipway/shared/api"
)

// serverStore is the store [store] names; etcd is set when it is etcd.
type serverStore struct {
	store.Store
	etcd *etcdstore.Store
}

// openStore opens the bbolt file in state_dir, or the etcd store, which
// several servers may share (they elect a leader: leader.go).
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
	if holder, err := st.LockHolder(ctx); err != nil || holder != "" {
		st.Close()
		if err == nil {
			err = fmt.Errorf("etcd prefix %s: %w: %s; start the server once it is done", cfg.Prefix, etcdstore.ErrHeld, holder)
		}
		return nil, err
	}
	log.Info().Strs("endpoints", cfg.Endpoints).Str("prefix", cfg.Prefix).Msg("state in etcd; servers on this prefix elect a leader")
	return &serverStore{Store: st, etcd: st}, nil
}

// elector is the store's leader election for this server (nil on bbolt:
// the one server leads).
func (s *serverStore) elector(c config.Server, self api.ServerName) elector {
	if s.etcd == nil {
		return nil
	}
	return s.etcd.Elector(campaignValue(self), time.Duration(c.Store.LeaseTTL))
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
