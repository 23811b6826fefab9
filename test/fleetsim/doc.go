// Package fleetsim simulates a fleet of slipway agents against a real
// slipway-server process, to measure how the server holds up at fleet
// scale (make bench-fleet; test/cmd/slipway-fleetsim).
//
// The server is a separate process started from a binary built from this
// tree, on loopback, with a temporary state directory and config. The
// simulated agents all live in one process and speak the agent protocol
// over real HTTP with the shared/api wire types: the request sequence of
// agent/daemon (enrol; long-poll the desired generation; a "switching"
// report; a confirm carrying the "confirm"-phase report, asked every second
// within the manifest's confirm_timeout, extended by overload answers as the real
// agent does; a "switched" report; a report every report interval; a new
// long-poll as soon as one ends). Nothing on a node is simulated beyond
// that: a switch takes a configured time and fails with a configured
// probability.
//
// Every figure this package reports is measured; it never asserts on one.
// It must never change the server: it only talks to it over HTTP and reads
// /proc.
package fleetsim
