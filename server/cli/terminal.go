package cli

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
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
