// Package meshtest runs a real tailnet on loopback for tests: Tailscale's
// test control server plus DERP and STUN on 127.0.0.1, and tsnet nodes on
// it. Tests that use it must not call
// t.Parallel: the netns switch is process-wide. Never import it outside
// tests.
package meshtest

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"tailscale.com/envknob"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"

	"github.com/slipway-dev/slipway/shared/mesh"
)

// Control starts DERP+STUN and a test control server that lets nodes
// advertise tags (tags...; default mesh.DefaultAgentTag) and returns its URL.
// testcontrol has no ACL engine: every node reaches every other.
func Control(t *testing.T, tags ...string) string {
	t.Helper()
	if len(tags) == 0 {
		tags = []string{mesh.DefaultAgentTag}
	}
	netns.SetEnabled(false)
	t.Cleanup(func() { netns.SetEnabled(true) })
	envknob.SetenvForTest(t, "TS_DEBUG_OMIT_LOCAL_ADDRS", "true")
	derpMap := integration.RunDERPAndSTUN(t, logger.Discard, "127.0.0.1")
	owners := map[string][]string{}
	for _, tag := range tags {
		owners[tag] = nil
	}
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: "mesh.test",
		TagOwners:      owners,
	}
	control.HTTPTestServer = httptest.NewUnstartedServer(control)
	control.HTTPTestServer.Start()
	t.Cleanup(control.HTTPTestServer.Close)
	return control.HTTPTestServer.URL
}

// Node brings up an ephemeral in-memory node called name with tags and
// closes it when the test ends.
func Node(t *testing.T, ctx context.Context, controlURL, name string, tags ...string) *mesh.Node {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name) // before Cleanup(Close)
	n, err := mesh.Up(ctx, mesh.Config{Hostname: name, ControlURL: controlURL, StateDir: dir, Tags: tags, Ephemeral: true, Store: new(mem.Store)})
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
