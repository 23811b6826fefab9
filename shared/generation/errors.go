package generation

import "errors"

// ErrInvalid is wrapped by every error Parse and Validate return for a
// malformed manifest, so callers can tell "this manifest is bad, reject it"
// from an I/O or transport failure with errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid manifest")

// FieldError is one problem with one field of a manifest.
//
// Field is a path into the manifest as an operator reads it:
// units["web.service"], files["a/b"].mode, artifacts[2].sha256,
// health.checks[0].interval, links[1].path. Indexes are positions in the
// manifest as given, not in its canonical (sorted) order.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// parseError is a Parse failure: it wraps both ErrInvalid and its cause
// (a *FieldError, a *json.SyntaxError, …).
type parseError struct{ err error }

func (e *parseError) Error() string   { return "parse manifest: " + e.err.Error() }
func (e *parseError) Unwrap() []error { return []error{ErrInvalid, e.err} }
