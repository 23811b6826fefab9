package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/slipway-dev/slipway/shared/humanize"
)

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// generationString is "#N shortid", "-" for none.
func generationString(n int, id string) string {
	switch {
	case id == "" && n == 0:
		return "-"
	case n == 0:
		return humanize.ShortID(id)
	}
	return fmt.Sprintf("#%d %s", n, humanize.ShortID(id))
}

// until humanises the time to t: "in 23h59m".
func until(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "already passed"
	}
	return "in " + durationString(d)
}

// durationString is d in whole seconds without zero parts: "24h", "1h30m",
// "10m", "45s".
func durationString(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	return b.String()
}

// timeString is an absolute time in loc, "never" for the zero time.
func timeString(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(loc).Format("2006-01-02 15:04:05 MST")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
