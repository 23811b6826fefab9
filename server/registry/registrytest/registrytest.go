// Package registrytest opens a registry for tests of the packages above
// it: a bbolt store without fsync and a blob store in the test's
// temporary directory, closed when the test ends. It is for tests only.
package registrytest

import (
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store/boltstore"
)

// Stores opens a fresh bbolt store and blob store.
func Stores(t testing.TB) (*boltstore.Store, *blobstore.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blobstore.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return st, blobs
}

// Open returns a registry with cfg over fresh stores, and its blob store.
func Open(t testing.TB, cfg registry.Config) (*registry.Registry, *blobstore.Store) {
	t.Helper()
	st, blobs := Stores(t)
	return registry.New(st, blobs, cfg, zerolog.Nop()), blobs
}
