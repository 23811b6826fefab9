package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/gendiff"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/humanize"
)

// Kinds of NodeDiff.Change.
const (
	ChangeNone    = "none"    // the node's desired generation is the release's, or changes nothing
	ChangeNew     = "new"     // nothing deployed to the node yet: the release adds everything
	ChangeUpdate  = "update"  // Diff says what changes
	ChangeUnknown = "unknown" // the server no longer has the node's desired manifest
)

// NodeDiff is what a release would change on one node: an entry of
// `diff --json` and of `deploy --dry-run --json`.
type NodeDiff struct {
	Node string `json:"node"`
	// From is the node's desired manifest ID, compared with the release;
	// absent when nothing was deployed to it yet.
	From   string        `json:"from,omitempty"`
	Change string        `json:"change"` // none, new, update, unknown
	Diff   *gendiff.Diff `json:"diff,omitempty"`
}

// DiffReport is what `diff --json` prints.
type DiffReport struct {
	Name     string     `json:"name"`
	Manifest string     `json:"manifest_id"`
	Target   string     `json:"target"` // normalised; "" = every node
	Nodes    []NodeDiff `json:"nodes"`  // by node name
}

// diffCmd is `slipway diff DIR`: it compares with each target node's
// desired generation (what the server last published to it, GET
// /v1/manifests/{id}), not with what the agent runs; nodes with the same
// desired generation are shown as one group. A secret counts as changed
// when its ciphertext, owner, group or mode differs: re-encrypting an
// unchanged secret shows up.
func (g *globals) diffCmd() *cobra.Command {
	var target string
	c := &cobra.Command{
		Use:   "diff DIR",
		Short: "Show what deploying a release directory would change on each target node",
		Long: `Compare the release directory DIR with the generation each target node
should run now (its desired generation on the server), and show what
deploying it would change: units added, changed (their text, or an
artifact, file, link or secret they name, as the agent decides which units
to restart) and removed; files, artifacts, secrets (by name only: a
ciphertext is never shown), links, health checks and settings. Nodes with
the same desired generation are shown together.

The target is --target, else the target in slipway.toml, else every node.
diff changes nothing: it reads the nodes and their manifests from the
server.`,
		Example: `  slipway diff ./web-release
  slipway diff ./web-release --target role=web,env=staging`,
		Args: exactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.diff(cmd.Context(), args[0], target, cmd.Flags().Changed("target"))
		},
	}
	c.Flags().StringVar(&target, "target", "", `label selector "k=v,k2=v2" (overrides slipway.toml; "" = every node)`)
	return c
}

func (g *globals) diff(ctx context.Context, dir, target string, targetSet bool) error {
	lr, err := loadRelease(dir, target, targetSet)
	if err != nil {
		return err
	}
	nodes, err := g.listNodes(ctx)
	if err != nil {
		return err
	}
	var matching []api.Node
	for _, n := range nodes {
		if lr.sel.Matches(n.Labels) {
			matching = append(matching, n)
		}
	}
	diffs, err := g.nodeDiffs(ctx, g.api, lr.rel.Manifest, lr.id, matching)
	if err != nil {
		return err
	}
	report := DiffReport{Name: lr.rel.Name, Manifest: lr.id, Target: lr.sel.String(), Nodes: diffs}
	if g.jsonOut {
		return g.writeJSON(report)
	}
	w := g.stdout
	tw := newTable(w)
	printReleaseHead(tw, report.Name, report.Manifest, report.Target, lr.from)
	fmt.Fprintf(tw, "nodes:\t%d of %d match\n", len(matching), len(nodes))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(matching) == 0 {
		fmt.Fprintln(w, "no node matches the target: deploying changes nothing; `slipway nodes` lists the nodes and their labels")
		return nil
	}
	return printNodeDiffs(w, diffs)
}

// nodeDiffs compares the release's manifest `to` (ID toID) with the
// desired manifest of each node, fetching each desired manifest once.
func (g *globals) nodeDiffs(ctx context.Context, c *api.Client, to *generation.Manifest, toID string, nodes []api.Node) ([]NodeDiff, error) {
	type fetched struct {
		m       *generation.Manifest
		missing bool
	}
	cache := map[string]fetched{}
	out := []NodeDiff{}
	for _, n := range nodes {
		nd := NodeDiff{Node: n.Name, From: n.Desired}
		switch {
		case n.Desired == "":
			d := gendiff.Compare(nil, to)
			nd.Change, nd.Diff = ChangeNew, &d
		case n.Desired == toID:
			nd.Change = ChangeNone
		default:
			f, ok := cache[n.Desired]
			if !ok {
				raw, err := c.Manifest(ctx, n.Desired)
				switch {
				case errors.Is(err, api.ErrNotFound):
					f.missing = true
				case err != nil:
					return nil, g.apiError("manifest "+n.Desired+" (desired by node "+n.Name+")", err, "")
				default:
					m, err := generation.Parse(raw)
					if err != nil {
						return nil, fmt.Errorf("manifest %s (desired by node %s): %w", n.Desired, n.Name, err)
					}
					f.m = m
				}
				cache[n.Desired] = f
			}
			if f.missing {
				nd.Change = ChangeUnknown
				break
			}
			d := gendiff.Compare(f.m, to)
			if d.Empty() {
				nd.Change = ChangeNone
			} else {
				nd.Change, nd.Diff = ChangeUpdate, &d
			}
		}
		out = append(out, nd)
	}
	return out, nil
}

// printNodeDiffs prints diffs, nodes with the same desired manifest
// together, in the order of their first node.
func printNodeDiffs(w io.Writer, diffs []NodeDiff) error {
	type group struct {
		nodes []string
		d     NodeDiff
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, d := range diffs {
		key := d.Change + " " + d.From
		gr := byKey[key]
		if gr == nil {
			gr = &group{d: d}
			byKey[key] = gr
			groups = append(groups, gr)
		}
		gr.nodes = append(gr.nodes, d.Node)
	}
	var b strings.Builder
	for _, gr := range groups {
		names := strings.Join(gr.nodes, ", ")
		switch gr.d.Change {
		case ChangeNone:
			fmt.Fprintf(&b, "%s: no change\n", names)
		case ChangeUnknown:
			fmt.Fprintf(&b, "%s (desired %s): the server no longer has that manifest; cannot compare\n", names, humanize.ShortID(gr.d.From))
		case ChangeNew:
			fmt.Fprintf(&b, "%s: nothing deployed yet; the release adds:\n", names)
			writeDiff(&b, *gr.d.Diff)
		default:
			fmt.Fprintf(&b, "%s (desired %s):\n", names, humanize.ShortID(gr.d.From))
			writeDiff(&b, *gr.d.Diff)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeDiff writes one line per change: "  ~ unit web.service: text".
func writeDiff(b *strings.Builder, d gendiff.Diff) {
	for _, l := range d.Lines() {
		b.WriteString("  " + l + "\n")
	}
}
