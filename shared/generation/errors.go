package generation

import "errors"

// ErrInvalid is wrapped by every error Parse and Validate return for a
// malformed manifest, so callers can tell "this manifest is bad, reject it"
// from an I/O or transport failure with errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid manifest")

// ErrWorldAccess is wrapped by the *FieldError Validate returns for a file
// or artifact mode with the world-write bit (0o002), or a secret mode with
// the world-read or world-write bit (0o006), in a manifest that does not set
// allow_world_writable. A world-readable secret is a leak to every local
// user; a world-writable file lets any local user change what a unit runs
// or reads.
var ErrWorldAccess = errors.New("world access not allowed without allow_world_writable = true")

// FieldError is one problem with one field of a manifest.
//
// Field is a path into the manifest as an operator reads it:
// units["web.service"], files["a/b"].mode, artifacts[2].sha256,
// health.checks[0].interval, links[1].path. Indexes are positions in the
// manifest as given, not in its canonical (sorted) order.
type FieldError struct {
	Field  string
	Reason string
	// cause, when set, is a sentinel the error also matches (ErrWorldAccess).
	cause error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Is reports whether target is the error's specific sentinel
// (ErrWorldAccess), if it has one.
func (e *FieldError) Is(target error) bool { return e.cause != nil && target == e.cause }

// parseError is a Parse failure: it wraps both ErrInvalid and its cause
// (a *FieldError, a *json.SyntaxError, …).
type parseError struct{ err error }

func (e *parseError) Error() string   { return "parse manifest: " + e.err.Error() }
func (e *parseError) Unwrap() []error { return []error{ErrInvalid, e.err} }
