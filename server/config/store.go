package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Store kinds.
const (
	StoreBolt = "bolt"
	StoreEtcd = "etcd"
)

// Store is the [store] section: where the server keeps its state. Kind
// "bolt" (the default) is one file, <state_dir>/store.db. Kind "etcd"
// keeps it in etcd under Prefix, which several servers may share: every
// one serves the APIs and an elected leader (a lease of LeaseTTL) runs the
// rollout engine and the other work that must run once.
type Store struct {
	Kind string `toml:"kind"`

	// Endpoints are the etcd client URLs (http:// or https://host:port).
	Endpoints []string `toml:"endpoints"`
	// Prefix is put before every key the server writes (default
	// "/slipway/"); it starts and ends with "/".
	Prefix string `toml:"prefix"`
	// CAFile verifies etcd's certificate (PEM; "" = the system roots).
	CAFile string `toml:"ca_file"`
	// CertFile and KeyFile are the client certificate (both or neither).
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Username and PasswordFile authenticate to etcd (both or neither);
	// the file holds the password (trailing white space is dropped).
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout Duration `toml:"dial_timeout"`
	// RequestTimeout bounds each request to etcd (default 10s).
	RequestTimeout Duration `toml:"request_timeout"`
	// LeaseTTL is the leader election's lease: a leader cut off from etcd
	// (or dead) this long stops leading and another server takes over
	// (default 10s).
	LeaseTTL Duration `toml:"lease_ttl"`
}

// Store defaults and bounds.
const (
	DefaultStorePrefix    = "/slipway/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultLeaseTTL       = 10 * time.Second
	MinStoreTimeout       = 100 * time.Millisecond
	MaxStoreTimeout       = 5 * time.Minute
	MinLeaseTTL           = 2 * time.Second
	MaxLeaseTTL           = 5 * time.Minute
)

// DefaultStore returns the [store] defaults.
func DefaultStore() Store {
	return Store{
		Kind:           StoreBolt,
		Prefix:         DefaultStorePrefix,
		DialTimeout:    Duration(DefaultDialTimeout),
		RequestTimeout: Duration(DefaultRequestTimeout),
		LeaseTTL:       Duration(DefaultLeaseTTL),
	}
}

func (s Store) validate() []error {
	switch s.Kind {
	case StoreBolt:
		return s.validateBolt()
	case StoreEtcd:
		return s.validateEtcd()
	}
	return []error{fmt.Errorf("store.kind: %q, want \"bolt\" (one file in state_dir) or \"etcd\"", s.Kind)}
}

// validateBolt refuses etcd keys with kind "bolt": they would be ignored.
func (s Store) validateBolt() []error {
	var errs []error
	for _, k := range []struct {
		name string
		set  bool
	}{{"endpoints", len(s.Endpoints) > 0}, {"ca_file", s.CAFile != ""}, {"cert_file", s.CertFile != ""},
		{"key_file", s.KeyFile != ""}, {"username", s.Username != ""}, {"password_file", s.PasswordFile != ""}} {
		if k.set {
			errs = append(errs, fmt.Errorf("store.%s: only for kind = \"etcd\"", k.name))
		}
	}
	return errs
}

func (s Store) validateEtcd() []error {
	var errs []error
	if len(s.Endpoints) == 0 {
		errs = append(errs, errors.New("store.endpoints: required with kind = \"etcd\" (e.g. [\"https://10.0.0.1:2379\"])"))
	}
	for i, e := range s.Endpoints {
		if err := checkEndpoint(e); err != nil {
			errs = append(errs, fmt.Errorf("store.endpoints[%d]: %q: %v", i, e, err))
		}
	}
	if !strings.HasPrefix(s.Prefix, "/") || !strings.HasSuffix(s.Prefix, "/") || strings.ContainsFunc(s.Prefix, isSpaceOrControl) {
		errs = append(errs, fmt.Errorf("store.prefix: %q, want a path that starts and ends with \"/\" (e.g. \"/slipway/\")", s.Prefix))
	}
	for _, f := range []struct{ key, v string }{{"store.ca_file", s.CAFile}, {"store.cert_file", s.CertFile}, {"store.key_file", s.KeyFile}, {"store.password_file", s.PasswordFile}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", f.key, f.v))
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		errs = append(errs, errors.New("store.cert_file and store.key_file: set both (a client certificate) or neither"))
	}
	if (s.Username == "") != (s.PasswordFile == "") {
		errs = append(errs, errors.New("store.username and store.password_file: set both or neither"))
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"store.dial_timeout", s.DialTimeout}, {"store.request_timeout", s.RequestTimeout}} {
		if t := time.Duration(d.v); t < MinStoreTimeout || t > MaxStoreTimeout {
			errs = append(errs, fmt.Errorf("%s: %s, want %s to %s", d.key, t, MinStoreTimeout, MaxStoreTimeout))
		}
	}
	if t := time.Duration(s.LeaseTTL); t < MinLeaseTTL || t > MaxLeaseTTL || t%time.Second != 0 {
		errs = append(errs, fmt.Errorf("store.lease_ttl: %s, want whole seconds from %s to %s", t, MinLeaseTTL, MaxLeaseTTL))
	}
	return errs
}

func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want http://host:port or https://host:port")
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return fmt.Errorf("want http://host:port or https://host:port: %v", err)
	}
	if u.Path != "" && u.Path != "/" {
		return errors.New("an etcd endpoint has no path")
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// Validate reports every problem of the section alone (for tools that
// take a [store] without the rest of the config).
func (s Store) Validate() error {
	if err := errors.Join(s.validate()...); err != nil {
		return fmt.Errorf("invalid store: %w", err)
	}
	return nil
}
