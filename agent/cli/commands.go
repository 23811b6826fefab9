package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/release"
)

func (g *globals) applyCmd() *cobra.Command {
	var retry bool
	c := &cobra.Command{
		Use:   "apply DIR",
		Short: "Switch this node to a release directory (no server): stage, switch, verify, revert on failure",
		Long: `Switch this node to the release directory DIR without a server.

The release is loaded and validated in full, the switch planned and checked
(the agent never overwrites unit files it does not own) before anything on
the node changes. Then the generation is staged, ` + "`current`" + ` flipped, units
stopped/restarted/started, and health verified. On any failure the node
reverts to its last good generation and the failed one is quarantined.

Exit status: 0 switched (or already current), 1 rejected before any change,
3 failed and reverted, 4 failed and the revert failed too.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := release.Load(args[0])
			if err != nil {
				return err
			}
			p, done, err := g.build(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer done()
			abs, _ := filepath.Abs(args[0])
			o, err := p.switcher.Apply(cmd.Context(), rel.Manifest, activate.ApplyOptions{
				Source:           "apply " + abs,
				Blobs:            &dirBlobs{paths: rel.Blobs, client: &http.Client{Timeout: 10 * time.Minute}},
				RetryQuarantined: retry,
			})
			return g.finish(o, err, printOutcome)
		},
	}
	c.Flags().BoolVar(&retry, "retry-quarantined", false, "retry a release that failed and was quarantined on this node")
	return c
}

func (g *globals) rollbackCmd() *cobra.Command {
	var to int
	c := &cobra.Command{
		Use:   "rollback",
		Short: "Switch back to the previous good generation (or --to N), verifying it like any switch",
		Args:  cobra.NoArgs,
		RunE: g.withParts(true, func(cmd *cobra.Command, p *parts) error {
			o, err := p.switcher.Rollback(cmd.Context(), to)
			return g.finish(o, err, func(w io.Writer, o activate.Outcome) {
				if o.Outcome == "switched" {
					fmt.Fprintf(w, "rolled back to generation %d (%s) in %s\n", o.To, short(o.ID), o.Duration.Round(time.Millisecond))
					printPlan(w, o.Plan)
					return
				}
				printOutcome(w, o)
			})
		}),
	}
	c.Flags().IntVar(&to, "to", 0, "generation number to switch to (default: the newest good one before the current)")
	return c
}

func (g *globals) recoverCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "recover",
		Short: "Revert a switch interrupted by a crash (run at agent start; apply and rollback do it first too)",
		Args:  cobra.NoArgs,
		RunE: g.withParts(true, func(cmd *cobra.Command, p *parts) error {
			o, err := p.switcher.Recover(cmd.Context())
			return g.finish(o, err, printOutcome)
		}),
	}
}

func (g *globals) gcCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove old generations (keeping current, last good and keep_generations more good ones; failed ones never count) and unreferenced blobs",
		Args:  cobra.NoArgs,
		RunE: g.withParts(true, func(cmd *cobra.Command, p *parts) error {
			st, err := p.switcher.GC()
			if err != nil {
				return err
			}
			if g.jsonOut {
				return writeJSON(g.stdout, st)
			}
			fmt.Fprintf(g.stdout, "removed %d generation(s) %v and %d blob(s), %d bytes\n", len(st.Generations), st.Generations, st.Blobs, st.Bytes)
			return nil
		}),
	}
}

// UnitView is one unit's live state in `status`.
type UnitView struct {
	Name   string `json:"name"`
	Active string `json:"active"`
	Sub    string `json:"sub"`
	Result string `json:"result,omitempty"`
	PID    uint32 `json:"main_pid,omitempty"`
}

// StatusView is what `status --json` prints.
type StatusView struct {
	Host        string            `json:"host"`
	StateDir    string            `json:"state_dir"`
	Current     *state.Generation `json:"current,omitempty"`
	LastGood    int               `json:"last_good"`
	Journal     *state.Journal    `json:"switch_in_progress,omitempty"`
	LastResult  *state.Result     `json:"last_result,omitempty"`
	Quarantined int               `json:"quarantined"`
	Units       []UnitView        `json:"units,omitempty"`
	UnitsError  string            `json:"units_error,omitempty"`
}

func (g *globals) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the current generation, the last switch and why it ended as it did, and the units' live state",
		Args:  cobra.NoArgs,
		RunE: g.withParts(false, func(cmd *cobra.Command, p *parts) error {
			snap, err := p.db.Snapshot()
			if err != nil {
				return err
			}
			host, _ := os.Hostname()
			v := StatusView{Host: host, StateDir: p.cfg.StateDir, LastGood: snap.Meta.LastGood, Journal: snap.Journal, LastResult: snap.Result, Quarantined: len(snap.Quarantine)}
			if cur, err := snap.Generation(snap.Meta.Current); err == nil {
				v.Current = &cur
				v.Units, err = unitViews(cmd.Context(), p, cur.Number)
				if err != nil {
					v.UnitsError = err.Error()
				}
			}
			if g.jsonOut {
				return writeJSON(g.stdout, v)
			}
			printStatus(g.stdout, v)
			return nil
		}),
	}
}

func unitViews(ctx context.Context, p *parts, n int) ([]UnitView, error) {
	b, err := os.ReadFile(filepath.Join(p.layout.GenDir(n), "manifest.json"))
	if err != nil {
		return nil, err
	}
	m, err := generation.Parse(b)
	if err != nil {
		return nil, err
	}
	sd, err := dialSystemd(ctx)
	if err != nil {
		return nil, err
	}
	defer sd.Close()
	var out []UnitView
	for _, u := range slices.Sorted(maps.Keys(m.Units)) {
		st, err := sd.Status(ctx, u)
		if err != nil {
			return out, err
		}
		out = append(out, UnitView{Name: u, Active: st.ActiveState, Sub: st.SubState, Result: st.Result, PID: st.MainPID})
	}
	return out, nil
}

func printStatus(w io.Writer, v StatusView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "host:\t%s\n", v.Host)
	if v.Current == nil {
		fmt.Fprintf(tw, "current:\tnone (no generation applied yet)\n")
	} else {
		fmt.Fprintf(tw, "current:\tgeneration %d  %s  %s  %s\n", v.Current.Number, orDash(v.Current.Name), short(v.Current.ID), v.Current.Status)
		for _, warn := range v.Current.Warnings {
			fmt.Fprintf(tw, "  warning:\t%s\n", warn)
		}
	}
	fmt.Fprintf(tw, "last good:\t%d\n", v.LastGood)
	if j := v.Journal; j != nil {
		fmt.Fprintf(tw, "in progress:\t%s %d → %d, phase %s, since %s (pid %d)\n", j.Op, j.From, j.To, j.Phase, j.StartedAt.Format(time.TimeOnly), j.PID)
	}
	if r := v.LastResult; r != nil {
		fmt.Fprintf(tw, "last %s:\t%s (%d → %d) at %s, took %s\n", r.Op, r.Outcome, r.From, r.To, r.At.Format(time.DateTime), r.Duration.Round(time.Millisecond))
		if r.Reason != "" {
			fmt.Fprintf(tw, "  reason:\t%s\n", r.Reason)
		}
	}
	if v.Quarantined > 0 {
		fmt.Fprintf(tw, "quarantined:\t%d generation(s); see `slipway-agent generations`\n", v.Quarantined)
	}
	tw.Flush()
	if len(v.Units) > 0 {
		fmt.Fprintln(w, "units:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, u := range v.Units {
			res := ""
			if u.Result != "" && u.Result != "success" {
				res = "result=" + u.Result
			}
			fmt.Fprintf(tw, "  %s\t%s (%s)\t%s\n", u.Name, u.Active, u.Sub, res)
		}
		tw.Flush()
	}
	if v.UnitsError != "" {
		fmt.Fprintf(w, "units: unavailable: %s\n", v.UnitsError)
	}
}

func (g *globals) generationsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "generations",
		Short: "List generations (like nix-env --list-generations), marking current, last good and quarantined",
		Args:  cobra.NoArgs,
		RunE: g.withParts(false, func(cmd *cobra.Command, p *parts) error {
			snap, err := p.db.Snapshot()
			if err != nil {
				return err
			}
			type row struct {
				state.Generation
				Current  bool `json:"current"`
				LastGood bool `json:"last_good"`
			}
			rows := make([]row, 0, len(snap.Generations))
			for _, gen := range snap.Generations {
				rows = append(rows, row{gen, gen.Number == snap.Meta.Current, gen.Number == snap.Meta.LastGood})
			}
			if g.jsonOut {
				return writeJSON(g.stdout, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(g.stdout, "no generations yet")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			for _, r := range rows {
				var marks []string
				if r.Current {
					marks = append(marks, "current")
				}
				if r.LastGood {
					marks = append(marks, "last good")
				}
				note := r.Status
				if len(marks) > 0 {
					note += " (" + strings.Join(marks, ", ") + ")"
				}
				if r.Reason != "" {
					note += ": " + r.Reason
				}
				fmt.Fprintf(tw, "%4d\t%s\t%s\t%s\t%s\n", r.Number, r.CreatedAt.Local().Format(time.DateTime), orDash(r.Name), short(r.ID), note)
			}
			return tw.Flush()
		}),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dirBlobs serves artifacts from the release directory, or from their URL.
type dirBlobs struct {
	paths  map[string]string
	client *http.Client
}

func (d *dirBlobs) Open(ctx context.Context, a generation.Artifact) (io.ReadCloser, error) {
	if p, ok := d.paths[a.SHA256]; ok {
		return os.Open(p)
	}
	if a.URL == "" {
		return nil, fmt.Errorf("artifact %q is not in the release directory and has no url", a.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", a.URL, resp.Status)
	}
	return resp.Body, nil
}
