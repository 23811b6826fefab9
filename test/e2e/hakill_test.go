package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/hatest"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// haLeaseTTL is the servers' store.lease_ttl.
const haLeaseTTL = 2 * time.Second

// haServers are slipway-servers on one etcd; a nil entry is a killed one.
type haServers []*server

func (ss haServers) leader(ctx context.Context) int {
	clients := make([]*api.Client, len(ss))
	for i, s := range ss {
		if s != nil {
			clients[i] = s.client
		}
	}
	return hatest.Leader(ctx, clients)
}

// startHAServers starts three etcd members and three slipway-servers on
// them, each with its agent socket in its own directory, and waits until
// one leads.
func startHAServers(t *testing.T) haServers {
	t.Helper()
	store := hatest.StoreConfig(etcdtest.Endpoints(etcdtest.StartCluster(t, 3)), "/e2e-ha/", haLeaseTTL)
	var ss haServers
	for range 3 {
		ss = append(ss, startServerConf(t, t.TempDir(), freeAddr(t), "", time.Minute, store))
	}
	waitFor(t, 5*haLeaseTTL, "a server to lead", func() error {
		if l := ss.leader(t.Context()); l < 0 {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	return ss
}

// bootHAFleet boots nodes with every server's socket directory bound in
// (/run/slipway-server<i>) and starts their agents with all three servers
// listed, server first first; it returns the nodes and their names.
func bootHAFleet(t *testing.T, ss haServers, first int, releases string, names ...string) ([]*fleetNode, []string) {
	t.Helper()
	binds := []nspawn.Bind{{Host: binDir, Node: nodeBin, ReadOnly: true}}
	var urls []string
	for k := range ss {
		i := (first + k) % len(ss)
		node := fmt.Sprintf("/run/slipway-server%d", i)
		binds = append(binds, nspawn.Bind{Host: ss[i].sockDir, Node: node})
		urls = append(urls, "unix://"+node+"/agent.sock")
	}
	raw := nspawn.BootAllT(t, names, nspawn.Options{Binds: binds})
	var fleet []*fleetNode
	var got []string
	for _, n := range raw {
		fleet = append(fleet, startAgentAt(t, n, ss[0], releases, strings.Join(urls, ",")))
		got = append(got, n.Name)
	}
	ss[0].waitFleet(t, time.Minute, api.NodeNew, got)
	return fleet, got
}

// TestCanarySurvivesLeaderKill: three etcd members, three slipway-servers,
// three real systemd nodes whose agents list all three servers, the leader
// first. A canary rollout (1 canary, 5 s analysis, then the rest) runs; the
// leading server is SIGKILLed while the canary's wave is in its analysis.
// Another server leads, the agents fail over, the second wave starts after
// the kill, the rollout succeeds, and every node runs the new release
// without a revert and was published to exactly once.
func TestCanarySurvivesLeaderKill(t *testing.T) {
	if why := nspawn.Prerequisites(); why != "" && os.Getenv("SLIPWAY_E2E") != "1" {
		t.Skip(why) // before building etcd and starting servers for nothing
	}
	ss := startHAServers(t)
	lead := ss.leader(t.Context())
	releases := t.TempDir()
	// The agents talk to the leader first: its death makes them fail over too.
	fleet, names := bootHAFleet(t, ss, lead, releases, "hakill-a", "hakill-b", "hakill-c")
	w := &node{t: t, releases: releases}
	w.write("v1", rel{
		toml:  "name = \"app\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"20s\"\nconfirm_timeout = \"30s\"\n",
		units: map[string]string{"app.service": rolloutUnit("v1", ""), "keep.service": sleeper},
	})
	other := ss[(lead+1)%len(ss)]
	id := other.deployWith(t, filepath.Join(releases, "v1"), api.Strategy{Kind: api.StrategyCanary, Canary: 1, BatchSize: 2, Analysis: "5s"})

	var ro api.Rollout
	waitFor(t, 2*time.Minute, "the canary wave to analyse", func() error {
		var err error
		if ro, err = other.client.Rollout(t.Context(), id); err != nil {
			return err
		}
		if len(ro.Waves) == 0 || ro.Waves[0].State != api.WaveAnalysing {
			return fmt.Errorf("%s: %s", ro.State, waveSummary(ro))
		}
		return nil
	})
	killed := time.Now()
	ss[lead].stop() // SIGKILL
	ss[lead] = nil
	waitFor(t, 5*haLeaseTTL, "another server to lead", func() error {
		if l := ss.leader(t.Context()); l < 0 {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	t.Logf("REPORT leader %d SIGKILLed during the canary's analysis; server %d led %s later (lease TTL %s)",
		lead, ss.leader(t.Context()), time.Since(killed).Round(time.Millisecond), haLeaseTTL)

	ro = other.waitRollout(t, id, 2*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutAborted)
	t.Logf("REPORT leader killed → rollout %s %s after the kill: %s", ro.State, time.Since(killed).Round(time.Millisecond), waveSummary(ro))
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout %s (%s), want succeeded", ro.State, ro.Reason)
	}
	if len(ro.Waves) != 2 || !ro.Waves[1].StartedAt.After(killed) {
		t.Errorf("waves %s; want the second started by the new leader, after the kill", waveSummary(ro))
	}
	hatest.ExpectOnce(t, other.client, ro, len(names))
	for _, nd := range other.waitFleet(t, time.Minute, api.NodeConverged, names) {
		if nd.Desired != ro.Manifest || nd.Actual != ro.Manifest || nd.Confirmed != ro.Manifest {
			t.Errorf("%s: desired %s actual %s confirmed %s, want %s", nd.Name, nd.Desired, nd.Actual, nd.Confirmed, ro.Manifest)
		}
	}
	for _, n := range fleet {
		n.t = t
		if r, _ := n.statusJSON()["last_result"].(map[string]any); r == nil || r["outcome"] != "switched" {
			t.Errorf("%s: last result %v, want switched (no revert)", n.Name, r)
		}
		if logs := n.sh("journalctl -u slipway-agent.service --no-pager -o cat"); !strings.Contains(logs, "the server does not answer; using the next one") {
			t.Errorf("%s: no failover in the agent's log:\n%s", n.Name, tail(logs, 20))
		}
		n.expectActive("app.service", "keep.service")
		if d := n.sh("systemctl show -p Description --value app.service"); !strings.Contains(d, "rollout e2e v1") {
			t.Errorf("%s: app.service is %q, want the v1 unit", n.Name, strings.TrimSpace(d))
		}
	}
}
