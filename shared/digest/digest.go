// Package digest is the one place that writes a sha256 as lowercase hex:
// content addresses, token hashes, change fingerprints.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
)

// Hex is the lowercase hex sha256 of b (64 digits).
func Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
