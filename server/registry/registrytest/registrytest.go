// Package registrytest opens a registry for tests of the packages above
// it: a bbolt store without fsync and a blob store in the test's
// temporary directory, closed when the test ends. With
// SLIPWAY_TEST_STORE=etcd the store is an etcd store instead, on one real
// etcd for the test process (server/store/etcdstore/etcdtest), under a
// prefix of the test's own: the same suites then run on etcd. It is for
// tests only.
package registrytest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/blobstore"
	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/shared/generation"
)

// StoreEnv selects the store kind of Stores: "" or "bolt", or "etcd".
const StoreEnv = "SLIPWAY_TEST_STORE"

// Stores opens a fresh store (see StoreEnv) and blob store.
func Stores(t testing.TB) (store.Store, *blobstore.Store) {
	t.Helper()
	dir := t.TempDir()
	st := openStore(t, dir)
	t.Cleanup(func() { st.Close() })
	blobs, err := blobstore.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return st, blobs
}

func openStore(t testing.TB, dir string) store.Store {
	t.Helper()
	switch kind := os.Getenv(StoreEnv); kind {
	case "", "bolt":
		st, err := boltstore.Open(filepath.Join(dir, "store.db"), boltstore.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	case "etcd":
		b := make([]byte, 8)
		rand.Read(b)
		st, err := etcdstore.Open(t.Context(), etcdstore.Config{
			Endpoints:      []string{etcdtest.Shared(t).Endpoint},
			Prefix:         "/registrytest/" + hex.EncodeToString(b) + "/",
			RequestTimeout: 30 * time.Second,
			Log:            zerolog.Nop(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	default:
		t.Fatalf("%s=%q, want bolt or etcd", StoreEnv, kind)
		return nil
	}
}

// Open returns a registry with cfg over fresh stores, and its blob store.
func Open(t testing.TB, cfg registry.Config) (*registry.Registry, *blobstore.Store) {
	t.Helper()
	st, blobs := Stores(t)
	return registry.New(st, blobs, cfg, zerolog.Nop()), blobs
}

// UnitManifest returns the canonical JSON of a manifest with one unit,
// web.service, whose command names tag, and its ID: a release that
// differs by tag.
func UnitManifest(t testing.TB, tag string) ([]byte, string) {
	t.Helper()
	m := &generation.Manifest{Name: "web", Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web " + tag + "\n"}}
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := m.ID()
	return b, id
}
