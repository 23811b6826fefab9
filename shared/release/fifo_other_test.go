//go:build !unix

package release

import "errors"

func mkfifo(string) error { return errors.New("no fifos on this system") }
