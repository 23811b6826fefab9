package release

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"filippo.io/age/armor"

	"github.com/slipway-dev/slipway/shared/humanize"
)

// ageMagic starts the header of every binary age file.
const ageMagic = "age-encryption.org/v1\n"

var errNotAge = errors.New("not an age file (want a binary or armored age file, as written by age or agenix)")

// armored returns the age file data in armored form: a binary age file is
// armored, an armored one is kept as is with its line endings normalised to
// "\n" and leading blank lines dropped. Anything else is errNotAge. The result is at most limit bytes long.
func armored(data []byte, limit int) (string, error) {
	if bytes.HasPrefix(data, []byte(ageMagic)) {
		var buf bytes.Buffer
		w := armor.NewWriter(&buf)
		if _, err := w.Write(data); err != nil {
			return "", err
		}
		if err := w.Close(); err != nil {
			return "", err
		}
		if buf.Len() > limit {
			return "", fmt.Errorf("armored, it is larger than %s", humanize.Limit(int64(limit)))
		}
		return buf.String(), nil
	}
	// Blank lines before the armor are insignificant; the manifest wants the
	// header first.
	text := bytes.TrimLeft(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), " \t\n")
	if !bytes.HasPrefix(text, []byte(armor.Header)) {
		return "", errNotAge
	}
	// Decode the armor to catch a truncated or damaged file here rather than
	// on the node, and check that it wraps an age file.
	dec, err := io.ReadAll(io.LimitReader(armor.NewReader(bytes.NewReader(text)), int64(limit)))
	if err != nil {
		return "", fmt.Errorf("damaged armored age file: %w", err)
	}
	if !bytes.HasPrefix(dec, []byte(ageMagic)) {
		return "", errors.New("armored data is not an age file")
	}
	return string(text), nil
}
