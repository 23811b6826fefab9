package rollout_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// fixture is a store with enrolled nodes, for tests that open their own
// registries and machines over it (often through a store that records
// what they read).
type fixture struct {
	t   *testing.T
	st  store.Store
	reg *registry.Registry
	now time.Time
	ctx context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, _ := registrytest.Stores(t)
	f := &fixture{t: t, st: st, now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), ctx: context.Background()}
	f.reg = registry.New(st, noBlobs{}, f.config(), zerolog.Nop())
	return f
}

// config is the registries' configuration: f's clock, nodes offline after
// an hour.
func (f *fixture) config() registry.Config {
	return registry.Config{Now: func() time.Time { return f.now }, OfflineAfter: time.Hour}
}

// open returns a registry over st (f's store, or one wrapping it) and its
// rollout machine.
func (f *fixture) open(st store.Store) (*registry.Registry, *rollout.Machine) {
	reg := registry.New(st, noBlobs{}, f.config(), zerolog.Nop())
	return reg, rollout.New(reg, rollout.Config{}, zerolog.Nop())
}

func (f *fixture) enrol(name string, labels map[string]string) {
	f.t.Helper()
	jt, err := f.reg.CreateJoinToken(f.ctx, "token:test", 0, "")
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: name, JoinToken: jt.Token, Labels: labels}); err != nil {
		f.t.Fatal(err)
	}
}

type noBlobs struct{}

func (noBlobs) Has(string) (bool, int64, error) { return false, 0, nil }
