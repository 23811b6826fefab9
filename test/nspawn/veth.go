package nspawn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// nodeVeth is the name systemd-nspawn gives the node's end of the veth
// pair (NetworkVeth).
const nodeVeth = "host0"

// NetCommand returns a command that runs argv — a program of the host, such
// as ip(8) — in the node's network namespace only (nsenter -n): it sees the
// node's links and addresses but the host's files. The node's own root need
// not have the program. Like Command, ctx ending kills it.
func (n *Node) NetCommand(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(n.Leader), "-n", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{nodePath}
	return cmd
}

// HostVeth returns the name of the host's end of the node's veth pair (a
// node booted with NetworkVeth), as the host's network namespace sees it:
// systemd-nspawn names it after the machine, shortened to fit a link name,
// so it is found by the peer index of the node's host0. Call it before
// moving that end into another namespace.
func (n *Node) HostVeth(ctx context.Context) (string, error) {
	out, err := n.NetCommand(ctx, "ip", "-o", "link", "show", nodeVeth).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("node %s: ip link show %s: %w: %s", n.Name, nodeVeth, err, strings.TrimSpace(string(out)))
	}
	idx, err := peerIndex(string(out))
	if err != nil {
		return "", fmt.Errorf("node %s: %w", n.Name, err)
	}
	ifc, err := net.InterfaceByIndex(idx)
	if err != nil {
		return "", fmt.Errorf("node %s: the host end of %s (index %d): %w", n.Name, nodeVeth, idx, err)
	}
	return ifc.Name, nil
}

// ErrNoVeth is returned by HostVeth for a node whose host0 has no peer
// (it was not booted with NetworkVeth).
var ErrNoVeth = errors.New("host0 is not a veth with a peer")

var peerRe = regexp.MustCompile(`^\d+:\s+` + nodeVeth + `@if(\d+):`)

// peerIndex parses the peer's link index out of `ip -o link show host0`
// ("2: host0@if7: <BROADCAST,…").
func peerIndex(line string) (int, error) {
	m := peerRe.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return 0, fmt.Errorf("%w: %q", ErrNoVeth, strings.TrimSpace(line))
	}
	return strconv.Atoi(m[1])
}
