package cli

import (
	"context"
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"golang.org/x/term"
)

// terminal reports whether w is a terminal and its width in columns (0 when
// the platform does not say).
func terminal(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !isatty.IsTerminal(f.Fd()) {
		return false, 0
	}
	return true, terminalWidth(f)
}

// stdinTerminal returns r's descriptor when r is a terminal.
func stdinTerminal(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok || !isatty.IsTerminal(f.Fd()) {
		return 0, false
	}
	return int(f.Fd()), true
}

// readPassword reads a line from the terminal fd with echo off. When ctx
// ends first (Ctrl-C), it restores the terminal and returns ctx's error;
// the read it leaves behind ends with the process.
func readPassword(ctx context.Context, fd int) ([]byte, error) {
	st, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	type read struct {
		b   []byte
		err error
	}
	ch := make(chan read, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		ch <- read{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-ctx.Done():
		_ = term.Restore(fd, st)
		return nil, context.Cause(ctx)
	}
}
