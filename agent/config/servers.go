package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// Servers is the server key: one address (server = "http://a:7420") or a
// list of them (server = ["http://a:7420", "http://b:7420"]), tried in
// that order. nil: not set; an empty list given as [] is refused by
// Validate.
type Servers []string

// UnmarshalTOML reads a string or an array of strings.
func (s *Servers) UnmarshalTOML(v any) error {
	return (*tomlconfig.List)(s).UnmarshalTOML(v)
}

// ParseServers reads the --server flag: one address, or several separated
// by commas ("" = not set).
func ParseServers(flag string) Servers {
	if flag == "" {
		return nil
	}
	var out Servers
	for _, s := range strings.Split(flag, ",") {
		out = append(out, strings.TrimSpace(s))
	}
	return out
}

// key names entry i in errors: "server" for a single address, else
// "server[i]".
func (s Servers) key(i int) string {
	if len(s) == 1 {
		return "server"
	}
	return fmt.Sprintf("server[%d]", i)
}

// validate checks every address; a list given empty is an error, and so
// is an address given twice.
func (s Servers) validate() []error {
	if s != nil && len(s) == 0 {
		return []error{errors.New("server: an empty list; give at least one address (http(s)://host:port or unix:///path)")}
	}
	var errs []error
	seen := map[string]int{}
	for i, a := range s {
		if err := checkServer(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.key(i), err))
			continue
		}
		if j, dup := seen[strings.TrimSuffix(a, "/")]; dup {
			errs = append(errs, fmt.Errorf("%s: %q is already server[%d]", s.key(i), a, j))
		}
		seen[strings.TrimSuffix(a, "/")] = i
	}
	return errs
}
