// Package ha tests several slipway-server processes on one etcd cluster:
// three etcd members and three servers on loopback, simulated agents
// (test/fleetsim) spread over the servers, the leader and etcd members
// killed mid-rollout. It only starts processes of its own and talks to
// them over loopback HTTP.
package ha
