package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
)

func (g *globals) rolloutResumeCmd() *cobra.Command {
	var now bool
	c := &cobra.Command{
		Use:   "resume ID [--now]",
		Short: "Resume a paused rollout where it stood; --now starts its next wave outside the maintenance windows",
		Long: `Resume a paused rollout where it stood.

A rollout with maintenance windows (windows in slipway.toml's [strategy],
or the target group's in the server's config) starts a new wave only
inside them; outside, it is waiting-window. --now starts its next wave at
once, outside the windows: that wave only (later waves wait for their
windows again). The server audits it as rollout.resume.`,
		Example: `  slipway rollout resume ro12
  slipway rollout resume --now ro12`,
		Args:              exactArgs(1),
		ValidArgsFunction: g.completeRollouts,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := g.rolloutClient(id)
			if err != nil {
				return err
			}
			r, err := c.RolloutResume(cmd.Context(), id, api.RolloutResumeRequest{Now: now})
			if err != nil {
				return g.rolloutError("resume rollout "+id, id, err)
			}
			if g.jsonOut {
				return g.writeJSON(r)
			}
			fmt.Fprintf(g.stdout, "rollout %s: %s\n", r.ID, stateString(r))
			if now && r.WindowOverride > 0 && r.WindowOverride <= len(r.Waves) {
				fmt.Fprintf(g.stdout, "%s starts now, outside the maintenance windows; later waves wait for their windows\n", r.Waves[r.WindowOverride-1].Name)
			}
			if next := nextStep(r); next != "" {
				fmt.Fprintln(g.stdout, "next: "+next)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&now, "now", false, "start the next wave at once, outside the maintenance windows (that wave only; audited)")
	return c
}
