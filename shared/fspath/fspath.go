// Package fspath answers questions about slash-separated paths as text.
// It never touches the file system.
package fspath

import "strings"

// Within reports whether path p is dir or lies under it. Both are taken
// as given (clean them first); a trailing slash on dir is ignored.
func Within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
