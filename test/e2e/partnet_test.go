package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/test/nspawn"
)

// partNet is the network of the partition tests: a network namespace the
// test creates, holding slipway-server (on partServer) and a bridge that
// the host ends of the nodes' veth links (nspawn.NetworkVeth) join. Nothing
// in it has a route anywhere else: no packet leaves the namespace and the
// nodes. Packet loss between the server and a node is made with nftables
// rules in the namespace (numgen random drop), per node and per direction:
// this machine's kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set),
// so `tc qdisc … netem` is not available; the rules drop packets the same
// way, without the delay netem could add.
type partNet struct {
	t    testing.TB
	name string // `ip netns` name

	mu   sync.Mutex
	loss map[string]loss // node address → its loss
}

// loss is the packet loss, in percent, of a node's traffic to the server
// (up) and from it (down).
type loss struct{ up, down int }

const (
	partSubnet = "10.77.0."
	partServer = partSubnet + "1"
	partListen = partServer + ":7420"
	partTable  = "slipway_fault"
)

// newPartNet creates the namespace with its bridge; it is deleted when the
// test ends (after the nodes and the server, which were started later).
func newPartNet(t testing.TB) *partNet {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft (Debian package nftables, test/install-deps.sh installs it): %v", err)
	}
	p := &partNet{t: t, name: nspawn.UniqueName("slipway-pt"), loss: map[string]loss{}}
	p.run("ip", "netns", "add", p.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", p.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", p.name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", partServer + "/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		p.run(append([]string{"ip", "-n", p.name}, args...)...)
	}
	p.apply()
	return p
}

func (p *partNet) run(argv ...string) {
	p.t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		p.t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// attach moves the host end of node n's veth into the namespace, onto the
// bridge, and gives the node's host0 the address partSubnet+host, which it
// returns.
func (p *partNet) attach(n *nspawn.Node, host int) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	veth, err := n.HostVeth(ctx)
	must(p.t, err)
	p.run("ip", "link", "set", "dev", veth, "netns", p.name)
	p.run("ip", "-n", p.name, "link", "set", "dev", veth, "master", "br0")
	p.run("ip", "-n", p.name, "link", "set", "dev", veth, "up")
	addr := fmt.Sprintf("%s%d", partSubnet, host)
	for _, args := range [][]string{
		{"ip", "addr", "add", addr + "/24", "dev", "host0"},
		{"ip", "link", "set", "dev", "host0", "up"},
		{"ip", "link", "set", "dev", "lo", "up"},
	} {
		if out, err := n.NetCommand(ctx, args...).CombinedOutput(); err != nil {
			p.t.Fatalf("node %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
		}
	}
	p.mu.Lock()
	p.loss[addr] = loss{}
	p.mu.Unlock()
	return addr
}

// reach opens tries TCP connections from node n to the server, giving
// each 500 ms, and returns how many were established: the proof that the
// rules drop what they should.
func (p *partNet) reach(n *nspawn.Node, tries int) int {
	p.t.Helper()
	script := fmt.Sprintf(`ok=0; i=0; while [ $i -lt %d ]; do i=$((i+1)); timeout 0.5 bash -c 'exec 3<>/dev/tcp/%s/%s' 2>/dev/null && ok=$((ok+1)); done; echo $ok`,
		tries, partServer, strings.TrimPrefix(partListen, partServer+":"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(tries)*time.Second+10*time.Second)
	defer cancel()
	out, err := n.NetCommand(ctx, "bash", "-c", script).CombinedOutput()
	if err != nil {
		p.t.Fatalf("node %s: probe the server: %v: %s", n.Name, err, out)
	}
	ok, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		p.t.Fatalf("node %s: probe the server: %q", n.Name, out)
	}
	return ok
}

// set sets the loss of addr's traffic and installs the whole rule set in
// one nft transaction.
func (p *partNet) set(addr string, l loss) {
	p.t.Helper()
	p.mu.Lock()
	p.loss[addr] = l
	p.mu.Unlock()
	p.apply()
}

func (p *partNet) cut(addr string)  { p.set(addr, loss{100, 100}) }
func (p *partNet) heal(addr string) { p.set(addr, loss{}) }

// healAll removes every loss.
func (p *partNet) healAll() {
	p.mu.Lock()
	for a := range p.loss {
		p.loss[a] = loss{}
	}
	p.mu.Unlock()
	p.apply()
}

func (p *partNet) apply() {
	p.t.Helper()
	p.mu.Lock()
	rules := nftRules(p.loss)
	p.mu.Unlock()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+p.name, "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("nft in %s: %v: %s\nrules:\n%s", p.name, err, out, rules)
	}
}

// nftRules is the nft script that replaces the fault table with one that
// drops the given share of each node's packets: input (to the server) by
// source address, output (from it) by destination.
func nftRules(losses map[string]loss) string {
	var b strings.Builder
	// Declaring the table first makes the delete succeed the first time.
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", partTable, partTable, partTable)
	addrs := slices.Sorted(keysOf(losses))
	for _, dir := range []struct{ chain, match string }{{"input", "saddr"}, {"output", "daddr"}} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority 0; policy accept;\n", dir.chain, dir.chain)
		for _, a := range addrs {
			pct := losses[a].up
			if dir.chain == "output" {
				pct = losses[a].down
			}
			switch {
			case pct >= 100:
				fmt.Fprintf(&b, "\t\tip %s %s drop\n", dir.match, a)
			case pct > 0:
				fmt.Fprintf(&b, "\t\tip %s %s numgen random mod 100 < %d drop\n", dir.match, a, pct)
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// TestNftRules: the rule set drops what set asked for and nothing else.
func TestNftRules(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]loss
		want []string // lines that must be there
		not  []string // substrings that must not
	}{
		{"none", map[string]loss{"10.77.0.10": {}}, []string{"chain input {", "chain output {"}, []string{"drop"}},
		{"cut", map[string]loss{"10.77.0.10": {100, 100}}, []string{"ip saddr 10.77.0.10 drop", "ip daddr 10.77.0.10 drop"}, []string{"numgen"}},
		{"asymmetric", map[string]loss{"10.77.0.10": {0, 60}, "10.77.0.11": {}},
			[]string{"ip daddr 10.77.0.10 numgen random mod 100 < 60 drop"}, []string{"saddr", "10.77.0.11"}},
		{"both 30", map[string]loss{"10.77.0.12": {30, 30}},
			[]string{"ip saddr 10.77.0.12 numgen random mod 100 < 30 drop", "ip daddr 10.77.0.12 numgen random mod 100 < 30 drop"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nftRules(tt.in)
			if !strings.HasPrefix(got, "table inet "+partTable+"\ndelete table inet "+partTable+"\n") {
				t.Errorf("the script does not replace the table:\n%s", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("unexpected %q in\n%s", n, got)
				}
			}
		})
	}
}
