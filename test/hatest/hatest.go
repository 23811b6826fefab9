// Package hatest holds what the tests of several slipway-servers on one
// etcd share (test/ha with simulated agents, test/e2e with real nodes): the
// servers' [store] config, which server leads, and the check that a
// rollout published to every node exactly once.
package hatest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// StoreConfig is the [store] table of a server on the etcd members at
// endpoints, under prefix, with lease_ttl ttl.
func StoreConfig(endpoints []string, prefix string, ttl time.Duration) string {
	var eps []string
	for _, e := range endpoints {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	return fmt.Sprintf("\n[store]\nkind = \"etcd\"\nendpoints = [%s]\nprefix = %q\nlease_ttl = \"%s\"\ndial_timeout = \"2s\"\nrequest_timeout = \"2s\"\n",
		strings.Join(eps, ", "), prefix, ttl)
}

// Leader returns the index of the client whose server says it leads, or
// -1; nil clients (servers known dead) are skipped.
func Leader(ctx context.Context, clients []*api.Client) int {
	for i, c := range clients {
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := c.Ready(ctx)
		cancel()
		if err == nil && r.Leading {
			return i
		}
	}
	return -1
}

// ExpectOnce checks that rollout ro published to every one of n nodes
// exactly once: one rollout.publish event per node, no event of the
// rollout twice, and every node's publish time set.
func ExpectOnce(t testing.TB, c *api.Client, ro api.Rollout, n int) {
	t.Helper()
	var published []string
	for _, w := range ro.Waves {
		for _, nd := range w.Nodes {
			if !nd.PublishedAt.IsZero() {
				published = append(published, nd.Name)
			}
		}
	}
	seen, pubs := rolloutEvents(t, c, ro.ID)
	for ev, k := range seen {
		if k > 1 {
			t.Errorf("audit event %q of %s written %d times", ev, ro.ID, k)
		}
	}
	sort.Strings(pubs)
	sort.Strings(published)
	if !slices.Equal(pubs, published) || len(published) != n || len(slices.Compact(slices.Clone(pubs))) != n {
		t.Errorf("rollout %s: publish events for %v, published to %v; want each of %d nodes once", ro.ID, pubs, published, n)
	}
}

// rolloutEvents counts the rollout.* audit events of rollout id by action
// and detail, and lists the nodes its rollout.publish events name.
func rolloutEvents(t testing.TB, c *api.Client, id string) (map[string]int, []string) {
	t.Helper()
	var pubs []string
	seen := map[string]int{}
	var since int64
	for {
		evs, err := c.Events(context.Background(), since, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Target != id || !strings.HasPrefix(e.Action, "rollout.") {
				continue
			}
			seen[e.Action+" "+e.Detail]++
			if e.Action == "rollout.publish" {
				pubs = append(pubs, strings.Split(e.Detail, ", ")...)
			}
		}
		if len(evs) < 1000 {
			return seen, pubs
		}
		since = evs[len(evs)-1].Seq
	}
}
