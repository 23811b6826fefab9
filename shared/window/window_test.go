package window

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "want DAYS HH:MM-HH:MM ZONE"},
		{"Mon-Fri 02:00-05:00", "no time zone"},
		{"Mon-Fri 02:00-05:00 Europe/Berln", `unknown time zone "Europe/Berln"`},
		{"Mon-Fri 02:00-05:00 Local", `time zone "Local"`},
		{"Mon-Fri 02:00-05:00 ../../etc/passwd", "unknown time zone"},
		{"Mo-Fri 02:00-05:00 UTC", `day "Mo"`},
		{"Mon-Fr 02:00-05:00 UTC", `day "Fr"`},
		{"Mon, 02:00-05:00 UTC", `day ""`},
		{"Mon 2:00-05:00 UTC", `time "2:00"`},
		{"Mon 02:00 UTC", `times "02:00"`},
		{"Mon 24:00-05:00 UTC", `time "24:00": want 00:00 to 23:59`},
		{"Mon 02:60-05:00 UTC", `time "02:60"`},
		{"Mon 02:00-24:01 UTC", `time "24:01"`},
		{"Mon -1:00-05:00 UTC", `time ""`},
		{"Mon +1:00-05:00 UTC", `time "+1:00"`},
		{"Mon 03:00-03:00 UTC", "empty"},
		{"Mon 03:00-04:00 UTC extra", "want DAYS"},
		{strings.Repeat("x", 201), "longer than 200"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrSyntax) && !strings.Contains(err.Error(), "window") {
				t.Fatalf("Parse(%q) = %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestParseSetNamesIndex(t *testing.T) {
	_, err := ParseSet([]string{"Mon 01:00-02:00 UTC", "Tue 01:00-02:00 Mars/Olympus"})
	if err == nil || !strings.Contains(err.Error(), `[1]: window "Tue 01:00-02:00 Mars/Olympus": unknown time zone "Mars/Olympus"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestContains(t *testing.T) {
	for _, tc := range []struct {
		window string
		at     string
		want   bool
	}{
		// 2026-12-07 is a Monday. Berlin is UTC+1 in winter.
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-07T01:00:00Z", true},  // 02:00 Berlin: start included
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-07T00:59:59Z", false}, // 01:59:59 Berlin
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-07T03:59:59Z", true},
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-07T04:00:00Z", false}, // 05:00 Berlin: end excluded
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-06T02:00:00Z", false}, // Sunday
		{"Mon-Fri 02:00-05:00 Europe/Berlin", "2026-12-12T02:00:00Z", false}, // Saturday
		{"mon-fri 02:00-05:00 UTC", "2026-12-11T02:00:00Z", true},            // Friday, lower case
		// Crossing midnight: starts Friday 22:00, ends Saturday 02:00.
		{"Fri 22:00-02:00 UTC", "2026-12-11T21:59:00Z", false},
		{"Fri 22:00-02:00 UTC", "2026-12-11T22:00:00Z", true},
		{"Fri 22:00-02:00 UTC", "2026-12-12T01:59:00Z", true}, // Saturday, still Friday's window
		{"Fri 22:00-02:00 UTC", "2026-12-12T02:00:00Z", false},
		{"Fri 22:00-02:00 UTC", "2026-12-12T22:30:00Z", false}, // Saturday night: not a start day
		{"Fri 22:00-02:00 UTC", "2026-12-10T23:00:00Z", false}, // Thursday night
		// Wrapping day range and lists.
		{"Fri-Mon 10:00-11:00 UTC", "2026-12-13T10:30:00Z", true},  // Sunday
		{"Fri-Mon 10:00-11:00 UTC", "2026-12-09T10:30:00Z", false}, // Wednesday
		{"Tue,Thu 10:00-11:00 UTC", "2026-12-10T10:30:00Z", true},
		{"Tue,Thu 10:00-11:00 UTC", "2026-12-09T10:30:00Z", false},
		{"* 00:00-24:00 UTC", "2026-12-09T23:59:59Z", true},
		{"* 23:00-01:00 Asia/Tokyo", "2026-12-09T15:30:00Z", true}, // 00:30 Tokyo
		// DST, spring forward (Berlin 2026-03-29, 02:00 CET → 03:00 CEST):
		// 02:00 does not exist; the window opens at 03:00 CEST (01:00Z) and
		// ends at 05:00 CEST (03:00Z): two hours that night.
		{"Sun 02:00-05:00 Europe/Berlin", "2026-03-29T00:59:59Z", false},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-03-29T01:00:00Z", true},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-03-29T02:59:59Z", true},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-03-29T03:00:00Z", false},
		// DST, fall back (Berlin 2026-10-25, 03:00 CEST → 02:00 CET): the
		// window opens at the first 02:00 (00:00Z) and ends at 05:00 CET
		// (04:00Z): four hours that night.
		{"Sun 02:00-05:00 Europe/Berlin", "2026-10-24T23:59:59Z", false},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-10-25T00:00:00Z", true},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-10-25T03:59:59Z", true},
		{"Sun 02:00-05:00 Europe/Berlin", "2026-10-25T04:00:00Z", false},
		// Crossing midnight across the fall-back night (Sat 23:00 CEST → Sun
		// 03:00 CET = 21:00Z → 02:00Z: five hours).
		{"Sat 23:00-03:00 Europe/Berlin", "2026-10-24T21:00:00Z", true},
		{"Sat 23:00-03:00 Europe/Berlin", "2026-10-25T01:59:59Z", true},
		{"Sat 23:00-03:00 Europe/Berlin", "2026-10-25T02:00:00Z", false},
	} {
		t.Run(tc.window+"@"+tc.at, func(t *testing.T) {
			w, err := Parse(tc.window)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Contains(at(t, tc.at)); got != tc.want {
				t.Fatalf("Contains(%s) = %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

func TestNextOpen(t *testing.T) {
	for _, tc := range []struct {
		windows []string
		at      string
		want    string
	}{
		{[]string{"Mon-Fri 02:00-05:00 Europe/Berlin"}, "2026-12-07T02:00:00Z", "2026-12-07T02:00:00Z"}, // open: now
		{[]string{"Mon-Fri 02:00-05:00 Europe/Berlin"}, "2026-12-07T09:00:00Z", "2026-12-08T01:00:00Z"},
		{[]string{"Mon-Fri 02:00-05:00 Europe/Berlin"}, "2026-12-11T09:00:00Z", "2026-12-14T01:00:00Z"}, // Friday → Monday
		{[]string{"Sat 01:00-02:00 UTC", "Wed 01:00-02:00 UTC"}, "2026-12-07T09:00:00Z", "2026-12-09T01:00:00Z"},
		{nil, "2026-12-07T09:00:00Z", "2026-12-07T09:00:00Z"},                                       // no windows: always open
		{[]string{"Sun 02:00-05:00 Europe/Berlin"}, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"}, // DST gap
	} {
		s, err := ParseSet(tc.windows)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.NextOpen(at(t, tc.at)); !got.Equal(at(t, tc.want)) {
			t.Errorf("%v NextOpen(%s) = %s, want %s", tc.windows, tc.at, got.UTC().Format(time.RFC3339), tc.want)
		}
	}
}

func TestNextOpenAll(t *testing.T) {
	must := func(l ...string) Set {
		s, err := ParseSet(l)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		sets []Set
		at   string
		want string // "" = never
	}{
		{"both open", []Set{must("* 00:00-24:00 UTC"), must("Mon 08:00-10:00 UTC")}, "2026-12-07T09:00:00Z", "2026-12-07T09:00:00Z"},
		{"overlap later", []Set{must("Mon-Fri 08:00-12:00 UTC"), must("* 11:00-13:00 UTC")}, "2026-12-07T07:00:00Z", "2026-12-07T11:00:00Z"},
		{"next day", []Set{must("Tue 08:00-09:00 UTC"), must("* 08:30-10:00 UTC")}, "2026-12-07T09:00:00Z", "2026-12-08T08:30:00Z"},
		{"never overlap", []Set{must("Mon 08:00-09:00 UTC"), must("Tue 08:00-09:00 UTC")}, "2026-12-07T10:00:00Z", ""},
		{"no sets", nil, "2026-12-07T10:00:00Z", "2026-12-07T10:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NextOpenAll(at(t, tc.at), tc.sets...)
			switch {
			case tc.want == "" && !got.IsZero():
				t.Fatalf("= %s, want none", got)
			case tc.want != "" && !got.Equal(at(t, tc.want)):
				t.Fatalf("= %s, want %s", got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}
