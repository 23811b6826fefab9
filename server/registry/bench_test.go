package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
)

// The benchmarks run the registry over a real bbolt store on a temp dir.
// The fleet is built with fsync off (setup only), then the store is opened
// again with fsync on, as the server runs it, for the measured part.

// benchFleet enrols n nodes that report idle, runs setup over them with
// fsync off, and returns a registry over the same store with fsync on.
func benchFleet(b *testing.B, n int, setup func(reg *registry.Registry, names []string)) (*registry.Registry, []string) {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "store.db")
	st, err := boltstore.Open(path, boltstore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	reg := registry.New(st, noBlobs{}, registry.Config{}, zerolog.Nop())
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node-%05d", i)
		jt, err := reg.CreateJoinToken(ctx, "token:bench", 0, "")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := reg.Enroll(ctx, api.EnrollRequest{Name: names[i], JoinToken: jt.Token, Labels: map[string]string{"role": "web"}}); err != nil {
			b.Fatal(err)
		}
		if err := reg.Report(ctx, names[i], api.Report{State: api.AgentIdle, Time: time.Now().UTC()}); err != nil {
			b.Fatal(err)
		}
	}
	if setup != nil {
		setup(reg, names)
	}
	closeRegistry(b, reg)
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	st, err = boltstore.Open(path, boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return registry.New(st, noBlobs{}, registry.Config{}, zerolog.Nop()), names
}

// closeRegistry flushes the last-seen times the registry holds in memory,
// as the server does when it stops.
func closeRegistry(b *testing.B, reg *registry.Registry) {
	b.Helper()
	if err := reg.FlushSeen(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// publish deploys a manifest to every node (all at once) and returns its ID.
func benchPublish(b *testing.B, reg *registry.Registry, tag string) string {
	b.Helper()
	m, id := registrytest.UnitManifest(b, tag)
	if _, err := rollout.New(reg, rollout.Config{}, zerolog.Nop()).CreateRelease(context.Background(), "token:bench", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m,
		Strategy: &api.Strategy{Kind: api.StrategyAllAtOnce, NodeDeadline: "24h"}}); err != nil {
		b.Fatal(err)
	}
	return id
}

// BenchmarkReportRoutine: an idle node's periodic report that changes
// nothing but the time it was seen.
func BenchmarkReportRoutine(b *testing.B) {
	reg, names := benchFleet(b, 100, nil)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		name := names[i%len(names)]
		i++
		if err := reg.Report(ctx, name, api.Report{State: api.AgentIdle, Time: time.Now().UTC()}); err != nil {
			b.Fatal(err)
		}
	}
	closeRegistry(b, reg)
}

// BenchmarkReportRoutineHistory: the same with what a real agent sends:
// its current generation, its history and its units.
func BenchmarkReportRoutineHistory(b *testing.B) {
	var id string
	reg, names := benchFleet(b, 100, func(reg *registry.Registry, names []string) {
		id = benchPublish(b, reg, "v1")
	})
	ctx := context.Background()
	rep := func() api.Report {
		return api.Report{State: api.AgentIdle, Current: 1, CurrentID: id, LastGood: 1, Outcome: "switched",
			Generations: []api.GenerationReport{{Number: 1, ID: id, Status: "good"}},
			Units:       []api.UnitReport{{Name: "web.service", Active: "active", Sub: "running"}}, Time: time.Now().UTC()}
	}
	i := 0
	for b.Loop() {
		name := names[i%len(names)]
		i++
		if err := reg.Report(ctx, name, rep()); err != nil {
			b.Fatal(err)
		}
	}
	closeRegistry(b, reg)
}

// BenchmarkConfirmRepeated: a node confirming the generation it already
// confirmed (an agent retrying its confirm).
func BenchmarkConfirmRepeated(b *testing.B) {
	var id string
	reg, names := benchFleet(b, 100, func(reg *registry.Registry, names []string) {
		id = benchPublish(b, reg, "v1")
		for _, n := range names {
			if _, err := reg.Confirm(context.Background(), n, api.ConfirmRequest{ID: id, Number: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	ctx := context.Background()
	i := 0
	for b.Loop() {
		name := names[i%len(names)]
		i++
		if ok, err := reg.Confirm(ctx, name, api.ConfirmRequest{ID: id, Number: 1}); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
	closeRegistry(b, reg)
}

// BenchmarkRolloutStep10k: one step of an all-at-once rollout over 10,000
// nodes after one node confirmed the release and reported it runs it (the
// node's confirm and report are not timed).
func BenchmarkRolloutStep10k(b *testing.B) {
	var id string
	reg, names := benchFleet(b, 10000, func(reg *registry.Registry, names []string) {
		id = benchPublish(b, reg, "v1")
	})
	ctx := context.Background()
	ros := rollout.New(reg, rollout.Config{}, zerolog.Nop())
	if err := ros.Tick(ctx); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		if i >= len(names) {
			b.Fatal("more iterations than nodes: run with -benchtime=Nx, N < 10000")
		}
		name := names[i]
		i++
		if _, err := reg.Confirm(ctx, name, api.ConfirmRequest{ID: id, Number: 1}); err != nil {
			b.Fatal(err)
		}
		if err := reg.Report(ctx, name, api.Report{State: api.AgentIdle, Current: 1, CurrentID: id, LastGood: 1, Outcome: "switched",
			Generations: []api.GenerationReport{{Number: 1, ID: id, Status: "good"}}, Time: time.Now().UTC()}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := ros.Tick(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ro, err := ros.Rollouts(ctx)
	if err != nil {
		b.Fatal(err)
	}
	healthy := 0
	for _, n := range ro[0].Waves[0].Nodes {
		if n.State == api.RolloutNodeHealthy {
			healthy++
		}
	}
	if healthy != i {
		b.Fatalf("%d nodes healthy after %d confirmed", healthy, i)
	}
	closeRegistry(b, reg)
}
