package fleetsim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// Profile is a CPU profile of the server and its top functions.
type Profile struct {
	Label string
	Path  string
	Flat  string // go tool pprof -top -nodecount=10
	Cum   string // the same by cumulative time
	Err   string
}

// top fills Flat and Cum with `go tool pprof`'s top 10.
func (p *Profile) top() {
	var errs []string
	for _, v := range []struct {
		dst  *string
		args []string
	}{{&p.Flat, nil}, {&p.Cum, []string{"-cum"}}} {
		args := append([]string{"tool", "pprof", "-top", "-nodecount=10"}, v.args...)
		out, err := exec.Command("go", append(args, p.Path)...).Output()
		if err != nil {
			errs = append(errs, fmt.Sprintf("go tool pprof: %v", err))
			continue
		}
		*v.dst = pprofTable(string(out))
	}
	p.Err = strings.Join(errs, "; ")
}

// pprofTable keeps pprof's summary line and table, without the file and
// build header lines.
func pprofTable(out string) string {
	var keep []string
	on := false
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.HasPrefix(l, "Showing nodes") || strings.HasPrefix(l, "Duration:") {
			on = true
		}
		if on {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// LogSummary counts the server's log lines by level and its most frequent
// warnings and errors.
type LogSummary struct {
	Levels map[string]int
	Top    []LogLine // warn and above, most frequent first, a few
}

// LogLine is one distinct message and how often it was logged.
type LogLine struct {
	Level, Message, Error string
	Count                 int
}

// summariseLog reads the server's JSON log (zerolog: level, message,
// error).
func summariseLog(path string) LogSummary {
	s := LogSummary{Levels: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return s
	}
	defer f.Close()
	count := map[LogLine]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct{ Level, Message, Error string }
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			s.Levels["unparsed"]++
			continue
		}
		s.Levels[l.Level]++
		if l.Level != "debug" && l.Level != "info" {
			count[LogLine{Level: l.Level, Message: digits.ReplaceAllString(l.Message, "N"), Error: truncate(digits.ReplaceAllString(l.Error, "N"), 160)}]++
		}
	}
	for l, n := range count {
		l.Count = n
		s.Top = append(s.Top, l)
	}
	slices.SortFunc(s.Top, func(a, b LogLine) int { return b.Count - a.Count })
	if len(s.Top) > 5 {
		s.Top = s.Top[:5]
	}
	return s
}

// digits are replaced by N to group log lines that differ only in
// numbers (node names, revisions).
var digits = regexp.MustCompile(`[0-9]+`)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
