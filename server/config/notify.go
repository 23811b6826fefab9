package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/selector"
)

// Notify is one [[notify]]: a webhook told about rollout transitions.
//
//	[[notify]]
//	name = "ops"
//	url = "https://hooks.example.com/slipway"
//	secret_file = "/etc/slipway/notify-ops.secret"
//	events = ["rollout.halted", "rollout.reverted", "rollout.node.failed"]
//	targets = ["role=web,env=prod"]
//
// Notifications go through the server's durable outbox (server/notify).
type Notify struct {
	// Name identifies the webhook in the outbox and the API.
	Name string `toml:"name"`
	// URL is where notifications are POSTed (http or https). It is never
	// logged: a Slack URL is its credential.
	URL string `toml:"url"`
	// Format is "json" (default: a JSON object, signed) or "slack" ({"text":
	// …}, for Slack and compatible incoming webhooks).
	Format string `toml:"format"`
	// SecretFile holds the HMAC-SHA256 key of the Slipway-Signature
	// header (surrounding white space is ignored). Required for format
	// json; optional for slack.
	SecretFile string `toml:"secret_file"`
	// Events are the notification kinds wanted (default: all of them).
	Events []string `toml:"events"`
	// Targets are the target groups wanted, as release target selectors
	// (default: every group).
	Targets []string `toml:"targets"`
	// Timeout bounds one delivery attempt (default 10s; 1s to 5m).
	Timeout Duration `toml:"timeout"`
	// RetryMin is the wait after a first failed attempt, doubling after
	// each further one up to RetryMax (defaults 2s and 10m).
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
	// MaxAttempts is how many attempts before a notification is given up
	// (recorded as failed; default 30).
	MaxAttempts int `toml:"max_attempts"`
}

// Notify defaults.
const (
	DefaultNotifyTimeout     = 10 * time.Second
	DefaultNotifyRetryMin    = 2 * time.Second
	DefaultNotifyRetryMax    = 10 * time.Minute
	DefaultNotifyMaxAttempts = 30
)

// WithDefaults fills n's unset values.
func (n Notify) WithDefaults() Notify {
	if n.Format == "" {
		n.Format = "json"
	}
	if n.Timeout == 0 {
		n.Timeout = Duration(DefaultNotifyTimeout)
	}
	if n.RetryMin == 0 {
		n.RetryMin = Duration(DefaultNotifyRetryMin)
	}
	if n.RetryMax == 0 {
		n.RetryMax = Duration(DefaultNotifyRetryMax)
	}
	if n.MaxAttempts == 0 {
		n.MaxAttempts = DefaultNotifyMaxAttempts
	}
	return n
}

// Groups are n's targets as canonical selectors (as rollouts name their
// group); n must be valid.
func (n Notify) Groups() []string {
	out := make([]string, 0, len(n.Targets))
	for _, t := range n.Targets {
		sel, _ := selector.Parse(t)
		out = append(out, sel.String())
	}
	return out
}

// Secret reads n's secret file (nil without one).
func (n Notify) Secret() ([]byte, error) {
	if n.SecretFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(n.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("notify %q: secret_file: %w", n.Name, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return nil, fmt.Errorf("notify %q: secret_file %s: the secret is %d characters, want at least 16", n.Name, n.SecretFile, len(s))
	}
	return []byte(s), nil
}

func validateNotify(ns []Notify) []error {
	var errs []error
	seen := map[string]bool{}
	for i, n := range ns {
		n = n.WithDefaults()
		where := fmt.Sprintf("notify[%d]", i)
		if !nameRe.MatchString(n.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q, want 1-63 of [A-Za-z0-9._-], starting alphanumeric", where, n.Name))
		} else if seen[n.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q given twice", where, n.Name))
		}
		seen[n.Name] = true
		if u, err := url.Parse(n.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s.url: want an http:// or https:// URL", where)) // never echo it: it may be a credential
		}
		switch n.Format {
		case "json":
			if n.SecretFile == "" {
				errs = append(errs, fmt.Errorf("%s.secret_file: required with format \"json\": deliveries are signed (Slipway-Signature)", where))
			}
		case "slack":
		default:
			errs = append(errs, fmt.Errorf("%s.format: %q, want \"json\" or \"slack\"", where, n.Format))
		}
		if n.SecretFile != "" && !filepath.IsAbs(n.SecretFile) {
			errs = append(errs, fmt.Errorf("%s.secret_file: %q must be an absolute path", where, n.SecretFile))
		}
		for j, e := range n.Events {
			if !slices.Contains(api.NotifyKinds, e) {
				errs = append(errs, fmt.Errorf("%s.events[%d]: %q, want one of %s", where, j, e, strings.Join(api.NotifyKinds, ", ")))
			}
		}
		for j, t := range n.Targets {
			if _, err := selector.Parse(t); err != nil {
				errs = append(errs, fmt.Errorf("%s.targets[%d]: %v", where, j, err))
			}
		}
		errs = append(errs, validateNotifyTimes(where, n)...)
	}
	return errs
}

func validateNotifyTimes(where string, n Notify) []error {
	var errs []error
	if t := time.Duration(n.Timeout); t < time.Second || t > 5*time.Minute {
		errs = append(errs, fmt.Errorf("%s.timeout: %s, want 1s to 5m", where, t))
	}
	lo, hi := time.Duration(n.RetryMin), time.Duration(n.RetryMax)
	if lo < 10*time.Millisecond || hi < lo || hi > 24*time.Hour {
		errs = append(errs, fmt.Errorf("%s: retry_min %s and retry_max %s: want 10ms ≤ retry_min ≤ retry_max ≤ 24h", where, lo, hi))
	}
	if n.MaxAttempts < 1 || n.MaxAttempts > 1000 {
		errs = append(errs, fmt.Errorf("%s.max_attempts: %d, want 1 to 1000", where, n.MaxAttempts))
	}
	return errs
}
