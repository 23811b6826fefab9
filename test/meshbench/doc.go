// Package meshbench measures how long a publish takes to reach a fleet:
// from the admin's CreateRelease to every agent having pulled its new
// desired generation, for 10 and 100 agents, in the agent's three fetch
// modes: serf wake-ups ([gossip], the server's desired-changed events),
// interval polls without events, and long-polls ([gossip] off).
//
// Everything runs in one process, on loopback: the real slipway-server
// (server/daemon.Serve with a bbolt store, admin token and [gossip]), the
// real agent daemons (agent/daemon, agent/activate, agent/stage and
// agent/state on temporary state directories) with real HTTP to the
// server and real, encrypted serf members with serf's default LAN timers.
// Only systemd is faked (a recorder that keeps unit states). Not the
// tailnet: see test/tailnet for that.
//
// BenchmarkPublishToPulled writes test/reports/mesh-bench.md (make bench);
// a plain `go test` runs a small smoke test of the harness only. The
// package must never assert on timings: figures are measured and reported.
package meshbench
