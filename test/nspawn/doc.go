// Package nspawn is the end-to-end node harness: it boots real systemd nodes
// as systemd-nspawn containers on the test host, so that end-to-end tests (and
// `make demo`, through test/cmd/slipway-nodes) can run slipway-agent as a real
// systemd service that switches real units over D-Bus.
//
// A node is a minimal Debian bookworm root built once with debootstrap and
// cached (EnsureRoot), booted with --volatile=overlay so that every node
// writes only into its own tmpfs and the cached root stays pristine. Nodes
// are entered with nsenter(1) through their leader, the container's PID 1.
//
// The host this harness runs on does not have to run systemd: nodes are
// started with --register=no --keep-unit, so no host systemd bus or machined
// is needed. The harness requires root and the systemd-container package
// (and debootstrap for the first build of the root).
//
// What it must never do: touch the host's network or the host's files outside
// its own directories. With the default network ("private") a node has only
// a loopback interface of its own; "veth" lets systemd-nspawn create a
// host-side veth link (ve-…) that the harness never configures and that
// disappears with the node (HostVeth names it, so that a test can move it
// into a namespace of its own; NetCommand runs a host program such as ip(8)
// in the node's network namespace); "host" shares the host's network namespace and is
// meant for humans only. Files are written only under the cache directory
// (DefaultCacheDir), the run directory of detached nodes (DefaultRunDir), the
// console log a caller names (or one in os.TempDir), and, inside a node,
// through paths resolved within that node's root. Binds are read-write only
// when the caller asks for it. The only other host state it touches: the
// cgroups it gives every node (<its own cgroup>/slipway-nspawn/<name>, in
// the unified and the name=systemd hierarchies; see cgroup.go for why),
// removed when the node stops, and what systemd-nspawn itself keeps under
// /run/systemd/nspawn for a running node (the harness removes a node's
// empty propagation directory there if systemd-nspawn was killed before it
// could).
package nspawn
