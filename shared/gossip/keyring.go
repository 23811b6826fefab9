package gossip

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxKeyringBytes bounds a keyring file.
const maxKeyringBytes = 64 << 10

// ReadKeyring reads a keyring file, the format both daemons'
// gossip.keyring_file use: base64 AES keys (16, 24 or 32 bytes), one per
// line, the first encrypts; blank lines and lines starting with # are
// skipped. "" means no keyring (nil, nil). Create checks the keys
// themselves.
func ReadKeyring(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyringBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gossip keyring %s: %w", path, err)
	}
	if len(b) > maxKeyringBytes {
		return nil, fmt.Errorf("gossip keyring %s: longer than %d bytes", path, maxKeyringBytes)
	}
	var keys []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			keys = append(keys, l)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip keyring %s holds no key (want base64 keys of 16, 24 or 32 bytes, one per line; e.g. `head -c32 /dev/urandom | base64`)", path)
	}
	return keys, nil
}
