package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/humanize"
)

// Exit codes of `rollout watch` and of `deploy` while it follows its
// rollout.
const (
	// ExitRolloutFailed: the rollout failed, was reverted or aborted.
	ExitRolloutFailed = 1
	// ExitAwaitsPromotion: the rollout waits for an operator to promote it
	// (awaiting-promotion or held) and --until-promotion was not given.
	ExitAwaitsPromotion = 2
)

// safetyPolls is how many poll intervals watch waits between reads while
// the event stream is up: a stream that hangs silently cannot stall it.
const safetyPolls = 10

const seeRollouts = "see `slipway rollouts`"

var rolloutIDRe = regexp.MustCompile(`^ro[0-9]+$`)

// checkRolloutID refuses an argument that cannot be a rollout ID before any
// request (a release ID, "r12-web", is the likely mistake).
func checkRolloutID(id string) error {
	if rolloutIDRe.MatchString(id) {
		return nil
	}
	return withHint(fmt.Errorf("%q is not a rollout ID", id), "rollout IDs look like ro12; "+seeRollouts+" (a release's rollout is in `slipway deploy`'s output)")
}

// rolloutClient refuses an argument that cannot be a rollout ID, then
// returns the API client: what every command on one rollout does first.
func (g *globals) rolloutClient(id string) (*api.Client, error) {
	if err := checkRolloutID(id); err != nil {
		return nil, err
	}
	return g.client()
}

// completeRollouts completes rollout IDs (with state and release).
func (g *globals) completeRollouts(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return g.complete(cmd, args, func(ctx context.Context, c *api.Client) ([]string, error) {
		ros, err := c.Rollouts(ctx)
		out := make([]string, 0, len(ros))
		for _, r := range ros {
			out = append(out, r.ID+"\t"+r.State+" "+r.Release)
		}
		return out, err
	})
}

func (g *globals) rolloutsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rollouts",
		Short: "List rollouts, newest first, with their state and progress",
		Long: `List every rollout, newest first: its release, its target group, its state,
the current wave out of all waves, its failed nodes and its age.
` + "`slipway rollout show ID`" + ` shows one in full.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ros, err := c.Rollouts(cmd.Context())
			if err != nil {
				return g.apiError("list rollouts", err, "")
			}
			if ros == nil {
				ros = []api.Rollout{}
			}
			if g.jsonOut {
				return g.writeJSON(ros)
			}
			if len(ros) == 0 {
				fmt.Fprintln(g.stdout, "no rollouts yet; `slipway deploy DIR` starts one")
				return nil
			}
			now := g.env.now()
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "ID\tRELEASE\tGROUP\tSTATE\tWAVE\tFAILURES\tAGE")
			for _, r := range ros {
				state := r.State
				if r.Rollback {
					state += " (rollback)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, r.Release, groupString(r.Group), state, waveOf(r), r.Failures, strings.TrimSuffix(humanize.Ago(now, r.CreatedAt), " ago"))
			}
			return tw.Flush()
		},
	}
}

// groupString is a rollout's group for a table cell.
func groupString(group string) string {
	if group == "" {
		return "(every node)"
	}
	return group
}

// targetGroup is a rollout's group in a sentence.
func targetGroup(group string) string {
	if group == "" {
		return "every node"
	}
	return group
}

// waveOf is "n/N": the current wave, from 1, of all; "-" without waves.
func waveOf(r api.Rollout) string {
	if len(r.Waves) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", min(max(r.Wave, 0), len(r.Waves)-1)+1, len(r.Waves))
}

func (g *globals) rolloutCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rollout",
		Short: "Show, watch and steer one rollout: pause, resume, promote, abort, rollback, retry",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	c.AddCommand(g.rolloutShowCmd(), g.rolloutWatchCmd())
	for _, a := range []struct{ action, short, long string }{
		{"pause", "Pause a rollout: no further node is switched until it is resumed",
			`Stop the rollout from starting further waves or switching further nodes.
Nodes already switching finish and are still gated by their health.`},
		{"promote", "Promote a rollout past its healthy canaries, or start one held by a rollback",
			`A canary rollout without an analysis window waits for promotion
(awaiting-promotion) once its canaries are healthy: promote sends it on to
the next waves. A rollout held because its group was rolled back (held)
starts when promoted.`},
		{"abort", "Stop a rollout for good; nodes that did not confirm the release go back",
			`Stop the rollout: no further node is sent the release, and waves that
had not passed are marked aborted. Nodes confirmed healthy on the release
keep it (` + "`slipway rollout rollback ID`" + ` sends them back). Every other node
of the rollout gets back the desired generation it had before: nodes never
sent the release are marked aborted and keep it; nodes sent it but not
confirmed are marked aborted and go back (one in the middle of its switch
finishes or reverts that switch first, then goes back; its actual
generation in ` + "`slipway status`" + ` shows what it runs meanwhile); failed nodes
stay failed and go back too.`},
		{"rollback", "Send the rollout's nodes back to the generation they ran and confirmed before it (a new rollout)",
			`Start a new rollout that sends every node the rollout was sent to back to
the newest generation it ran and confirmed before the rollout, at once. A
node is never sent to a generation it did not run and confirm: if any node
has none (it had confirmed nothing before, or ran something this server
did not publish), the server refuses, naming the nodes, and nothing
changes; roll the others back one by one with ` + "`slipway rollback NODE`" + `.
The group is then pinned: later releases for it wait, held, until
promoted. Prints the new rollout.`},
	} {
		c.AddCommand(g.rolloutActionCmd(a.action, a.short, a.long))
	}
	c.AddCommand(g.rolloutRetryCmd(), g.rolloutResumeCmd())
	return c
}

func (g *globals) rolloutShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		Short:             "Show a rollout: its strategy, its waves and the state of every node",
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.rollout(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.jsonOut {
				return g.writeJSON(r)
			}
			lines := rolloutView(r, g.env.now(), g.env.loc)
			if next := nextStep(r); next != "" {
				lines = append(lines, "next: "+next)
			}
			_, err = io.WriteString(g.stdout, strings.Join(lines, "\n")+"\n")
			return err
		},
	}
}

func (g *globals) rollout(ctx context.Context, id string) (api.Rollout, error) {
	c, err := g.rolloutClient(id)
	if err != nil {
		return api.Rollout{}, err
	}
	r, err := c.Rollout(ctx, id)
	return r, g.apiError("rollout "+id, err, seeRollouts)
}

func (g *globals) rolloutWatchCmd() *cobra.Command {
	var untilPromotion bool
	c := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a rollout live until it ends; exit 0 only if it succeeds",
		Long: `Follow the rollout ID: its waves, each with a progress bar (healthy nodes
of all), and the state of every node. On a terminal the view is redrawn in
place; otherwise it is printed once, then one line per change. With --json
each new state of the rollout is printed as one JSON line.

watch follows the server's event stream and polls every 2 seconds while
the stream is down. It ends when the rollout does, with this exit status:

  0  the rollout succeeded
  1  it failed, was reverted or aborted (and on any other error)
  2  it waits for promotion (awaiting-promotion, or held by a rollback);
     with --until-promotion watch goes on until it is promoted

Queued, paused and waiting-window rollouts are watched on. Interrupting watch (Ctrl-C)
does not stop the rollout.`,
		Example: `  slipway rollout watch ro12
  slipway rollout watch ro12 --until-promotion`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRolloutID(args[0]); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return g.watch(cmd.Context(), c, args[0], untilPromotion)
		},
	}
	c.Flags().BoolVar(&untilPromotion, "until-promotion", false, "keep watching while the rollout waits for promotion, instead of exiting 2")
	return c
}

func (g *globals) rolloutActionCmd(action, short, long string) *cobra.Command {
	if long == "" {
		long = short + "."
	}
	return &cobra.Command{
		Use:               action + " ID",
		Short:             short,
		Long:              long,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := g.rolloutClient(id)
			if err != nil {
				return err
			}
			r, err := c.RolloutAction(cmd.Context(), id, action)
			if err != nil {
				return g.rolloutError(action+" rollout "+id, id, err)
			}
			if g.jsonOut {
				return g.writeJSON(r)
			}
			w := g.stdout
			switch action {
			case "rollback":
				fmt.Fprintf(w, "rollout %s started: sends %s back to the generations they had before %s (%s)\n",
					r.ID, nodesOf(r), id, stateString(r))
				fmt.Fprintf(w, "the group %s is pinned: later releases for it are held until promoted\n", groupString(r.Group))
				fmt.Fprintf(w, "watch it: `slipway rollout watch %s`\n", r.ID)
				return nil
			case "abort":
				// What happened to every node: the abort's rule at work.
				fmt.Fprintln(w, strings.Join(rolloutView(r, g.env.now(), g.env.loc), "\n"))
				fmt.Fprintln(w, "nodes confirmed healthy on the release keep it; every other node of the rollout goes back to its previous desired generation")
			default:
				fmt.Fprintf(w, "rollout %s: %s\n", r.ID, stateString(r))
			}
			if next := nextStep(r); next != "" {
				fmt.Fprintln(w, "next: "+next)
			}
			return nil
		},
	}
}

func (g *globals) rolloutRetryCmd() *cobra.Command {
	var node string
	c := &cobra.Command{
		Use:   "retry ID [--node NODE]",
		Short: "Retry the failed nodes of a rollout's current wave (or one node), and resume it if it halted",
		Long: `Publish the release again to the failed nodes of the rollout's current
wave, or to NODE alone, although they reverted and quarantined it (after
fixing what made them fail). A rollout that halted on its failures runs
again from its current wave.`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := g.rolloutClient(id)
			if err != nil {
				return err
			}
			r, err := c.RolloutRetry(cmd.Context(), id, api.RolloutRetryRequest{Node: node})
			if err != nil {
				if node != "" && errors.Is(err, api.ErrNotFound) {
					return g.apiError("retry rollout "+id, err, "`slipway rollout show "+id+"` lists its nodes")
				}
				return g.rolloutError("retry rollout "+id, id, err)
			}
			if g.jsonOut {
				return g.writeJSON(r)
			}
			what := "the failed nodes of its current wave"
			if node != "" {
				what = "node " + node
			}
			fmt.Fprintf(g.stdout, "rollout %s: retrying %s; now %s\n", r.ID, what, stateString(r))
			fmt.Fprintf(g.stdout, "watch it: `slipway rollout watch %s`\n", r.ID)
			return nil
		},
	}
	c.Flags().StringVar(&node, "node", "", "retry only this node")
	return c
}

// rolloutError wraps an error of a rollout action with hints for the
// answers that need one.
func (g *globals) rolloutError(op, id string, err error) error {
	var se *api.StatusError
	if errors.Is(err, api.ErrConflict) && !(errors.As(err, &se) && se.Body.Hint != "") {
		return withHint(fmt.Errorf("%s: %w", op, err), "`slipway rollout show "+id+"` shows its state")
	}
	return g.apiError(op, err, seeRollouts)
}

// nodesOf is "3 nodes" for a rollout's nodes.
func nodesOf(r api.Rollout) string {
	n := 0
	for _, w := range r.Waves {
		n += len(w.Nodes)
	}
	return plural(n, "node")
}

// plural is "1 node", "2 nodes".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// stateString is "running, wave 2 of 3".
func stateString(r api.Rollout) string {
	switch r.State {
	case api.RolloutRunning, api.RolloutPaused, api.RolloutAwaiting, api.RolloutWaiting:
		if len(r.Waves) > 0 {
			w := min(max(r.Wave, 0), len(r.Waves)-1)
			s := fmt.Sprintf("%s, wave %d of %d", r.State, w+1, len(r.Waves))
			if name := r.Waves[w].Name; name != fmt.Sprintf("wave %d", w+1) {
				s += " (" + name + ")"
			}
			return s
		}
	}
	return r.State
}

// strategyString describes a strategy in one line.
func strategyString(s api.Strategy) string {
	var parts []string
	batches := func(n int) string {
		if n <= 0 {
			return "the rest in one wave"
		}
		return fmt.Sprintf("batches of %d", n)
	}
	switch s.Kind {
	case api.StrategyCanary:
		canary := fmt.Sprintf("canary %d", s.Canary)
		if s.CanaryPercent > 0 {
			canary = fmt.Sprintf("canary %d%%", s.CanaryPercent)
		}
		parts = append(parts, canary+", then "+batches(s.BatchSize))
		if s.Analysis != "" {
			parts = append(parts, "promoted after "+s.Analysis+" of healthy canaries")
		} else {
			parts = append(parts, "promoted by hand")
		}
	case api.StrategyRolling:
		part := "rolling, " + batches(s.BatchSize)
		if s.MaxUnavailable > 0 {
			part += fmt.Sprintf(", at most %d switching", s.MaxUnavailable)
		}
		parts = append(parts, part)
	case api.StrategyAllAtOnce, "":
		if s.MaxParallel > 0 {
			parts = append(parts, fmt.Sprintf("all-at-once, %d at a time", s.MaxParallel))
		} else {
			parts = append(parts, "all-at-once")
		}
	default:
		parts = append(parts, s.Kind)
	}
	if s.Stagger != "" {
		parts = append(parts, s.Stagger+" between waves")
	}
	parts = append(parts, fmt.Sprintf("max_failures %d", s.MaxFailures))
	if s.AutoRevert {
		parts = append(parts, "auto_revert")
	}
	if s.OnNodeDown != "" && s.OnNodeDown != api.NodeDownWait {
		parts = append(parts, "node down: "+s.OnNodeDown)
	}
	if s.NodeDeadline != "" {
		parts = append(parts, "node deadline "+s.NodeDeadline)
	}
	if len(s.Windows) > 0 {
		parts = append(parts, "waves start inside "+strings.Join(s.Windows, ", "))
	}
	if len(s.AnalysisGates) > 0 {
		names := make([]string, len(s.AnalysisGates))
		for i, g := range s.AnalysisGates {
			names[i] = g.Name
		}
		parts = append(parts, "analysis gates "+strings.Join(names, ", "))
	}
	return strings.Join(parts, "; ")
}

// nextStep is what an operator can do about a rollout in its state.
func nextStep(r api.Rollout) string {
	switch r.State {
	case api.RolloutAwaiting:
		return fmt.Sprintf("the canaries are healthy: promote with `slipway rollout promote %s`, or stop with `slipway rollout abort %s`", r.ID, r.ID)
	case api.RolloutHeld:
		return fmt.Sprintf("the group is pinned by a rollback: `slipway rollout promote %s` runs this rollout", r.ID)
	case api.RolloutPaused:
		return fmt.Sprintf("resume with `slipway rollout resume %s`", r.ID)
	case api.RolloutWaiting:
		return fmt.Sprintf("its next wave starts when the maintenance windows open; start it now with `slipway rollout resume --now %s`", r.ID)
	case api.RolloutQueued:
		return "it starts when the group's active rollout ends (`slipway rollouts`)"
	case api.RolloutFailed:
		return fmt.Sprintf("retry the failed nodes with `slipway rollout retry %s`, or send the group back with `slipway rollout rollback %s`", r.ID, r.ID)
	case api.RolloutReverted:
		return fmt.Sprintf("the switched nodes were sent back; fix the release and deploy again, or retry with `slipway rollout retry %s`", r.ID)
	case api.RolloutRunning:
		return fmt.Sprintf("watch it: `slipway rollout watch %s`", r.ID)
	case api.RolloutAborted:
		if healthy := nodesIn(r, api.RolloutNodeHealthy); len(healthy) > 0 {
			return fmt.Sprintf("%s kept the release (confirmed healthy on it): send them back with `slipway rollout rollback %s`", strings.Join(healthy, ", "), r.ID)
		}
	}
	return ""
}

// nodesIn lists r's nodes in state.
func nodesIn(r api.Rollout, state string) []string {
	var out []string
	for _, w := range r.Waves {
		for _, n := range w.Nodes {
			if n.State == state {
				out = append(out, n.Name)
			}
		}
	}
	return out
}

const barWidth = 20

// bar is "[########------------]" for done of total.
func bar(done, total int) string {
	n := 0
	if total > 0 {
		n = min(done, total) * barWidth / total
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", barWidth-n) + "]"
}

// rolloutView renders a rollout: a header, then each wave with its bar and
// its nodes.
func rolloutView(r api.Rollout, now time.Time, loc *time.Location) []string {
	kind := "rollout"
	if r.Rollback {
		kind = "rollback rollout"
	}
	lines := []string{
		fmt.Sprintf("%s %s: release %s to %s", kind, r.ID, r.Release, targetGroup(r.Group)),
		fmt.Sprintf("  state:     %s; %d failed", stateString(r), r.Failures),
	}
	if r.Reason != "" {
		lines = append(lines, "  reason:    "+r.Reason)
	}
	if r.State == api.RolloutWaiting && !r.WindowOpensAt.IsZero() {
		lines = append(lines, fmt.Sprintf("  window:    opens %s (%s)", timeString(r.WindowOpensAt, loc), humanize.In(now, r.WindowOpensAt)))
	}
	lines = append(lines,
		"  strategy:  "+strategyString(r.Strategy),
		"  manifest:  "+r.Manifest,
		fmt.Sprintf("  created:   %s (%s) by %s", timeString(r.CreatedAt, loc), humanize.Ago(now, r.CreatedAt), orDash(r.CreatedBy)),
	)
	if len(r.Waves) == 0 {
		return append(lines, "no waves: no node is targeted")
	}
	waveW, stateW, nodeW := 0, 0, 0
	for _, w := range r.Waves {
		waveW = max(waveW, utf8.RuneCountInString(w.Name))
		stateW = max(stateW, len(w.State))
		for _, n := range w.Nodes {
			nodeW = max(nodeW, utf8.RuneCountInString(n.Name))
		}
	}
	for i, w := range r.Waves {
		healthy := 0
		for _, n := range w.Nodes {
			if n.State == api.RolloutNodeHealthy {
				healthy++
			}
		}
		mark := " "
		if i == r.Wave && !finished(r.State) {
			mark = ">"
		}
		lines = append(lines, strings.TrimRight(fmt.Sprintf("%s %-*s  %-*s  %s %d/%d healthy", mark, waveW, w.Name, stateW, w.State, bar(healthy, len(w.Nodes)), healthy, len(w.Nodes)), " "))
		for _, n := range w.Nodes {
			lines = append(lines, strings.TrimRight(fmt.Sprintf("    %-*s  %s", nodeW, n.Name, nodeState(n, now)), " "))
		}
	}
	return append(lines, analysisView(r, loc)...)
}

// analysisView renders the analysis gates' runs of the newest wave
// analysed: each gate's verdict, counts and query, then its measurements.
func analysisView(r api.Rollout, loc *time.Location) []string {
	if len(r.AnalysisRuns) == 0 {
		return nil
	}
	wave := "?"
	if w := r.AnalysisRuns[0].Wave; w >= 0 && w < len(r.Waves) {
		wave = r.Waves[w].Name
	}
	lines := []string{"analysis of " + wave + ":"}
	for _, run := range r.AnalysisRuns {
		lines = append(lines, fmt.Sprintf("  %s  %s: %d successful, %d failed, %d inconclusive (%d in a row)", run.Gate, run.Verdict, run.Successful, run.Failed, run.Inconclusive, run.ErrorRun))
		if run.Query != "" {
			lines = append(lines, "    query: "+run.Query)
		}
		for _, m := range run.Measurements {
			v := "-"
			if m.Value != nil {
				v = strconv.FormatFloat(*m.Value, 'g', 6, 64)
			}
			lines = append(lines, fmt.Sprintf("    %s  %-12s  %8s  %s", timeString(m.At, loc), m.Outcome, v, m.Message))
		}
	}
	return lines
}

// nodeState is a node's state with its reason or, while it switches, how
// long ago it was published.
func nodeState(n api.RolloutNode, now time.Time) string {
	s := n.State
	switch {
	case n.Reason != "":
		s += ": " + n.Reason
	case n.State == api.RolloutNodeSwitching && !n.PublishedAt.IsZero():
		s += " (published " + humanize.Ago(now, n.PublishedAt) + ")"
	}
	return s
}

// finished reports whether a rollout state is final.
func finished(state string) bool {
	switch state {
	case api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted, api.RolloutAborted:
		return true
	}
	return false
}

// verdict says whether watching r is over, and with which error (nil =
// success).
func verdict(r api.Rollout, untilPromotion bool) (bool, error) {
	switch r.State {
	case api.RolloutSucceeded:
		return true, nil
	case api.RolloutFailed, api.RolloutReverted, api.RolloutAborted:
		msg := fmt.Sprintf("rollout %s %s", r.ID, r.State)
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return true, &ExitError{Code: ExitRolloutFailed, Err: withHint(errors.New(msg), nextStep(r))}
	case api.RolloutAwaiting, api.RolloutHeld:
		if untilPromotion {
			return false, nil
		}
		return true, &ExitError{Code: ExitAwaitsPromotion, Err: withHint(
			fmt.Errorf("rollout %s waits for promotion (%s)", r.ID, stateString(r)),
			fmt.Sprintf("promote it with `slipway rollout promote %s`; or watch on through promotion with `slipway rollout watch %s --until-promotion`", r.ID, r.ID))}
	}
	return false, nil
}

// watch follows rollout id until it ends (see rolloutWatchCmd). It
// re-reads the rollout on each audit event from the event stream (events
// older than the rollout are skipped, as a stream from seq 0 replays the
// log), reconnects when the stream drops and polls every 2 seconds while it
// is down (and every 20 seconds while it is up, should a connection hang
// silently). Exit codes: 0 succeeded; ExitRolloutFailed (1) failed,
// reverted or aborted; ExitAwaitsPromotion (2) awaiting-promotion or held,
// unless untilPromotion, which keeps watching until someone (or the
// analysis window) promotes it. Queued and paused rollouts are watched on.
// On a terminal the view is redrawn in place; otherwise it is printed
// once, then one line per change. With --json, each new state of the
// rollout is one JSON line.
func (g *globals) watch(ctx context.Context, c *api.Client, id string, untilPromotion bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the event stream
	r, err := c.Rollout(ctx, id)
	if err != nil {
		return g.apiError("rollout "+id, err, seeRollouts)
	}
	w := &rolloutWatch{g: g, c: c, id: id, untilPromotion: untilPromotion, view: g.newWatchView(),
		wake: make(chan struct{}, 1), lost: make(chan error, 1)}
	if err := w.view.show(r); err != nil {
		return err
	}
	if done, err := verdict(r, untilPromotion); done {
		return w.view.end(r, err)
	}
	w.streamUp.Store(true)
	go w.followEvents(ctx, r.CreatedAt)
	return w.poll(ctx, r)
}

// rolloutWatch is one `rollout watch`: the event stream wakes the poll loop
// (wake), tells it when the stream drops (lost) and whether it is up
// (streamUp, which stretches the poll interval).
type rolloutWatch struct {
	g              *globals
	c              *api.Client
	id             string
	untilPromotion bool
	view           *watchView

	wake     chan struct{}
	lost     chan error
	streamUp atomic.Bool
}

// followEvents reads the event stream until ctx ends, waking the poll loop
// on each event no older than createdAt, and reconnects every poll interval
// while the stream is down, unless the server refuses it.
func (w *rolloutWatch) followEvents(ctx context.Context, createdAt time.Time) {
	since := int64(0)
	for {
		err := w.c.StreamEvents(ctx, since, func(e api.Event) error {
			since = e.Seq
			if e.Time.Before(createdAt) {
				return nil // the replay of the log before the rollout
			}
			w.streamUp.Store(true)
			select {
			case w.wake <- struct{}{}:
			default:
			}
			return nil
		})
		w.streamUp.Store(false)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the server closed it")
		}
		select {
		case w.lost <- err:
		default:
		}
		var se *api.StatusError
		if errors.As(err, &se) && se.Status < 500 {
			return // the server refuses the stream: poll only
		}
		t := time.NewTimer(w.g.env.pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// poll re-reads the rollout whenever an event or the poll timer says so,
// shows each new state and returns once verdict says the watch is done.
func (w *rolloutWatch) poll(ctx context.Context, r api.Rollout) error {
	noted := false
	for {
		read, err := w.waitForChange(ctx, r, &noted)
		if err != nil {
			return err
		}
		if !read {
			continue
		}
		next, ok, err := w.read(ctx)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		r = next
		if err := w.view.show(r); err != nil {
			return err
		}
		if done, err := verdict(r, w.untilPromotion); done {
			return w.view.end(r, err)
		}
	}
}

// waitForChange waits for an event or the poll interval (stretched by
// safetyPolls while the stream is up) and then says to read the rollout. A
// lost stream is noted once and waits again; the end of ctx is an error
// naming the state r was last seen in.
func (w *rolloutWatch) waitForChange(ctx context.Context, r api.Rollout, noted *bool) (bool, error) {
	interval := w.g.env.pollInterval
	if w.streamUp.Load() {
		interval *= safetyPolls
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, fmt.Errorf("rollout %s: stopped watching while it is %s; the rollout goes on", w.id, r.State)
	case err := <-w.lost:
		if !*noted {
			w.g.note("note: event stream: %v; polling every %s", err, w.g.env.pollInterval)
			*noted = true
		}
		return false, nil
	case <-w.wake:
	case <-t.C:
	}
	return true, nil
}

// read fetches the rollout; ok is false when the read should be retried on
// the next wake (ctx ended, which the wait reports, or a transport error,
// which is noted). An answer of the server refusing it is the error.
func (w *rolloutWatch) read(ctx context.Context) (api.Rollout, bool, error) {
	next, err := w.c.Rollout(ctx, w.id)
	var se *api.StatusError
	switch {
	case ctx.Err() != nil:
		return next, false, nil // reported by the next wait
	case errors.As(err, &se):
		return next, false, w.g.apiError("rollout "+w.id, err, seeRollouts)
	case err != nil:
		w.g.note("rollout %s: %v; retrying", w.id, err)
		return next, false, nil
	}
	return next, true, nil
}

// watchView prints the successive states of a rollout: as JSON lines, as a
// view redrawn in place on a terminal, or as a view once and then one line
// per change.
type watchView struct {
	g     *globals
	w     io.Writer
	json  bool
	tty   bool
	width int

	drawn    int    // lines of the last frame on a terminal
	lastJSON []byte // the last JSON line printed
	last     *api.Rollout
}

func (g *globals) newWatchView() *watchView {
	v := &watchView{g: g, w: g.stdout, json: g.jsonOut}
	if !v.json && g.env.terminal != nil {
		v.tty, v.width = g.env.terminal(g.stdout)
	}
	return v
}

func (v *watchView) show(r api.Rollout) error {
	now, loc := v.g.env.now(), v.g.env.loc
	switch {
	case v.json:
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if string(b) == string(v.lastJSON) {
			return nil
		}
		v.lastJSON = b
		_, err = fmt.Fprintf(v.w, "%s\n", b)
		return err
	case v.tty:
		lines := rolloutView(r, now, loc)
		var b strings.Builder
		if v.drawn > 0 {
			fmt.Fprintf(&b, "\x1b[%dA\x1b[J", v.drawn) // up to the frame's start, clear below
		}
		for _, l := range lines {
			b.WriteString(truncate(l, v.width-1) + "\n")
		}
		v.drawn = len(lines)
		_, err := io.WriteString(v.w, b.String())
		return err
	case v.last == nil:
		lines := rolloutView(r, now, loc)
		v.last = &r
		_, err := io.WriteString(v.w, strings.Join(lines, "\n")+"\n")
		return err
	}
	lines := changes(*v.last, r)
	v.last = &r
	stamp := now.In(loc).Format(time.TimeOnly)
	for _, l := range lines {
		if _, err := fmt.Fprintf(v.w, "%s  %s\n", stamp, l); err != nil {
			return err
		}
	}
	return nil
}

// end closes the view with the outcome and returns err.
func (v *watchView) end(r api.Rollout, err error) error {
	if v.json || err != nil {
		return err
	}
	healthy, total := 0, 0
	for _, w := range r.Waves {
		for _, n := range w.Nodes {
			total++
			if n.State == api.RolloutNodeHealthy {
				healthy++
			}
		}
	}
	_, werr := fmt.Fprintf(v.w, "rollout %s succeeded: %d of %s healthy in %s\n", r.ID, healthy, plural(total, "node"), plural(len(r.Waves), "wave"))
	return werr
}

// changes lists, as lines, what changed from a to b: the nodes and the
// waves, then the rollout's state, which follows from them; first, though,
// when an operator (or the queue) made it go on.
func changes(a, b api.Rollout) []string {
	var state []string
	if a.State != b.State || a.Reason != b.Reason {
		l := fmt.Sprintf("rollout %s: %s → %s", b.ID, a.State, stateString(b))
		if a.State == b.State {
			l = fmt.Sprintf("rollout %s: %s", b.ID, stateString(b))
		}
		if b.Reason != "" {
			l += ": " + b.Reason
		}
		state = append(state, l)
	}
	switch a.State {
	case api.RolloutAwaiting, api.RolloutHeld, api.RolloutPaused, api.RolloutQueued, api.RolloutWaiting:
		return append(state, waveChanges(a, b)...)
	}
	return append(waveChanges(a, b), state...)
}

// waveChanges lists the changes of b's nodes and waves since a.
func waveChanges(a, b api.Rollout) []string {
	if len(a.Waves) != len(b.Waves) {
		return []string{fmt.Sprintf("rollout %s: now %d waves", b.ID, len(b.Waves))}
	}
	var out []string
	for i, wb := range b.Waves {
		wa := a.Waves[i]
		before := map[string]api.RolloutNode{}
		for _, n := range wa.Nodes {
			before[n.Name] = n
		}
		for _, n := range wb.Nodes {
			old, ok := before[n.Name]
			if ok && old.State == n.State && old.Reason == n.Reason {
				continue
			}
			from := "new"
			if ok {
				from = old.State
			}
			l := fmt.Sprintf("%s  %s: %s → %s", wb.Name, n.Name, from, n.State)
			if n.Reason != "" {
				l += ": " + n.Reason
			}
			out = append(out, l)
		}
		if wa.State != wb.State {
			healthy := 0
			for _, n := range wb.Nodes {
				if n.State == api.RolloutNodeHealthy {
					healthy++
				}
			}
			out = append(out, fmt.Sprintf("%s: %s → %s %s %d/%d healthy", wb.Name, wa.State, wb.State, bar(healthy, len(wb.Nodes)), healthy, len(wb.Nodes)))
		}
	}
	return out
}

// truncate cuts s to width runes (0 or less: no limit), marking the cut.
func truncate(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}
