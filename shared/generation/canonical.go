package generation

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/slipway-dev/slipway/shared/digest"
)

// Parse decodes a manifest strictly. It rejects input larger than
// MaxManifestBytes, invalid UTF-8, anything but one JSON object, trailing
// data, unknown fields, field names that differ from the declared ones only
// in case (encoding/json would accept them), duplicate keys, null where the
// field cannot be absent, non-integer or out-of-range numbers, and duration
// strings time.ParseDuration rejects (including overflow).
//
// Parse checks the shape only; call Validate for the rules. Every error
// wraps ErrInvalid and starts with "parse manifest: "; where a field is at
// fault it also wraps a *FieldError naming it.
func Parse(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, &parseError{fmt.Errorf("%d bytes, over the limit of %d", len(b), MaxManifestBytes)}
	}
	if !utf8.Valid(b) {
		return nil, &parseError{errors.New("invalid UTF-8")}
	}
	if err := checkShape(b); err != nil {
		return nil, &parseError{err}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, &parseError{err}
	}
	return &m, nil
}

// Canonical returns the canonical JSON encoding of m: keys sorted, no
// insignificant whitespace, no trailing newline, no HTML escaping, and the
// slices sorted by their key (artifacts and secrets by name, links by path,
// health checks by name; ties broken by the other fields, so the order is
// total). Nil and empty maps and slices encode alike. m is not modified.
//
// Parse(Canonical(m)) reproduces the same canonical bytes. Canonical fails,
// wrapping ErrInvalid, when the encoding exceeds MaxManifestBytes.
func (m *Manifest) Canonical() ([]byte, error) {
	if m == nil {
		return nil, errors.New("canonical manifest: nil manifest")
	}
	c := *m
	c.Artifacts = sortedClone(m.Artifacts, compareArtifacts)
	c.Secrets = sortedClone(m.Secrets, compareSecrets)
	c.Links = sortedClone(m.Links, compareLinks)
	c.Health.Checks = sortedClone(m.Health.Checks, compareChecks)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("canonical manifest: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("canonical manifest: %d bytes, over the limit of %d: %w", len(b), MaxManifestBytes, ErrInvalid)
	}
	return b, nil
}

// ID returns the generation's content address: "sha256-" followed by the
// lowercase hex sha256 of its canonical encoding.
func (m *Manifest) ID() (string, error) {
	b, err := m.Canonical()
	if err != nil {
		return "", err
	}
	return "sha256-" + digest.Hex(b), nil
}

// ParseMode parses a permission written as four octal digits with a leading
// zero, "0644" style. Set-id and sticky bits cannot be expressed.
func ParseMode(s string) (fs.FileMode, error) {
	if len(s) != 4 || s[0] != '0' {
		return 0, fmt.Errorf("invalid mode %q: want four octal digits like \"0644\"", s)
	}
	var mode fs.FileMode
	for _, c := range []byte(s[1:]) {
		if c < '0' || c > '7' {
			return 0, fmt.Errorf("invalid mode %q: want four octal digits like \"0644\"", s)
		}
		mode = mode<<3 | fs.FileMode(c-'0')
	}
	return mode, nil
}

func sortedClone[S ~[]E, E any](s S, cmp func(a, b E) int) S {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.SortFunc(s, cmp)
	return s
}

func compareArtifacts(a, b Artifact) int {
	return cmp.Or(
		strings.Compare(a.Name, b.Name),
		strings.Compare(a.SHA256, b.SHA256),
		cmp.Compare(a.Size, b.Size),
		strings.Compare(a.URL, b.URL),
		strings.Compare(a.Mode, b.Mode),
	)
}

func compareSecrets(a, b Secret) int {
	return cmp.Or(
		strings.Compare(a.Name, b.Name),
		strings.Compare(a.Ciphertext, b.Ciphertext),
		strings.Compare(a.Owner, b.Owner),
		strings.Compare(a.Group, b.Group),
		strings.Compare(a.Mode, b.Mode),
	)
}

func compareLinks(a, b Link) int {
	return cmp.Or(
		strings.Compare(a.Path, b.Path),
		strings.Compare(a.File, b.File),
		strings.Compare(a.Artifact, b.Artifact),
	)
}

func compareChecks(a, b Check) int {
	return cmp.Or(
		strings.Compare(a.Name, b.Name),
		strings.Compare(a.Kind, b.Kind),
		strings.Compare(a.Target, b.Target),
		slices.Compare(a.Command, b.Command),
		cmp.Compare(a.Interval, b.Interval),
		cmp.Compare(a.Timeout, b.Timeout),
		cmp.Compare(a.FailureThreshold, b.FailureThreshold),
		cmp.Compare(a.InitialDelay, b.InitialDelay),
	)
}

// checkShape walks the JSON tokens of b alongside the Go type Manifest and
// rejects what encoding/json would silently accept: duplicate keys (last
// one wins), field names matched case-insensitively ("NAME", "ſecrets"),
// null for a non-nilable field, and trailing data. It also reports type
// mismatches, bad integers and bad durations with the field's path.
func checkShape(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	s := shapeChecker{dec: dec}
	if err := s.value(reflect.TypeFor[Manifest](), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the manifest object")
	}
	return nil
}

type shapeChecker struct{ dec *json.Decoder }

var durationType = reflect.TypeFor[Duration]()

func (s shapeChecker) token() (json.Token, error) {
	tok, err := s.dec.Token()
	if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
		return nil, fmt.Errorf("at byte %d: %w", se.Offset, err)
	}
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return tok, err
}

func (s shapeChecker) value(t reflect.Type, path string) error {
	tok, err := s.token()
	if err != nil {
		return err
	}
	if path == "" && tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	if t == durationType {
		return checkDuration(tok, path)
	}
	if tok == nil {
		switch t.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice:
			return nil
		}
		return &FieldError{Field: path, Reason: "must not be null"}
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return &FieldError{Field: path, Reason: "must be a string"}
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return checkInt(tok, t, path)
	case reflect.Slice:
		if tok != json.Delim('[') {
			return &FieldError{Field: path, Reason: "must be an array"}
		}
		return s.array(t, path)
	case reflect.Map, reflect.Struct:
		if tok != json.Delim('{') {
			return &FieldError{Field: path, Reason: "must be an object"}
		}
		return s.object(t, path)
	default:
		// Manifest has no other kinds; a new field of another kind must
		// be taught here (the every-field test seed catches it).
		return &FieldError{Field: path, Reason: "unsupported type " + t.String()}
	}
}

// checkDuration checks that tok is a string time.ParseDuration accepts.
func checkDuration(tok json.Token, path string) error {
	str, ok := tok.(string)
	if !ok {
		return &FieldError{Field: path, Reason: `must be a duration string like "30s"`}
	}
	if _, err := time.ParseDuration(str); err != nil {
		return &FieldError{Field: path, Reason: fmt.Sprintf("invalid duration %q", str)}
	}
	return nil
}

// checkInt checks that tok is an integer that fits the integer type t.
func checkInt(tok json.Token, t reflect.Type, path string) error {
	n, ok := tok.(json.Number)
	if !ok {
		return &FieldError{Field: path, Reason: "must be an integer"}
	}
	if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
		return &FieldError{Field: path, Reason: fmt.Sprintf("must be an integer in range, not %s", n)}
	}
	return nil
}

// array checks the elements of the array whose '[' was just read, and
// reads its ']'.
func (s shapeChecker) array(t reflect.Type, path string) error {
	for i := 0; s.dec.More(); i++ {
		if err := s.value(t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
	}
	_, err := s.token() // ]
	return err
}

// object checks the keys and values of the object whose '{' was just read
// against the map or struct type t, and reads its '}'.
func (s shapeChecker) object(t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := make(map[string]bool)
	for s.dec.More() {
		tok, err := s.token()
		if err != nil {
			return err
		}
		k := tok.(string) // the decoder only yields strings as keys
		var kp string
		var vt reflect.Type
		if fields == nil {
			kp, vt = path+"["+strconv.Quote(k)+"]", t.Elem()
		} else {
			kp = k
			if path != "" {
				kp = path + "." + k
			}
			var ok bool
			if vt, ok = fields[k]; !ok {
				return &FieldError{Field: kp, Reason: "unknown field"}
			}
		}
		if seen[k] {
			return &FieldError{Field: kp, Reason: "duplicate key"}
		}
		seen[k] = true
		if err := s.value(vt, kp); err != nil {
			return err
		}
	}
	_, err := s.token() // }
	return err
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields maps the exact JSON names of struct type t to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	f := make(map[string]reflect.Type, t.NumField())
	for sf := range t.Fields() {
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		f[name] = sf.Type
	}
	fieldCache.Store(t, f)
	return f
}
