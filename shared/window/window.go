// Package window parses and evaluates maintenance windows: recurring
// spans of wall-clock time in a named time zone, written
//
//	DAYS HH:MM-HH:MM ZONE        e.g. "Mon-Fri 02:00-05:00 Europe/Berlin"
//
// DAYS is "*" (every day) or a comma list of days and day ranges (Mon,
// Tue, …, Sun, case-insensitive; a range may wrap: "Fri-Mon"). DAYS names
// the day a window starts: one whose end is not after its start crosses
// midnight and ends the next day ("Fri 22:00-02:00 UTC" ends Saturday
// 02:00). The end may be 24:00. ZONE is an IANA zone name or UTC; "Local"
// is refused (it would depend on the machine). Times are wall-clock
// times in ZONE: across a DST change a window keeps its wall-clock
// bounds, so it lasts an hour more or less; a bound that does not exist
// that day (inside the spring-forward gap) moves forward by the gap.
//
// The zone database is embedded (time/tzdata), so a CLI and a server on
// machines without tzdata agree. It never reads a clock: callers pass
// the time.
package window

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // the same zones on every machine
)

// maxLen bounds a window's text; anything longer is a mistake.
const maxLen = 200

// Window is one parsed maintenance window.
type Window struct {
	days       [7]bool // by time.Weekday: the days it starts on
	start, end int     // minutes after midnight; end ≤ start: the next day
	loc        *time.Location
	text       string
}

// Set is a list of windows; it is open when any of them is.
type Set []Window

// ErrSyntax is wrapped by every error of Parse.
var ErrSyntax = errors.New("want DAYS HH:MM-HH:MM ZONE, e.g. \"Mon-Fri 02:00-05:00 Europe/Berlin\"")

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Parse parses one window. Its error names the part that is wrong.
func Parse(s string) (Window, error) {
	if len(s) > maxLen {
		return Window{}, fmt.Errorf("window: longer than %d characters: %w", maxLen, ErrSyntax)
	}
	f := strings.Fields(s)
	switch {
	case len(f) == 2:
		return Window{}, fmt.Errorf("window %q: no time zone (add UTC or a zone like Europe/Berlin): %w", s, ErrSyntax)
	case len(f) != 3:
		return Window{}, fmt.Errorf("window %q: %w", s, ErrSyntax)
	}
	var w Window
	var err error
	if w.days, err = parseDays(f[0]); err != nil {
		return Window{}, fmt.Errorf("window %q: %w", s, err)
	}
	if w.start, w.end, err = parseSpan(f[1]); err != nil {
		return Window{}, fmt.Errorf("window %q: %w", s, err)
	}
	if w.loc, err = parseZone(f[2]); err != nil {
		return Window{}, fmt.Errorf("window %q: %w", s, err)
	}
	w.text = strings.Join(f, " ")
	return w, nil
}

// ParseSet parses a list of windows; its error names each bad one by its
// index.
func ParseSet(list []string) (Set, error) {
	var errs []error
	out := make(Set, 0, len(list))
	for i, s := range list {
		w, err := Parse(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("[%d]: %w", i, err))
			continue
		}
		out = append(out, w)
	}
	return out, errors.Join(errs...)
}

func parseDays(s string) ([7]bool, error) {
	var days [7]bool
	if s == "*" {
		return [7]bool{true, true, true, true, true, true, true}, nil
	}
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, ok := dayNames[strings.ToLower(from)]
		if !ok {
			return days, fmt.Errorf("day %q: want Mon, Tue, Wed, Thu, Fri, Sat, Sun, a range such as Mon-Fri, or *", from)
		}
		b := a
		if isRange {
			if b, ok = dayNames[strings.ToLower(to)]; !ok {
				return days, fmt.Errorf("day %q: want Mon, Tue, Wed, Thu, Fri, Sat, Sun", to)
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			days[d] = true
			if d == b {
				break
			}
		}
	}
	return days, nil
}

func parseSpan(s string) (int, int, error) {
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("times %q: want HH:MM-HH:MM", s)
	}
	start, err := parseClock(from, false)
	if err != nil {
		return 0, 0, err
	}
	end, err := parseClock(to, true)
	if err != nil {
		return 0, 0, err
	}
	if start == end {
		return 0, 0, fmt.Errorf("times %q: the window is empty (start = end); use 00:00-24:00 for a whole day", s)
	}
	return start, end, nil
}

// parseClock parses HH:MM into minutes after midnight; 24:00 only as an
// end.
func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("time %q: want HH:MM (24-hour, e.g. 02:00)", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	switch {
	case err1 != nil || err2 != nil || h[0] == '+' || m[0] == '+' || h[0] == '-' || m[0] == '-':
		return 0, fmt.Errorf("time %q: want HH:MM (24-hour, e.g. 02:00)", s)
	case end && hh == 24 && mm == 0:
		return 24 * 60, nil
	case hh > 23 || mm > 59:
		return 0, fmt.Errorf("time %q: want 00:00 to 23:59 (24:00 only as an end)", s)
	}
	return hh*60 + mm, nil
}

func parseZone(s string) (*time.Location, error) {
	if s == "Local" || s == "" {
		return nil, fmt.Errorf("time zone %q: name a zone (UTC, Europe/Berlin): the server's local zone differs between machines", s)
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (want an IANA name such as UTC, Europe/Berlin, America/New_York)", s)
	}
	return loc, nil
}

// String is the window as written (fields separated by one space).
func (w Window) String() string { return w.text }

// span is the window's occurrence that starts on the calendar day of
// (y, m, d) in its zone.
func (w Window) span(y int, m time.Month, d int) (time.Time, time.Time) {
	s := wall(y, m, d, w.start, w.loc)
	if w.end > w.start {
		return s, wall(y, m, d, w.end, w.loc)
	}
	return s, wall(y, m, d+1, w.end, w.loc)
}

// wall is the instant of a wall-clock time in loc: for a time that occurs
// twice (the hour repeated when clocks go back) the first of them, which
// time.Date does not promise; for one that does not occur (the gap when
// clocks go forward) time.Date's: moved forward by the gap.
func wall(y int, m time.Month, d, minutes int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, minutes/60, minutes%60, 0, 0, loc)
	_, before := t.Add(-6 * time.Hour).Zone()
	_, now := t.Zone()
	if before <= now {
		return t
	}
	earlier := t.Add(-time.Duration(before-now) * time.Second)
	if e := earlier.In(loc); e.Hour() == t.Hour() && e.Minute() == t.Minute() && e.Day() == t.Day() {
		return earlier
	}
	return t
}

// Contains reports whether t is inside an occurrence of w (start
// included, end excluded).
func (w Window) Contains(t time.Time) bool {
	lt := t.In(w.loc)
	for off := -1; off <= 0; off++ {
		day := time.Date(lt.Year(), lt.Month(), lt.Day()+off, 12, 0, 0, 0, w.loc)
		if !w.days[day.Weekday()] {
			continue
		}
		s, e := w.span(day.Year(), day.Month(), day.Day())
		if !t.Before(s) && t.Before(e) {
			return true
		}
	}
	return false
}

// nextStart is the first start of w after t (zero if none within 8 days:
// only for a window without days, which Parse never returns).
func (w Window) nextStart(t time.Time) time.Time {
	lt := t.In(w.loc)
	for off := 0; off <= 8; off++ {
		day := time.Date(lt.Year(), lt.Month(), lt.Day()+off, 12, 0, 0, 0, w.loc)
		if !w.days[day.Weekday()] {
			continue
		}
		if s, _ := w.span(day.Year(), day.Month(), day.Day()); s.After(t) {
			return s
		}
	}
	return time.Time{}
}

// Open reports whether t is inside one of the windows. An empty set is
// always open: no window configured means no restriction.
func (s Set) Open(t time.Time) bool {
	if len(s) == 0 {
		return true
	}
	for _, w := range s {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// NextOpen is t if s is open at t, else the next time one of its windows
// starts (zero if none does within 8 days, which cannot happen for a
// parsed set).
func (s Set) NextOpen(t time.Time) time.Time {
	if s.Open(t) {
		return t
	}
	var next time.Time
	for _, w := range s {
		if n := w.nextStart(t); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// String lists the windows, "; "-separated.
func (s Set) String() string {
	parts := make([]string, len(s))
	for i, w := range s {
		parts[i] = w.text
	}
	return strings.Join(parts, "; ")
}

// NextOpenAll is the first time at or after t when every set is open
// (empty sets are always open); zero if there is none within the next 15
// days (the sets never overlap: "Mon …" and "Tue …").
func NextOpenAll(t time.Time, sets ...Set) time.Time {
	limit := t.Add(15 * 24 * time.Hour)
	c := t
	for !c.IsZero() && c.Before(limit) {
		moved := false
		for _, s := range sets {
			n := s.NextOpen(c)
			if n.IsZero() {
				return time.Time{}
			}
			if !n.Equal(c) {
				c, moved = n, true
			}
		}
		if !moved {
			return c
		}
	}
	return time.Time{}
}
