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
// said on a long-poll that it counts the fingerprint, nor when the report
// changed, nor once FullEvery intervals passed since the last post; an
// answer about an older report changes nothing; "unknown" asks for a post.
func TestSkipper(t *testing.T) {
	const interval = time.Minute
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	idle := api.Report{State: api.AgentIdle, Current: 3, Time: t0}
	at := func(r api.Report, d time.Duration) api.Report { r.Time = t0.Add(d); return r }
	var s Skipper
	if s.Header() != "" || s.Skip(idle, t0, interval) {
		t.Fatal("a report skipped, or a header, before any post")
	}
	s.Posted(idle, t0)
	if s.Skip(at(idle, interval), t0.Add(interval), interval) {
		t.Fatal("skipped before the server said it counts the fingerprint")
	}
	sent := s.Header()
	if post := s.Answer(sent, ""); post || s.Skip(at(idle, interval), t0.Add(interval), interval) {
		t.Fatal("an old server (no answer header): skipped or asked to post")
	}
	if post := s.Answer(sent, Seen); post {
		t.Fatal("seen asked for a post")
	}
	if !s.Skip(at(idle, interval), t0.Add(interval), interval) {
		t.Fatal("an unchanged report the server counts was not skipped")
	}
	if _, got, _ := Parse(s.Header()); !got.Equal(t0.Add(interval)) {
		t.Errorf("the header carries %v, want the skipped report's time", got)
	}
	changed := at(idle, 2*interval)
	changed.Units = []api.UnitReport{{Name: "web.service", Active: "failed"}}
	if s.Skip(changed, t0.Add(2*interval), interval) {
		t.Fatal("a changed report was skipped")
	}
	if s.Skip(at(idle, FullEvery*interval), t0.Add(FullEvery*interval), interval) {
		t.Fatal("skipped although FullEvery intervals passed since the last post")
	}
	// A server that answers the header holds what was posted since.
	s.Posted(changed, t0.Add(2*interval))
	if !s.Skip(at(changed, 3*interval), t0.Add(3*interval), interval) {
		t.Fatal("a report posted to a server that counts fingerprints, then unchanged, was not skipped")
	}
	if post := s.Answer(s.Header(), Unknown); !post || s.Skip(at(changed, 4*interval), t0.Add(4*interval), interval) {
		t.Fatal("unknown: no post asked, or a report skipped")
	}
	// An old server (no answer header): a new post is not counted.
	s.Answer(s.Header(), "")
	s.Posted(idle, t0.Add(5*interval))
	if s.Skip(at(idle, 6*interval), t0.Add(6*interval), interval) {
		t.Fatal("skipped after a post to a server that stopped answering the header")
	}
	// An answer about an older report says nothing of the new one.
	old := s.Header()
	s.Posted(changed, t0.Add(7*interval))
	if s.Answer(old, Seen); s.Skip(at(changed, 8*interval), t0.Add(8*interval), interval) {
		t.Fatal("an answer about the older report let the new one be skipped")
	}
}
