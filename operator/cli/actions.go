package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
)

func isNotFound(err error) bool { return errors.Is(err, api.ErrNotFound) }

func (g *globals) rollbackCmd() *cobra.Command {
	var to int
	c := &cobra.Command{
		Use:   "rollback NODE",
		Short: "Send a node back to its previous good generation (or --to N)",
		Long: `Make an earlier generation that NODE ran its desired generation again:
the previous good one, or generation N (see ` + "`slipway generations NODE`" + `).
Only a generation the node ran and confirmed qualifies: the server refuses
one that is staged, failed or quarantined there.
The agent switches to it and verifies it like any switch.`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if cmd.Flags().Changed("to") && to < 1 {
				return withHint(fmt.Errorf("--to %d: want a generation number, 1 or more", to), "`slipway generations "+name+"` lists them")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			n, err := c.Rollback(cmd.Context(), name, api.RollbackRequest{To: to})
			if err != nil {
				notFound := seeNodes
				if to > 0 {
					notFound = "see `slipway nodes`, and `slipway generations " + name + "` for its generation numbers"
				}
				return g.apiError("rollback "+name, err, notFound)
			}
			if g.jsonOut {
				return g.writeJSON(n)
			}
			desired := orDash(n.Desired)
			if num := generationOf(n); num > 0 {
				desired += fmt.Sprintf(" (generation %d)", num)
			}
			fmt.Fprintf(g.stdout, "node %s: desired is now %s\n", n.Name, desired)
			fmt.Fprintf(g.stdout, "next: the agent switches to it and verifies it like any switch; watch with `slipway status` or `slipway node show %s`\n", n.Name)
			return nil
		},
	}
	c.Flags().IntVar(&to, "to", 0, "generation number to go back to (default: the previous good one)")
	return c
}

// generationOf is the node's number of its desired generation when its
// report lists it, else 0.
func generationOf(n api.Node) int {
	if n.Report == nil || n.Desired == "" {
		return 0
	}
	for _, gen := range n.Report.Generations {
		if gen.ID == n.Desired {
			return gen.Number
		}
	}
	return 0
}

func (g *globals) retryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry NODE",
		Short: "Make a node try its desired generation again although it failed there and was quarantined",
		Long: `A generation that failed on a node is quarantined there: the agent does not
try it again until a newer one is published. retry asks it to try once more
(after fixing what made it fail, e.g. a dependency outside the release).
On a node where nothing failed (it runs its desired generation, is switching
to it or has not tried it yet) the server refuses, saying so, and retry
exits 1.`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			n, err := c.Retry(cmd.Context(), args[0])
			var se *api.StatusError
			if errors.Is(err, api.ErrConflict) && !(errors.As(err, &se) && se.Body.Hint != "") {
				return withHint(fmt.Errorf("retry %s: %w", args[0], err),
					"retry is for a node whose desired generation failed there; `slipway node show "+args[0]+"` shows what it runs")
			}
			if err != nil {
				return g.apiError("retry "+args[0], err, seeNodes)
			}
			if g.jsonOut {
				return g.writeJSON(n)
			}
			what := fmt.Sprintf("retry %d", n.Retry)
			if num := generationOf(n); num > 0 {
				what = fmt.Sprintf("generation %d, %s", num, what)
			}
			fmt.Fprintf(g.stdout, "node %s: retrying %s (%s)\n", n.Name, orDash(n.Desired), what)
			fmt.Fprintf(g.stdout, "next: the agent switches to it again and verifies it; if it fails again the node reverts again. Watch with `slipway status` or `slipway node show %s`\n", n.Name)
			return nil
		},
	}
}

// eventsCmd is `slipway events`: with --follow --json it prints one JSON
// object per line (an array cannot be streamed); without --follow an
// array.
func (g *globals) eventsCmd() *cobra.Command {
	var (
		since  int64
		limit  int
		follow bool
	)
	c := &cobra.Command{
		Use:   "events",
		Short: "Show the audit log: who did what, when (--follow to keep watching)",
		Long: `Show audit log entries after sequence number --since, oldest first.

With --follow, poll for new entries every 2 seconds until interrupted;
--json then prints one JSON object per line.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if since < 0 || limit < 0 {
				return errors.New("--since and --limit must not be negative")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if follow {
				return g.followEvents(cmd.Context(), c, since, limit)
			}
			evs, err := c.Events(cmd.Context(), since, limit)
			if err != nil {
				return g.apiError("events", err, "")
			}
			if evs == nil {
				evs = []api.Event{}
			}
			if g.jsonOut {
				return g.writeJSON(evs)
			}
			if len(evs) == 0 {
				if since > 0 {
					fmt.Fprintf(g.stdout, "no events after %d\n", since)
				} else {
					fmt.Fprintln(g.stdout, "no events yet")
				}
				return nil
			}
			if err := g.printEvents(g.stdout, evs, true, false); err != nil {
				return err
			}
			if limit > 0 && len(evs) == limit {
				g.note("more events may follow: slipway events --since %d", evs[len(evs)-1].Seq)
			}
			return nil
		},
	}
	f := c.Flags()
	f.Int64Var(&since, "since", 0, "show events with a sequence number greater than SEQ")
	f.IntVar(&limit, "limit", 0, "show at most N events per request (default: the server's)")
	f.BoolVarP(&follow, "follow", "f", false, "keep polling for new events until interrupted")
	return c
}

// followEvents polls for events until ctx ends. Errors reaching the server
// are reported and retried; errors the server answers end the command.
func (g *globals) followEvents(ctx context.Context, c *api.Client, since int64, limit int) error {
	header := true
	for {
		evs, err := c.Events(ctx, since, limit)
		var se *api.StatusError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &se):
			return g.apiError("events", err, "")
		case err != nil:
			g.note("events: %v; retrying", err)
		case len(evs) > 0:
			since = evs[len(evs)-1].Seq
			if g.jsonOut {
				for _, e := range evs {
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					if _, err := fmt.Fprintf(g.stdout, "%s\n", b); err != nil {
						return err
					}
				}
			} else if err := g.printEvents(g.stdout, evs, header, true); err != nil {
				return err
			}
			header = false
			if limit > 0 && len(evs) == limit {
				continue // more are waiting
			}
		}
		t := time.NewTimer(g.env.pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// printEvents prints events as a table. With follow the columns have fixed
// widths, so that the batches of one follow line up.
func (g *globals) printEvents(w io.Writer, evs []api.Event, header, follow bool) error {
	const fixed = "%-6v  %-19v  %-16v  %-16v  %-12v  %v\n"
	if follow {
		if header {
			fmt.Fprintf(w, fixed, "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAIL")
		}
		for _, e := range evs {
			line := fmt.Sprintf(fixed, e.Seq, e.Time.In(g.env.loc).Format(time.DateTime), e.Actor, e.Action, orDash(e.Target), e.Detail)
			if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
				return err
			}
		}
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tDETAIL")
	for _, e := range evs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s", e.Seq, e.Time.In(g.env.loc).Format(time.DateTime), e.Actor, e.Action, orDash(e.Target))
		if e.Detail != "" {
			fmt.Fprintf(tw, "\t%s", e.Detail)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func (g *globals) tokenCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens, with which new nodes enrol",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	c.AddCommand(g.tokenCreateCmd())
	return c
}

// tokenCreateCmd is `slipway token create`.
func (g *globals) tokenCreateCmd() *cobra.Command {
	var (
		ttl  time.Duration
		node string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time join token for a new node (printed once, alone on stdout)",
		Long: `Create a one-time join token. A new node's agent enrols with it once; after
that, or after --ttl, it is worthless.

A join token enrols a new name only: it cannot take over a node that is
enrolled. With --node NAME it enrols only NAME: a new node of that name, or
the enrolled node NAME after ` + "`slipway node reset NAME`" + ` (the only way to
enrol an existing node with a join token).

Only the token is printed on stdout, so it can be captured:

  token=$(slipway token create --ttl 1h)

Its expiry goes to stderr. The server keeps only a hash: the token cannot
be shown again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.tokenCreate(cmd.Context(), ttl, node)
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token stays valid")
	create.Flags().StringVar(&node, "node", "", "enrol only this node name (new, or after `slipway node reset NAME`)")
	_ = create.RegisterFlagCompletionFunc("node", g.completeNodes)
	return create
}

// tokenCreate creates a join token valid for ttl, for node if given, and
// prints it alone on stdout.
func (g *globals) tokenCreate(ctx context.Context, ttl time.Duration, node string) error {
	if ttl <= 0 {
		return fmt.Errorf("--ttl %s: must be positive", ttl)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	jt, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: ttl.String(), Node: node})
	if errors.Is(err, api.ErrForbidden) {
		return withHint(fmt.Errorf("create join token: %w", err), "creating join tokens needs a token with the admin role")
	}
	if err != nil {
		return g.apiError("create join token", err, "")
	}
	if g.jsonOut {
		return g.writeJSON(jt)
	}
	if _, err := fmt.Fprintln(g.stdout, jt.Token); err != nil {
		return err
	}
	what := "one new node"
	if jt.Node != "" {
		what = "only node " + jt.Node
	}
	g.note("join token expires at %s (%s); it enrols %s and is not shown again",
		timeString(jt.ExpiresAt, g.env.loc), until(g.env.now(), jt.ExpiresAt), what)
	return nil
}

// nodeResetCmd is `slipway node reset NODE` (admin).
func (g *globals) nodeResetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset NODE",
		Short: "Let an enrolled node be enrolled again with a join token made for it (admin)",
		Long: `A join token never takes over an enrolled node. To enrol NODE again (a
reinstalled machine, a lost node token), an admin resets it: the server
revokes its node token (its agent is refused from then on) and lets a join
token created with ` + "`slipway token create --node NODE`" + ` enrol it; an
unbound join token still cannot. Its labels, age recipient and desired
generation stay until that enrolment replaces them. The reset is audited
with your token's name.

Exits 1 when the server refuses (an unknown node, a token without the
admin role).`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			n, err := c.ResetNode(cmd.Context(), args[0])
			if errors.Is(err, api.ErrForbidden) {
				return withHint(fmt.Errorf("reset %s: %w", args[0], err), "resetting a node needs a token with the admin role")
			}
			if err != nil {
				return g.apiError("reset "+args[0], err, seeNodes)
			}
			if g.jsonOut {
				return g.writeJSON(n)
			}
			fmt.Fprintf(g.stdout, "node %s: reset; its node token is revoked\n", n.Name)
			fmt.Fprintf(g.stdout, "next: `slipway token create --node %s` and enrol the node with that join token\n", n.Name)
			return nil
		},
	}
}
