package release

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// configName is the release description inside a release directory.
const configName = "slipway.toml"

// maxConfigBytes bounds slipway.toml; a description larger than this is a
// mistake, not a release.
const maxConfigBytes = 1 << 20

// config mirrors slipway.toml. Every key slipway.toml may hold is a field
// here: checkKeys rejects any other key by comparing the decoded keys with
// these toml tags, exactly (the decoder alone would accept unknown keys and
// match keys case-insensitively).
type config struct {
	Name           string   `toml:"name"`
	Target         string   `toml:"target"`
	ConfirmTimeout duration `toml:"confirm_timeout"`
	// AllowWorldWritable lets file modes carry the world-write bit and
	// secret modes the world-read or -write bit (refused otherwise).
	AllowWorldWritable bool             `toml:"allow_world_writable"`
	Strategy           strategyConfig   `toml:"strategy"`
	Health             healthConfig     `toml:"health"`
	Artifacts          []artifactConfig `toml:"artifact"`
	Files              []fileConfig     `toml:"file"`
	Secrets            []secretConfig   `toml:"secret"`
	Links              []linkConfig     `toml:"link"`
	NixOS              *nixosConfig     `toml:"nixos"`
	Analysis           []analysisConfig `toml:"analysis"`
}

// analysisConfig is one [[analysis]] gate.
type analysisConfig struct {
	Name                  string   `toml:"name"`
	Query                 string   `toml:"query"`
	Condition             string   `toml:"condition"`
	Scope                 string   `toml:"scope"`
	Aggregate             string   `toml:"aggregate"`
	Interval              duration `toml:"interval"`
	Count                 int      `toml:"count"`
	FailureLimit          int      `toml:"failure_limit"`
	ConsecutiveErrorLimit *int     `toml:"consecutive_error_limit"`
}

type strategyConfig struct {
	Kind           string   `toml:"kind"`
	Canary         *int     `toml:"canary"`
	CanaryPercent  *int     `toml:"canary_percent"`
	BatchSize      int      `toml:"batch_size"`
	MaxParallel    int      `toml:"max_parallel"`
	MaxUnavailable int      `toml:"max_unavailable"`
	MaxFailures    int      `toml:"max_failures"`
	Stagger        duration `toml:"stagger"`
	Analysis       duration `toml:"analysis"`
	NodeDeadline   duration `toml:"node_deadline"`
	AutoRevert     bool     `toml:"auto_revert"`
	OnNodeDown     string   `toml:"on_node_down"`
	Windows        []string `toml:"windows"`
}

type healthConfig struct {
	MinHealthyTime  duration      `toml:"min_healthy_time"`
	HealthyDeadline duration      `toml:"healthy_deadline"`
	ConfirmTimeout  duration      `toml:"confirm_timeout"`
	Checks          []checkConfig `toml:"check"`
}

type checkConfig struct {
	Name             string   `toml:"name"`
	HTTP             string   `toml:"http"`
	TCP              string   `toml:"tcp"`
	Exec             []string `toml:"exec"`
	Unit             string   `toml:"unit"`
	Interval         duration `toml:"interval"`
	Timeout          duration `toml:"timeout"`
	FailureThreshold int      `toml:"failure_threshold"`
	InitialDelay     duration `toml:"initial_delay"`
}

type artifactConfig struct {
	Name   string `toml:"name"`
	Path   string `toml:"path"`
	URL    string `toml:"url"`
	SHA256 string `toml:"sha256"`
	Size   *int64 `toml:"size"`
	Mode   string `toml:"mode"`
}

type fileConfig struct {
	Path string `toml:"path"`
	Mode string `toml:"mode"`
}

type secretConfig struct {
	Name  string `toml:"name"`
	File  string `toml:"file"`
	Owner string `toml:"owner"`
	Group string `toml:"group"`
	Mode  string `toml:"mode"`
}

type linkConfig struct {
	Path     string `toml:"path"`
	File     string `toml:"file"`
	Artifact string `toml:"artifact"`
}

type nixosConfig struct {
	Toplevel          string   `toml:"toplevel"`
	Substituters      []string `toml:"substituters"`
	TrustedPublicKeys []string `toml:"trusted_public_keys"`
}

// duration is a non-negative Go duration string in slipway.toml ("30s").
// Decoding it through UnmarshalText lets the TOML decoder report the line
// and key of a bad value.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a duration such as \"30s\" or \"2m\")", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = duration(v)
	return nil
}

// configError is a slipway.toml decoding error. Its text names the file
// and the line or key; Unwrap gives the decoder's error (a toml.ParseError
// for syntax errors).
type configError struct {
	msg string
	err error
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return e.err }

// decodeConfig decodes slipway.toml strictly: syntax errors carry the line,
// a value of the wrong type or form names its key, and every key that
// config does not declare is an error naming the key.
func decodeConfig(data []byte) (*config, toml.MetaData, error) {
	// Parse on its own first, so that syntax errors, whose lines are exact,
	// are told apart from errors in values.
	if _, err := toml.Decode(string(data), &map[string]any{}); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, toml.MetaData{}, &configError{
				msg: fmt.Sprintf("%s: line %d: %s", configName, pe.Position.Line, pe.Message),
				err: err,
			}
		}
		return nil, toml.MetaData{}, &configError{msg: configName + ": " + strings.TrimPrefix(err.Error(), "toml: "), err: err}
	}
	var c config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return nil, md, &configError{msg: configName + ": " + valueError(err), err: err}
	}
	if err := checkKeys(md, reflect.TypeFor[config]()); err != nil {
		return nil, md, err
	}
	return &c, md, nil
}

// libraryKeyError matches the errors the TOML decoder formats itself for a
// value that does not fit its field.
var libraryKeyError = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): `)

// valueError describes an error decoding a value: "line N: key: reason".
// The decoder knows one line per key path, the last one defined, so for a
// key inside an array of tables ([[artifact]]) the line is left out rather
// than risk naming another entry's line.
func valueError(err error) string {
	var key, msg string
	line := 0
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key, msg, line = pe.LastKey, pe.Message, pe.Position.Line
	} else if m := libraryKeyError.FindStringSubmatch(err.Error()); m != nil {
		key, _ = strconv.Unquote(m[2])
		msg = err.Error()[len(m[0]):]
		line, _ = strconv.Atoi(m[1])
	} else {
		return strings.TrimPrefix(err.Error(), "toml: ")
	}
	switch {
	case key == "":
		return msg
	case line == 0 || inArrayTable(reflect.TypeFor[config](), strings.Split(key, ".")):
		return fmt.Sprintf("%s: %s", key, msg)
	}
	return fmt.Sprintf("line %d: %s: %s", line, key, msg)
}

// inArrayTable reports whether the key path k lies inside an array of
// tables of t (its own value excluded).
func inArrayTable(t reflect.Type, k []string) bool {
	for _, piece := range k {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Slice:
			return true
		case reflect.Struct:
		default:
			return false
		}
		f, ok := fieldByTag(t, piece)
		if !ok {
			return false
		}
		t = f.Type
	}
	return false
}

// checkKeys returns an error for every key in md that t's toml tags do not
// declare, with exactly that spelling. Keys below an unknown key are not
// reported again.
func checkKeys(md toml.MetaData, t reflect.Type) error {
	var errs []error
	var reported []toml.Key
keys:
	for _, k := range md.Keys() {
		for _, r := range reported {
			if len(k) > len(r) && slices.Equal(k[:len(r)], r) {
				continue keys
			}
		}
		if !knownKey(t, k) {
			reported = append(reported, k)
			errs = append(errs, fmt.Errorf("%s: unknown key %q", configName, k.String()))
		}
	}
	return errors.Join(errs...)
}

// knownKey reports whether the key path k names a field of t, through
// nested structs, pointers and slices (arrays of tables).
func knownKey(t reflect.Type, k toml.Key) bool {
	for _, piece := range k {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		f, ok := fieldByTag(t, piece)
		if !ok {
			return false
		}
		t = f.Type
	}
	return true
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == tag {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
