package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/test/fleetsim"
)

// TestDeployAcrossServers measures deploy → every agent confirmed for
// SLIPWAY_HA_BENCH simulated agents (all-at-once), spread evenly over
// three servers on a three-member etcd, and the same fleet on one server
// with bbolt. It logs the figures and checks only that every deploy
// succeeded with every agent confirmed and none reverted.
func TestDeployAcrossServers(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLIPWAY_HA_BENCH"))
	if n <= 0 {
		t.Skip("SLIPWAY_HA_BENCH=N measures deploys of N simulated agents over 3 servers on etcd and over one on bbolt")
	}
	dir := t.TempDir()
	bin := buildServer(t, dir)
	bolt := &cluster{t: t, bin: bin, dir: filepath.Join(dir, "bolt")}
	bolt.startServerWith("")
	t.Logf("1 server on bbolt, %d agents: %s", n, measureDeploys(t, bolt.servers, n))

	c := &cluster{t: t, bin: bin, dir: filepath.Join(dir, "etcd")}
	c.etcd = etcdtest.StartCluster(t, 3, "--max-request-bytes", strconv.Itoa(16<<20))
	for range 3 {
		c.startServer()
	}
	t.Logf("3 servers on a 3-member etcd, %d agents: %s", n, measureDeploys(t, c.servers, n))
}

// measureDeploys spreads n agents over servers, deploys twice (all at
// once) through the first and returns the times to all confirmed.
func measureDeploys(t *testing.T, servers []*fleetsim.Server, n int) string {
	t.Helper()
	var fl fleets
	for i, s := range servers {
		k := n / len(servers)
		if i < n%len(servers) {
			k++
		}
		fl = append(fl, startFleet(t, s, fmt.Sprintf("s%d", i), k))
	}
	out := ""
	for d := range 2 {
		m := &generation.Manifest{Name: "ha", Units: map[string]string{"ha.service": fmt.Sprintf("[Service]\nExecStart=/bin/sleep %d\n", d)}}
		canon, err := m.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := m.ID()
		fl.expect(id)
		before := fl.counts()
		start := time.Now()
		rel, err := servers[0].Admin.CreateRelease(t.Context(), api.CreateReleaseRequest{Name: "ha", Target: "fleet=ha", Manifest: canon,
			Strategy: &api.Strategy{Kind: api.StrategyAllAtOnce}})
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		waitFor(t, 5*time.Minute, "every agent confirmed", func() error {
			if k, _ := fl.progress(id); k < n {
				return fmt.Errorf("%d of %d confirmed", k, n)
			}
			return nil
		})
		took := time.Since(start)
		var pulled time.Duration // when the last agent pulled the generation
		for _, f := range fl {
			for _, at := range f.Progress(id).Pulled {
				pulled = max(pulled, at.Sub(start))
			}
		}
		waitSucceeded(t, servers[0], rel.Rollout, 3*time.Minute)
		if _, rev := fl.progress(id); len(rev) > 0 {
			t.Errorf("%d reverts, first %+v", len(rev), rev[0])
		}
		e5, tooMany := fl.refusals(before)
		out += fmt.Sprintf(" deploy %d: all pulled in %s, all confirmed in %s (agents got %d 5xx, %d 429);",
			d+1, pulled.Round(10*time.Millisecond), took.Round(10*time.Millisecond), e5, tooMany)
	}
	for _, f := range fl {
		f.Stop()
	}
	return out
}

func (fs fleets) counts() []fleetsim.Counts {
	out := make([]fleetsim.Counts, len(fs))
	for i, f := range fs {
		out[i] = f.Stats().Snapshot()
	}
	return out
}

// refusals are the 5xx and 429 answers the agents got since before.
func (fs fleets) refusals(before []fleetsim.Counts) (e5, tooMany int) {
	for i, f := range fs {
		for _, rc := range f.Stats().Snapshot().Sub(before[i]) {
			e5 += rc.Errors5xx()
			tooMany += rc.TooMany
		}
	}
	return e5, tooMany
}
