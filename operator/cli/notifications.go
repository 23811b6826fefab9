package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/humanize"
)

func (g *globals) notificationsCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "notifications",
		Short: "Show the webhook notifications of rollouts ([[notify]]) and their delivery, newest first",
		Long: `Show the notifications the server owes or owed its [[notify]] webhooks,
newest first: pending ones with their attempts and when they are tried
next (and why the last attempt failed), delivered ones, and failed ones
(given up after max_attempts).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 || limit > 1000 {
				return errors.New("--limit: want 1 to 1000 (0: the server's default)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ns, err := c.Notifications(cmd.Context(), limit)
			if err != nil {
				return g.apiError("notifications", err, "")
			}
			if ns == nil {
				ns = []api.Notification{}
			}
			if g.jsonOut {
				return g.writeJSON(ns)
			}
			if len(ns) == 0 {
				fmt.Fprintln(g.stdout, "no notifications (webhooks are configured with [[notify]] in server.toml)")
				return nil
			}
			now := g.env.now()
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "ID\tWEBHOOK\tKIND\tROLLOUT\tDELIVERY\tATTEMPTS\tAGE\tNOTE")
			for _, n := range ns {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.ID, n.Notifier, n.Kind, n.Rollout, n.Delivery, n.Attempts,
					humanize.Ago(now, n.Time), deliveryNote(n, now))
			}
			return tw.Flush()
		},
	}
	c.Flags().IntVar(&limit, "limit", 0, "show at most N (default: the server's, 100)")
	return c
}

// deliveryNote says what is next for a pending notification, or why one
// failed.
func deliveryNote(n api.Notification, now time.Time) string {
	switch n.Delivery {
	case api.DeliveryPending:
		s := "tried " + humanize.In(now, n.NextAttempt)
		if n.LastError != "" {
			s += "; last: " + n.LastError
		}
		return s
	case api.DeliveryFailed:
		return n.LastError
	}
	return "delivered " + humanize.Ago(now, n.DeliveredAt)
}
