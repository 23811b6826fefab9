package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/humanize"
)

// stateOrder is the order of states in the status summary; unknown states
// follow, sorted.
var stateOrder = []string{
	api.NodeConverged, api.NodeSwitching, api.NodePending, api.NodeNew,
	api.NodeDrift, api.NodeFailed, api.NodeOffline,
}

// explained are the states status explains with a reason line.
func explained(state string) bool {
	return state == api.NodeFailed || state == api.NodeOffline || state == api.NodeDrift
}

// listNodes returns every node, sorted by name, never nil.
func (g *globals) listNodes(ctx context.Context) ([]api.Node, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, g.apiError("list nodes", err, "")
	}
	if nodes == nil {
		nodes = []api.Node{}
	}
	slices.SortFunc(nodes, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes, nil
}

// statusCmd is `slipway status`: it reports on failed, offline and drift
// nodes with the reason from their last report, fetching GET
// /v1/nodes/{name} for those whose report the node list leaves out.
func (g *globals) statusCmd() *cobra.Command {
	var failOnUnhealthy bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the fleet at a glance: desired and actual generation of every node, and why nodes are unhealthy",
		Long: `Show every node: its labels, the generation it should run (DESIRED), the one
it runs (ACTUAL, with the node's generation number), its state and when
the server last heard from it. Failed, offline and drifting nodes get a
line with the reason from their last report. With gossip on the server
([gossip]), LIVENESS shows each node's gossip member as the server sees it:
alive, suspect, failed or left, with since when (a hint; STATE rests on the
agents' reports).

status is a view: it exits 0 whatever the nodes' states, unless
--fail-on-unhealthy is given, which exits 1 when any node is not converged.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.status(cmd.Context(), failOnUnhealthy)
		},
	}
	c.Flags().BoolVar(&failOnUnhealthy, "fail-on-unhealthy", false, "exit 1 when any node is not converged")
	return c
}

// status is `slipway status` (see statusCmd).
func (g *globals) status(ctx context.Context, failOnUnhealthy bool) error {
	nodes, err := g.listNodes(ctx)
	if err != nil {
		return err
	}
	if err := g.fetchReports(ctx, nodes); err != nil {
		return err
	}
	if g.jsonOut {
		if err := g.writeJSON(nodes); err != nil {
			return err
		}
	} else if err := g.printStatus(g.stdout, nodes); err != nil {
		return err
	} else {
		g.printLeader(ctx)
	}
	if !failOnUnhealthy {
		return nil
	}
	bad := 0
	for _, n := range nodes {
		if n.State != api.NodeConverged {
			bad++
		}
	}
	if bad > 0 {
		return &ExitError{Code: ExitUnhealthy, Err: fmt.Errorf("%d of %d nodes are not converged", bad, len(nodes))}
	}
	return nil
}

// fetchReports replaces, in nodes, each node whose state wants explaining
// and whose report the list left out with the full node.
func (g *globals) fetchReports(ctx context.Context, nodes []api.Node) error {
	for i, n := range nodes {
		if !explained(n.State) || n.Report != nil {
			continue
		}
		full, err := g.api.Node(ctx, n.Name)
		switch {
		case err == nil:
			nodes[i] = full
		case !isNotFound(err): // a node removed meanwhile keeps its list entry
			return g.apiError("node "+n.Name, err, "")
		}
	}
	return nil
}

// printLeader says which server answered and which one leads (several
// servers on etcd elect one); nothing if /readyz does not say (an older
// server).
func (g *globals) printLeader(ctx context.Context) {
	r, err := g.api.Ready(ctx)
	if err != nil || r.Server == nil {
		return
	}
	switch {
	case r.Leading:
		fmt.Fprintf(g.stdout, "server: %s (%s), the leader\n", r.Server.Name, r.Server.Address)
	case r.Leader != nil:
		fmt.Fprintf(g.stdout, "server: %s (%s); leader: %s (%s)\n", r.Server.Name, r.Server.Address, r.Leader.Name, r.Leader.Address)
	default:
		fmt.Fprintf(g.stdout, "server: %s (%s); no leader at the moment (an election is under way): rollouts wait for one\n", r.Server.Name, r.Server.Address)
	}
}

func (g *globals) printStatus(w io.Writer, nodes []api.Node) error {
	if len(nodes) == 0 {
		fmt.Fprintln(w, "no nodes enrolled yet; `slipway token create` makes a join token for a new node")
		return nil
	}
	now := g.env.now()
	tw := newTable(w)
	gossip := anyLiveness(nodes)
	fmt.Fprint(tw, "NODE\tLABELS\tDESIRED\tACTUAL\tSTATE\tLAST SEEN")
	if gossip {
		fmt.Fprint(tw, "\tLIVENESS")
	}
	fmt.Fprintln(tw)
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s", n.Name, humanize.Labels(n.Labels), humanize.ShortID(n.Desired),
			generationString(n.ActualNumber, n.Actual), n.State, humanize.Ago(now, n.LastSeen))
		if gossip {
			fmt.Fprint(tw, "\t"+livenessString(n, now))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	var problems []api.Node
	for _, n := range nodes {
		if explained(n.State) {
			problems = append(problems, n)
		}
	}
	if len(problems) > 0 {
		fmt.Fprintln(w)
		tw = newTable(w)
		for _, n := range problems {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", n.Name, n.State, g.reason(n, now))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	printWarnings(w, nodes)
	fmt.Fprintln(w)
	fmt.Fprintln(w, summary(nodes))
	if slices.ContainsFunc(problems, func(n api.Node) bool { return n.State == api.NodeFailed }) {
		fmt.Fprintln(w, "details: `slipway node show NODE`; try a failed release again: `slipway retry NODE`; go back: `slipway rollback NODE`")
	}
	return nil
}

// anyLiveness reports whether the server knows the gossip liveness of any
// node: only then do the tables get a LIVENESS column.
func anyLiveness(nodes []api.Node) bool {
	return slices.ContainsFunc(nodes, func(n api.Node) bool { return n.Liveness != "" })
}

// livenessString is "alive", "failed 2m ago" or "-": since when, for
// anything but alive.
func livenessString(n api.Node, now time.Time) string {
	switch {
	case n.Liveness == "":
		return "-"
	case n.Liveness == api.LivenessAlive || n.LivenessSince.IsZero():
		return n.Liveness
	}
	return n.Liveness + " " + humanize.Ago(now, n.LivenessSince)
}

// reason explains why a failed, offline or drifting node is so.
func (g *globals) reason(n api.Node, now time.Time) string {
	var last string
	if n.Report != nil {
		last = n.Report.Reason
	}
	switch n.State {
	case api.NodeFailed:
		if last == "" {
			return "the agent reverted the desired generation (its report gives no reason)"
		}
		return last
	case api.NodeOffline:
		s := "last seen " + humanize.Ago(now, n.LastSeen)
		if !n.LastSeen.IsZero() {
			s += " (" + timeString(n.LastSeen, g.env.loc) + ")"
		}
		if last != "" {
			s += "; last report: " + last
		}
		return s
	case api.NodeDrift:
		s := fmt.Sprintf("runs %s, desired %s", generationString(n.ActualNumber, n.Actual), humanize.ShortID(n.Desired))
		if last != "" {
			s += "; last report: " + last
		}
		return s
	}
	return last
}

// summary is "3 nodes: 2 converged, 1 failed".
func summary(nodes []api.Node) string {
	counts := map[string]int{}
	for _, n := range nodes {
		counts[n.State]++
	}
	var parts []string
	for _, s := range stateOrder {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
			delete(counts, s)
		}
	}
	var other []string
	for s := range counts {
		other = append(other, s)
	}
	slices.Sort(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], orDash(s)))
	}
	noun := "nodes"
	if len(nodes) == 1 {
		noun = "node"
	}
	return fmt.Sprintf("%d %s: %s", len(nodes), noun, strings.Join(parts, ", "))
}

func (g *globals) nodesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the enrolled nodes with their labels, state and agent version (and gossip liveness, when the server has it)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nodes, err := g.listNodes(cmd.Context())
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.writeJSON(nodes)
			}
			if len(nodes) == 0 {
				fmt.Fprintln(g.stdout, "no nodes enrolled yet; `slipway token create` makes a join token for a new node")
				return nil
			}
			now := g.env.now()
			tw := newTable(g.stdout)
			gossip := anyLiveness(nodes)
			fmt.Fprint(tw, "NAME\tLABELS\tSTATE\tAGENT\tENROLLED")
			if gossip {
				fmt.Fprint(tw, "\tLIVENESS")
			}
			fmt.Fprintln(tw)
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", n.Name, humanize.Labels(n.Labels), n.State, orDash(n.AgentVersion), humanize.Ago(now, n.EnrolledAt))
				if gossip {
					fmt.Fprint(tw, "\t"+livenessString(n, now))
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
}

func (g *globals) nodeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "node",
		Short: "Inspect one node, or reset it for a new enrolment",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	c.AddCommand(&cobra.Command{
		Use:               "show NODE",
		Short:             "Show everything the server knows about a node, with its last report's units and generations",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := g.node(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.writeJSON(n)
			}
			return g.printNode(g.stdout, n)
		},
	})
	c.AddCommand(g.nodeResetCmd())
	return c
}

func (g *globals) node(ctx context.Context, name string) (api.Node, error) {
	c, err := g.client()
	if err != nil {
		return api.Node{}, err
	}
	n, err := c.Node(ctx, name)
	return n, g.apiError("node "+name, err, seeNodes)
}

func (g *globals) printNode(w io.Writer, n api.Node) error {
	now, loc := g.env.now(), g.env.loc
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return timeString(t, loc) + " (" + humanize.Ago(now, t) + ")"
	}
	tw := newTable(w)
	printNodeFields(tw, n, at)
	r := n.Report
	if r == nil {
		fmt.Fprintf(tw, "last report:\tnone yet\n")
		return tw.Flush()
	}
	printReportFields(tw, r, at)
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printUnits(w, r.Units); err != nil {
		return err
	}
	if rows := generationViews(r); len(rows) > 0 {
		fmt.Fprintln(w, "generations:")
		return printGenerations(w, rows, "  ")
	}
	return nil
}

// printNodeFields writes the node's own fields to tw, times with at.
func printNodeFields(tw io.Writer, n api.Node, at func(time.Time) string) {
	fmt.Fprintf(tw, "name:\t%s\n", n.Name)
	fmt.Fprintf(tw, "state:\t%s\n", n.State)
	fmt.Fprintf(tw, "labels:\t%s\n", humanize.Labels(n.Labels))
	fmt.Fprintf(tw, "agent:\t%s\n", orDash(n.AgentVersion))
	fmt.Fprintf(tw, "age recipient:\t%s\n", orDash(n.AgeRecipient))
	fmt.Fprintf(tw, "enrolled:\t%s\n", at(n.EnrolledAt))
	fmt.Fprintf(tw, "last seen:\t%s\n", at(n.LastSeen))
	if n.Liveness != "" {
		fmt.Fprintf(tw, "liveness:\t%s since %s\n", n.Liveness, at(n.LivenessSince))
	}
	desired := orDash(n.Desired)
	if n.DesiredFrom != "" {
		desired += " (release " + n.DesiredFrom + ")"
	}
	fmt.Fprintf(tw, "desired:\t%s\n", desired)
	actual := orDash(n.Actual)
	if n.ActualNumber > 0 {
		actual = fmt.Sprintf("generation %d, %s", n.ActualNumber, actual)
	}
	fmt.Fprintf(tw, "actual:\t%s\n", actual)
	fmt.Fprintf(tw, "confirmed:\t%s\n", orDash(n.Confirmed))
	if n.Retry > 0 {
		fmt.Fprintf(tw, "retries:\t%d\n", n.Retry)
	}
}

// printReportFields writes the fields of the node's last report to tw.
func printReportFields(tw io.Writer, r *api.Report, at func(time.Time) string) {
	fmt.Fprintf(tw, "last report:\t%s\n", at(r.Time))
	agent := r.State
	if r.Phase != "" {
		agent += ", phase " + r.Phase
	}
	if r.Target != "" {
		agent += ", switching to " + r.Target
	}
	fmt.Fprintf(tw, "  agent state:\t%s\n", agent)
	fmt.Fprintf(tw, "  current:\tgeneration %d, %s\n", r.Current, orDash(r.CurrentID))
	fmt.Fprintf(tw, "  last good:\tgeneration %d\n", r.LastGood)
	if r.Outcome != "" {
		// While a switch is under way, the outcome is the last attempt's
		// (an agent trying again after a passing failure).
		label := "outcome"
		if r.State == api.AgentSwitching {
			label = "last attempt"
		}
		fmt.Fprintf(tw, "  %s:\t%s\n", label, r.Outcome)
	}
	if r.Reason != "" {
		fmt.Fprintf(tw, "  reason:\t%s\n", r.Reason)
	}
	printReportWarnings(tw, r)
}

// printUnits prints the reported units by name; nothing if there are none.
func printUnits(w io.Writer, units []api.UnitReport) error {
	if len(units) == 0 {
		return nil
	}
	fmt.Fprintln(w, "units:")
	tw := newTable(w)
	fmt.Fprintln(tw, "  UNIT\tACTIVE\tSUB")
	units = slices.Clone(units)
	slices.SortFunc(units, func(a, b api.UnitReport) int { return strings.Compare(a.Name, b.Name) })
	for _, u := range units {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", u.Name, u.Active, orDash(u.Sub))
	}
	return tw.Flush()
}

// GenerationView is one row of `generations --json`: the generation as the
// node reported it, marked current and last good.
type GenerationView struct {
	api.GenerationReport
	Current  bool `json:"current"`
	LastGood bool `json:"last_good"`
}

// generationViews lists the generations of a report by number; never nil.
func generationViews(r *api.Report) []GenerationView {
	rows := []GenerationView{}
	if r == nil {
		return rows
	}
	for _, gen := range r.Generations {
		rows = append(rows, GenerationView{gen, gen.Number == r.Current, gen.Number == r.LastGood})
	}
	slices.SortFunc(rows, func(a, b GenerationView) int { return cmp.Compare(a.Number, b.Number) })
	return rows
}

func printGenerations(w io.Writer, rows []GenerationView, indent string) error {
	tw := newTable(w)
	for _, r := range rows {
		var marks []string
		if r.Current {
			marks = append(marks, "current")
		}
		if r.LastGood {
			marks = append(marks, "last good")
		}
		note := orDash(r.Status)
		if len(marks) > 0 {
			note += " (" + strings.Join(marks, ", ") + ")"
		}
		if r.Reason != "" {
			note += ": " + r.Reason
		}
		fmt.Fprintf(tw, "%s%4d\t%s\t%s\n", indent, r.Number, humanize.ShortID(r.ID), note)
	}
	return tw.Flush()
}

func (g *globals) generationsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "generations NODE",
		Short: "List a node's generations from its last report (like nix-env --list-generations), marking current and last good",
		Args:  exactArgs(1),
		Long: `List the generations NODE reported: number, short ID, status and, where
the agent gave one, the reason. The current generation and the last good
one (where a revert goes) are marked. ` + "`slipway rollback NODE --to N`" + ` sends the
node back to one of them.`,
		ValidArgsFunction: g.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := g.node(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rows := generationViews(n.Report)
			if g.jsonOut {
				return g.writeJSON(rows)
			}
			switch {
			case n.Report == nil:
				fmt.Fprintf(g.stdout, "node %s has not reported yet: no generations known\n", n.Name)
				return nil
			case len(rows) == 0:
				fmt.Fprintf(g.stdout, "node %s has no generations yet\n", n.Name)
				return nil
			}
			return printGenerations(g.stdout, rows, "")
		},
	}
}
