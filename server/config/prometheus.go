package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/analysis"
)

// Prometheus is the [prometheus] section: the Prometheus server the
// analysis gates of releases ([[analysis]] in slipway.toml) query.
//
//	[prometheus]
//	url = "http://prometheus.internal:9090"
//	bearer_token_file = "/etc/slipway/prometheus.token"   # or username + password_file
//	timeout = "10s"
//
// Without a url, a release with analysis gates is refused at deploy.
type Prometheus struct {
	// URL is the base URL of the HTTP API (http or https; a path prefix
	// is kept, as behind a reverse proxy).
	URL string `toml:"url"`
	// BearerTokenFile holds a token sent as Authorization: Bearer
	// (surrounding white space is ignored).
	BearerTokenFile string `toml:"bearer_token_file"`
	// Username and PasswordFile are HTTP basic auth (exclusive with
	// bearer_token_file).
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// Timeout bounds one query (0: 10s; 1s to 5m).
	Timeout Duration `toml:"timeout"`
}

// Prometheus defaults and bounds.
const (
	DefaultPrometheusTimeout = 10 * time.Second
	MinPrometheusTimeout     = time.Second
	MaxPrometheusTimeout     = 5 * time.Minute
)

func (p Prometheus) validate() []error {
	var errs []error
	if p.URL == "" {
		if p.BearerTokenFile != "" || p.Username != "" || p.PasswordFile != "" {
			errs = append(errs, errors.New("prometheus: bearer_token_file, username and password_file need prometheus.url"))
		}
		return errs
	}
	if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("prometheus.url: want http(s)://host[:port][/prefix] (the URL is not shown: it may hold a secret)"))
	} else if u.User != nil || u.RawQuery != "" {
		errs = append(errs, errors.New("prometheus.url: no credentials or query in the URL (use username + password_file, or bearer_token_file)"))
	}
	if p.BearerTokenFile != "" && p.Username != "" {
		errs = append(errs, errors.New("prometheus: bearer_token_file and username are exclusive"))
	}
	if (p.Username == "") != (p.PasswordFile == "") {
		errs = append(errs, errors.New("prometheus: username and password_file go together (HTTP basic auth)"))
	}
	for key, v := range map[string]string{"bearer_token_file": p.BearerTokenFile, "password_file": p.PasswordFile} {
		if v != "" && !filepath.IsAbs(v) {
			errs = append(errs, fmt.Errorf("prometheus.%s: %q must be an absolute path", key, v))
		}
	}
	if t := time.Duration(p.Timeout); t != 0 && (t < MinPrometheusTimeout || t > MaxPrometheusTimeout) {
		errs = append(errs, fmt.Errorf("prometheus.timeout: %s, want %s to %s", t, MinPrometheusTimeout, MaxPrometheusTimeout))
	}
	return errs
}

// Client returns the client the analysis gates use, its secrets read
// from their files; nil when no url is set.
func (p Prometheus) Client() (*analysis.Prometheus, error) {
	if p.URL == "" {
		return nil, nil
	}
	c := &analysis.Prometheus{URL: p.URL, Username: p.Username, Timeout: time.Duration(p.Timeout)}
	if c.Timeout == 0 {
		c.Timeout = DefaultPrometheusTimeout
	}
	var err error
	if p.BearerTokenFile != "" {
		if c.BearerToken, err = readSecret("prometheus.bearer_token_file", p.BearerTokenFile); err != nil {
			return nil, err
		}
	}
	if p.PasswordFile != "" {
		if c.Password, err = readSecret("prometheus.password_file", p.PasswordFile); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func readSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", key, path)
	}
	return s, nil
}
