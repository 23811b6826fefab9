// Package config holds the agent's configuration: defaults, the TOML file
// (/etc/slipway/agent.toml), and validation. Unknown keys are errors.
//
// It never reads anything but the file it is given, and never logs values.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the agent looks for its config file.
const DefaultPath = "/etc/slipway/agent.toml"

// Agent is the agent's configuration.
type Agent struct {
	// StateDir holds state.db, generations/, store/ and `current`.
	StateDir string `toml:"state_dir"`
	// UnitDir is where the agent links the units it manages.
	UnitDir string `toml:"unit_dir"`
	// LinkPrefixes are the absolute directories a generation's links may
	// point into.
	LinkPrefixes []string `toml:"link_prefixes"`
	// KeepGenerations is how many generation directories GC keeps (besides
	// current and last good).
	KeepGenerations int `toml:"keep_generations"`
	// JobTimeout bounds one batch of systemd jobs in a switch.
	JobTimeout Duration `toml:"job_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// Default returns the defaults.
func Default() Agent {
	return Agent{
		StateDir:        "/var/lib/slipway",
		UnitDir:         "/etc/systemd/system",
		LinkPrefixes:    []string{"/etc"},
		KeepGenerations: 5,
		JobTimeout:      Duration(3 * time.Minute),
		LogLevel:        "info",
	}
}

// Load reads path over the defaults. A missing file at the default path is
// not an error (the defaults apply); a missing file named explicitly is.
func Load(path string, explicit bool) (Agent, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown key(s): %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}

// Validate reports every problem of c.
func (c Agent) Validate() error {
	var errs []error
	abs := func(name, p string) {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute, clean path", name, p))
		}
	}
	abs("state_dir", c.StateDir)
	abs("unit_dir", c.UnitDir)
	for i, p := range c.LinkPrefixes {
		abs(fmt.Sprintf("link_prefixes[%d]", i), p)
		if p == "/" {
			errs = append(errs, fmt.Errorf("link_prefixes[%d]: \"/\" would let a release link anywhere", i))
		}
	}
	if c.KeepGenerations < 1 {
		errs = append(errs, fmt.Errorf("keep_generations: %d, must be at least 1", c.KeepGenerations))
	}
	if c.JobTimeout <= 0 {
		errs = append(errs, fmt.Errorf("job_timeout: must be positive"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q, want debug, info, warn or error", c.LogLevel))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// Duration is a time.Duration read from a TOML string like "90s".
type Duration time.Duration

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q", b)
	}
	*d = Duration(v)
	return nil
}
