package window

import (
	"testing"
	"time"
)

// FuzzParse: whatever Parse accepts prints as text that parses to the same
// window, and evaluating it never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"Mon-Fri 02:00-05:00 Europe/Berlin", "* 00:00-24:00 UTC", "Fri 22:00-02:00 UTC",
		"fri-mon,wed 23:59-00:01 Asia/Tokyo", "Mon 02:00-05:00", "Mon 24:00-01:00 UTC", "Mon,,Tue 01:00-02:00 UTC"} {
		f.Add(s, int64(1796600000))
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		w, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(w.String())
		if err != nil {
			t.Fatalf("%q → %q: %v", s, w.String(), err)
		}
		if again.days != w.days || again.start != w.start || again.end != w.end || again.loc.String() != w.loc.String() || again.String() != w.String() {
			t.Fatalf("%q → %q → %+v, want %+v", s, w.String(), again, w)
		}
		at := time.Unix(unix%(400*365*86400), 0)
		next := Set{w}.NextOpen(at)
		if next.IsZero() || next.Before(at) || !w.Contains(next) && !next.Equal(at) {
			t.Fatalf("%q NextOpen(%s) = %s", s, at, next)
		}
	})
}
