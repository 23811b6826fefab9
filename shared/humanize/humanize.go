// Package humanize writes fleet values for people the same way in the
// CLI and the dashboard: short manifest IDs, label sets and ages. It only
// formats; it must never parse what it writes back.
package humanize

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ShortID is the first 12 hex digits of a "sha256-…" ID, "-" for none.
func ShortID(id string) string {
	if id == "" {
		return "-"
	}
	if hex, ok := strings.CutPrefix(id, "sha256-"); ok && len(hex) >= 12 {
		return hex[:12]
	}
	return id
}

// Labels is k=v pairs sorted by key, comma-joined, "-" for none.
func Labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// Ago is the time from t to now: "never", "just now", "12s ago", "5m
// ago", "3h ago", "2d ago".
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// In is the time from now to t, a time to come: "now", "in 12s", "in 5m",
// "in 3h", "in 2d" (a past t is "now").
func In(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh", int(d/time.Hour))
	}
	return fmt.Sprintf("in %dd", int(d/(24*time.Hour)))
}

// Bytes is a byte count in IEC units, rounded to one decimal: "512 B",
// "3.0 KiB", "12.3 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Limit is a byte limit written exactly, as error messages name it: "4
// MiB", "1 GiB", or "1000 bytes" when it is no whole MiB.
func Limit(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
