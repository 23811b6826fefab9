package routinereport

import (
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

func TestParseFormat(t *testing.T) {
	fp := Print(api.Report{State: api.AgentIdle})
	at := time.Date(2026, 12, 7, 6, 0, 0, 123, time.UTC)
	gotFP, gotAt, err := Parse(Format(fp, at))
	if err != nil || gotFP != fp || !gotAt.Equal(at) {
		t.Fatalf("round trip: %x %v %v", gotFP, gotAt, err)
	}
	for _, bad := range []string{"", "abc", "zz 2026-12-07T06:00:00Z", Format(fp, at)[:64], Format(fp, at)[:64] + " yesterday", Format(fp, at)[2:]} {
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Format(Print(api.Report{}), time.Unix(0, 0)))
	f.Add("x y")
	f.Fuzz(func(t *testing.T, v string) {
		fp, at, err := Parse(v)
		if err != nil {
			return
		}
		if fp2, at2, err := Parse(Format(fp, at)); err != nil || fp2 != fp || !at2.Equal(at) {
			t.Fatalf("%q parsed, but its reformat does not: %v", v, err)
		}
	})
}

// TestSkipper: nothing is skipped before a post, nor before the server
// said it counts the fingerprint, nor when the report changed, nor when no
// long-poll carried the fingerprint within the interval, nor once
// FullEvery intervals passed since the last post; an answer about an older
// report changes nothing; "unknown" asks for a post; a post answered
// "seen" counts at once.
func TestSkipper(t *testing.T) {
	const interval = time.Minute
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	idle := api.Report{State: api.AgentIdle, Current: 3, Time: t0}
	at := func(r api.Report, d time.Duration) api.Report { r.Time = t0.Add(d); return r }
	skip := func(s *Skipper, r api.Report, d time.Duration) bool { return s.Skip(at(r, d), t0.Add(d), interval) }
	carry := func(s *Skipper, d time.Duration) string { return s.Carry(t0.Add(d)) }
	changed := idle
	changed.Units = []api.UnitReport{{Name: "web.service", Active: "failed"}}
	steps := []struct {
		what string
		do   func(s *Skipper) bool // true: as expected
	}{
		{"no header and nothing skipped before a post", func(s *Skipper) bool { return carry(s, 0) == "" && !skip(s, idle, 0) }},
		{"not skipped before the server counts it", func(s *Skipper) bool { s.Posted(idle, t0, ""); return !skip(s, idle, time.Minute) }},
		{"an old server (no answer header): not skipped", func(s *Skipper) bool {
			return !s.Answer(carry(s, time.Minute), "") && !skip(s, idle, 90*time.Second)
		}},
		{"seen: an unchanged report is skipped", func(s *Skipper) bool {
			return !s.Answer(carry(s, time.Minute), Seen) && skip(s, idle, 90*time.Second)
		}},
		{"the next long-poll carries the skipped report's time", func(s *Skipper) bool {
			_, got, err := Parse(carry(s, 100*time.Second))
			return err == nil && got.Equal(t0.Add(90*time.Second))
		}},
		{"no long-poll within the interval: not skipped", func(s *Skipper) bool { return !skip(s, idle, 3*time.Minute) }},
		{"a changed report is not skipped", func(s *Skipper) bool { carry(s, 3*time.Minute); return !skip(s, changed, 190*time.Second) }},
		{"FullEvery intervals after the last post: not skipped", func(s *Skipper) bool {
			carry(s, 10*time.Minute)
			return !skip(s, idle, 10*time.Minute+10*time.Second)
		}},
		{"a post to a server that counts fingerprints counts at once", func(s *Skipper) bool {
			s.Posted(at(changed, 620*time.Second), t0.Add(620*time.Second), "")
			carry(s, 630*time.Second)
			return skip(s, changed, 640*time.Second)
		}},
		{"unknown asks for a post and stops skipping", func(s *Skipper) bool {
			return s.Answer(carry(s, 11*time.Minute), Unknown) && !skip(s, changed, 670*time.Second)
		}},
		{"after an old server's answer a new post is not counted", func(s *Skipper) bool {
			s.Answer(carry(s, 680*time.Second), "")
			s.Posted(at(idle, 690*time.Second), t0.Add(690*time.Second), "")
			carry(s, 700*time.Second)
			return !skip(s, idle, 710*time.Second)
		}},
		{"an answer about an older report says nothing of the new one", func(s *Skipper) bool {
			old := carry(s, 12*time.Minute)
			s.Posted(at(changed, 730*time.Second), t0.Add(730*time.Second), "")
			s.Answer(old, Seen)
			carry(s, 740*time.Second)
			return !skip(s, changed, 750*time.Second)
		}},
	}
	var s Skipper
	for _, st := range steps {
		if !st.do(&s) {
			t.Fatalf("%s: failed", st.what)
		}
	}
	var fresh Skipper
	fresh.Posted(idle, t0, Seen)
	carry(&fresh, 10*time.Second)
	if !skip(&fresh, idle, time.Minute) {
		t.Fatal("a post the server answered seen, then unchanged and carried, was not skipped")
	}
}
