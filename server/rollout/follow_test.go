package rollout_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestFollowWritesOfAnotherServer: two registries on one store, as two
// servers on one etcd prefix. A confirm answered by the one that does not
// run the engine is looked at by the leader's next step only if the
// leader follows the store's writes (FollowWrites); its own writes are
// marked as they commit.
func TestFollowWritesOfAnotherServer(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(map[bool]string{false: "not following", true: "following"}[follow], func(t *testing.T) {
			f := newFixture(t)
			for _, n := range []string{"web-1", "web-2", "web-3"} {
				f.enrol(n, map[string]string{"role": "web"})
			}
			gets := &getLog{Store: f.st}
			leader, leaderM := f.open(gets)
			other, otherM := f.open(f.st)
			if follow {
				defer leader.FollowWrites()()
			}
			m, id := registrytest.UnitManifest(t, "v1")
			if _, err := otherM.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: m}); err != nil {
				t.Fatal(err)
			}
			must(t, leaderM.Tick(f.ctx)) // the first step: a full pass
			if _, err := other.Confirm(f.ctx, "web-2", api.ConfirmRequest{ID: id, Number: 1}); err != nil {
				t.Fatal(err)
			}
			gets.take()
			must(t, leaderM.Tick(f.ctx))
			var read []string
			for _, k := range gets.take() {
				if name, ok := strings.CutPrefix(k, "nodes/"); ok {
					read = append(read, name)
				}
			}
			want := []string(nil)
			if follow {
				want = []string{"web-2"}
			}
			if !slices.Equal(read, want) {
				t.Errorf("the leader's step after another server's confirm read the node records %q, want %q", read, want)
			}
		})
	}
}
