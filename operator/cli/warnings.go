package cli

import (
	"fmt"
	"io"

	"github.com/slipway-dev/slipway/shared/api"
)

// printWarnings lists, under the status table, the unit-file warnings
// (systemd-analyze verify on the node) of each node's current generation:
// the switch went on, but a unit may not do what its file says (a typo'd
// key is ignored by systemd).
func printWarnings(w io.Writer, nodes []api.Node) {
	header := false
	for _, n := range nodes {
		if n.Report == nil || len(n.Report.Warnings) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "unit-file warnings (systemd-analyze verify on the node):")
			header = true
		}
		for _, warn := range n.Report.Warnings {
			fmt.Fprintf(w, "  %s generation %d: %s\n", n.Name, n.Report.Current, warn)
		}
	}
}

// printReportWarnings adds the warnings of a report to `node show`'s table.
func printReportWarnings(tw io.Writer, r *api.Report) {
	for _, warn := range r.Warnings {
		fmt.Fprintf(tw, "  warning:\t%s\n", warn)
	}
}
