package registry_test

import (
	"context"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
)

// closeRegistry flushes the last-seen times the registry holds in memory,
// as the server does when it stops.
func closeRegistry(b *testing.B, reg *registry.Registry) {
	b.Helper()
	if err := reg.FlushSeen(context.Background()); err != nil {
		b.Fatal(err)
	}
}
