// Package selector parses and matches label selectors: "k=v,k2=v2" selects
// the nodes whose labels have every listed pair; the empty selector selects
// every node. It is outside input (CLI flags, slipway.toml, API bodies):
// Parse rejects anything malformed with an error naming the part.
package selector

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

var (
	keyRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
	valueRe = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
)

// Selector is a parsed label selector: every pair must match.
type Selector map[string]string

// MaxLen bounds a selector; a longer one is a mistake.
const MaxLen = 4096

// Hint explains the syntax, for error hints.
const Hint = "a target selector is key=value terms joined by commas, e.g. role=web,env=prod; every term must match; empty selects every node"

// Parse parses "k=v,k2=v2" (spaces around parts are ignored; an empty or
// all-space string is the empty selector).
func Parse(s string) (Selector, error) {
	sel := Selector{}
	if len(s) > MaxLen {
		return nil, fmt.Errorf("selector: %d bytes, longer than %d", len(s), MaxLen)
	}
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for i, raw := range strings.Split(s, ",") {
		part := strings.TrimSpace(raw)
		if part == "" {
			return nil, fmt.Errorf("selector %q: term %d is empty (a stray comma?)", s, i+1)
		}
		if strings.Contains(part, "!=") {
			return nil, fmt.Errorf("selector %q: term %d %q: only key=value terms are supported", s, i+1, part)
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("selector %q: term %d %q: want key=value", s, i+1, part)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if err := ValidLabel(k, v); err != nil {
			return nil, fmt.Errorf("selector %q: term %d: %w", s, i+1, err)
		}
		if old, dup := sel[k]; dup {
			if old == v {
				return nil, fmt.Errorf("selector %q: term %d: key %q is repeated", s, i+1, k)
			}
			return nil, fmt.Errorf("selector %q: term %d: key %q is also %q: no node can match both", s, i+1, k, old)
		}
		sel[k] = v
	}
	return sel, nil
}

// ValidLabel checks one label key and value.
func ValidLabel(k, v string) error {
	if !keyRe.MatchString(k) {
		return fmt.Errorf("label key %q: want 1-63 of [A-Za-z0-9._/-], starting alphanumeric", k)
	}
	if !valueRe.MatchString(v) {
		return fmt.Errorf("label %s value %q: want at most 63 of [A-Za-z0-9._-]", k, v)
	}
	return nil
}

// Matches reports whether labels satisfy the selector.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// String formats the selector canonically (sorted keys); it parses back to
// the same selector.
func (s Selector) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s[k]
	}
	return strings.Join(parts, ",")
}
