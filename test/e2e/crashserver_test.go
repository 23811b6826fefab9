package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/seal"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// TestCrashPointsThroughServer: the crash point `apply` cannot reach —
// confirm, the daemon's wait for the server's confirm — on a node whose
// agent runs as a systemd service of a real slipway-server. Killed there,
// systemd restarts the agent, whose start-up recover reverts; then the
// node runs the old release, the new one is quarantined, and the server
// sees the node failed, running the old generation.
func TestCrashPointsThroughServer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootAllT(t, []string{"crashsrv"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: releases, Node: nodeReleases, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	a := startAgent(t, raw[0], s, releases)
	nodes := s.waitFleet(t, time.Minute, api.NodeNew, []string{a.Name})
	rcpt, err := seal.ParseRecipient(nodes[0].AgeRecipient)
	must(t, err)
	c := &crashNode{node: a.node}
	c.old, c.new, _, _ = crashReleases()
	cache := map[string][]byte{}
	c.writeCrashRelease(c.old, rcpt, cache)
	c.writeCrashRelease(c.new, rcpt, cache)
	allAtOnce := api.Strategy{Kind: "all-at-once"}

	s.waitRollout(t, s.deployWith(t, filepath.Join(releases, c.old.name), allAtOnce), 2*time.Minute, api.RolloutSucceeded)
	oldID := c.statusJSON()["current"].(map[string]any)["id"]

	c.sh(`mkdir -p /etc/systemd/system/slipway-agent.service.d && printf '[Service]\nEnvironment=` + activate.CrashEnv + `=` + activate.CrashConfirm + `\n' > /etc/systemd/system/slipway-agent.service.d/crash.conf && systemctl daemon-reload && systemctl restart slipway-agent.service`)
	s.waitRollout(t, s.deployWith(t, filepath.Join(releases, c.new.name), allAtOnce), 3*time.Minute, api.RolloutFailed, api.RolloutReverted)
	journal := c.sh("journalctl --no-pager -o cat -u slipway-agent.service")
	if !strings.Contains(journal, activate.CrashEnv+" reached") {
		t.Fatalf("the agent was not killed at %s:\n%s", activate.CrashConfirm, tail(journal, 30))
	}
	var node api.Node
	waitFor(t, time.Minute, "the server to see the node failed on the old generation", func() error {
		ns, err := s.client.Nodes(context.Background())
		if err != nil || len(ns) != 1 {
			return fmt.Errorf("nodes %v: %v", ns, err)
		}
		node = ns[0]
		if node.State != api.NodeFailed || node.Actual != oldID {
			return fmt.Errorf("node %s, actual %s (old %s)", node.State, node.Actual, oldID)
		}
		return nil
	})
	if !strings.Contains(journal, `"outcome":"reverted"`) {
		t.Errorf("the restarted agent did not say it reverted:\n%s", tail(journal, 30))
	}
	c.expectRuns(c.old, 1)
	if got := c.statusJSON()["current"].(map[string]any)["number"]; fmt.Sprint(got) != fmt.Sprint(node.ActualNumber) {
		t.Errorf("the node runs generation %v, the server says %d", got, node.ActualNumber)
	}
}
