package cmdexittest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// DuplicateKeys returns the keys that occur more than once in one object
// of the JSON text line (at any depth), walking its tokens: encoding/json
// would keep the last value silently.
func DuplicateKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var dups []string
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key := k.(string)
				if seen[key] {
					dups = append(dups, key)
				}
				seen[key] = true
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // }
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ]
			return err
		}
		return nil
	}
	if err := walk(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("text after the JSON value")
	}
	return dups, nil
}

// LogProblems checks every line of a JSON log (lines that do not start
// with "{", such as main's error line, are skipped) and returns one
// problem per line that is not JSON or repeats a key, and the number of
// JSON lines.
func LogProblems(log string) (problems []string, lines int) {
	for _, l := range strings.Split(log, "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		lines++
		dups, err := DuplicateKeys([]byte(l))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("not JSON (%v): %s", err, l))
		case len(dups) > 0:
			problems = append(problems, fmt.Sprintf("repeats %s: %s", strings.Join(dups, ", "), l))
		}
	}
	return problems, lines
}
