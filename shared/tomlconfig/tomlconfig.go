// Package tomlconfig reads the daemons' TOML configuration files strictly:
// unknown keys are errors that name them, and durations are Go duration
// strings ("90s"). It never logs or echoes values (a config may hold
// secrets).
package tomlconfig

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load decodes the file at path over dst (which holds the defaults). A
// missing file is not an error unless explicit (the operator named it).
func Load(path string, explicit bool, dst any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	md, err := toml.Decode(string(b), dst)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown key(s): %s", path, strings.Join(keys, ", "))
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

// MarshalText writes the duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ChangedKeys names the top-level TOML keys whose values differ between two
// configs of the same struct type (for reload logs: names, never values).
func ChangedKeys(a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || va.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("toml"), ",")
			keys = append(keys, name)
		}
	}
	return keys
}

// List is a key that takes one string or a list of strings
// (server = "a" or server = ["a", "b"]). nil: the key is not set; a list
// given as [] is empty but not nil, for the caller to refuse.
type List []string

// UnmarshalTOML reads a string or an array of strings.
func (l *List) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*l = List{v}
	case []any:
		out := make(List, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("entry %d: want a string, not %T", i, e)
			}
			out = append(out, s)
		}
		*l = out
	default:
		return fmt.Errorf("want a string or a list of strings, not %T", v)
	}
	return nil
}
