package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
)

type auditFixture struct {
	st  store.Store
	reg *registry.Registry
	now time.Time
}

func newAuditFixture(t *testing.T, cfg registry.AuditConfig) *auditFixture {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &auditFixture{st: st, now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	f.reg = registry.New(st, noBlobs{}, registry.Config{Now: func() time.Time { return f.now }, Audit: cfg}, zerolog.Nop())
	return f
}

func (f *auditFixture) events(t *testing.T) []api.Event {
	t.Helper()
	evs, err := f.reg.Events(context.Background(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (f *auditFixture) audit(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if err := f.reg.Audit(context.Background(), "token:test", "test.event", fmt.Sprint(i), ""); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEventsPages: Events reads pages by Seq: strictly increasing, since
// exclusive, limit honoured, the same events whichever page size.
func TestEventsPages(t *testing.T) {
	f := newAuditFixture(t, registry.AuditConfig{})
	f.audit(t, 25)
	all := f.events(t)
	if len(all) != 25 || all[0].Seq != 1 {
		t.Fatalf("%d events starting at %d, want 25 from 1", len(all), all[0].Seq)
	}
	for _, limit := range []int{1, 7, 25, 100} {
		var got []api.Event
		since := int64(0)
		for {
			page, err := f.reg.Events(context.Background(), since, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			since = page[len(page)-1].Seq
		}
		if len(got) != len(all) {
			t.Fatalf("limit %d: paged %d events, want %d", limit, len(got), len(all))
		}
		for i := range got {
			if got[i].Seq != all[i].Seq || got[i].Target != all[i].Target || (i > 0 && got[i].Seq <= got[i-1].Seq) {
				t.Fatalf("limit %d: event %d is %+v, want %+v", limit, i, got[i], all[i])
			}
		}
	}
	for _, tt := range []struct {
		since int64
		limit int
		want  int
	}{{-5, 3, 3}, {24, 10, 1}, {25, 10, 0}, {1 << 62, 10, 0}, {0, 0, 0}} {
		if evs, err := f.reg.Events(context.Background(), tt.since, tt.limit); err != nil || len(evs) != tt.want {
			t.Errorf("Events(%d, %d) = %d events, %v; want %d", tt.since, tt.limit, len(evs), err, tt.want)
		}
	}
}

// TestRefusedAggregates: a flood of refusals with huge paths becomes one
// event per (source, actor, reason) at once plus one count per window,
// each with a short printable target.
func TestRefusedAggregates(t *testing.T) {
	f := newAuditFixture(t, registry.AuditConfig{RefusalWindow: time.Minute})
	ctx := context.Background()
	huge := "GET /v1/nodes/" + strings.Repeat("a\x00\n\xff", 900<<10/4)
	for i := range 1000 {
		for _, rf := range []registry.Refusal{
			{Source: "192.0.2.1", Actor: "anonymous", Reason: "missing bearer token", Path: huge},
			{Source: "192.0.2.2", Actor: "anonymous", Reason: "missing bearer token", Path: fmt.Sprintf("GET /v1/x/%d", i)},
		} {
			if err := f.reg.Refused(ctx, rf); err != nil {
				t.Fatal(err)
			}
		}
	}
	if evs := f.events(t); len(evs) != 2 {
		t.Fatalf("%d events during the window, want 2 (the first of each source)", len(evs))
	}
	if err := f.reg.FlushRefusals(ctx); err != nil {
		t.Fatal(err)
	}
	evs := f.events(t)
	if len(evs) != 4 {
		t.Fatalf("%d events after the window, want 4", len(evs))
	}
	for _, e := range evs {
		if len(e.Target) > 128 || !utf8.ValidString(e.Target) || strings.ContainsAny(e.Target, "\x00\n") {
			t.Errorf("target %q: want at most 128 printable bytes", e.Target)
		}
	}
	if d := evs[2].Detail; d != "missing bearer token from 192.0.2.1: 999 more refused in 1m0s (the last shown)" {
		t.Errorf("count event detail %q", d)
	}
	if d := evs[3].Target; d != "GET /v1/x/999" {
		t.Errorf("count event target %q, want the last refusal's path", d)
	}
	// A new window writes the first refusal at once again; a quiet window
	// writes nothing.
	if err := f.reg.FlushRefusals(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Refused(ctx, registry.Refusal{Source: "192.0.2.1", Actor: "anonymous", Reason: "missing bearer token", Path: "GET /"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.events(t)); n != 5 {
		t.Errorf("%d events, want 5", n)
	}
}

// TestRefusedManySources: past the aggregation's key limit, new sources
// share one key per reason, so memory and events stay bounded.
func TestRefusedManySources(t *testing.T) {
	f := newAuditFixture(t, registry.AuditConfig{RefusalWindow: time.Minute})
	ctx := context.Background()
	for i := range 3000 {
		rf := registry.Refusal{Source: fmt.Sprintf("10.0.%d.%d", i/256, i%256), Actor: "anonymous", Reason: "unknown bearer token", Path: "GET /v1/nodes"}
		if err := f.reg.Refused(ctx, rf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.reg.FlushRefusals(ctx); err != nil {
		t.Fatal(err)
	}
	evs := f.events(t)
	if len(evs) != 1024+1+1 {
		t.Fatalf("%d events, want 1026 (1024 sources, the first of the rest, their count)", len(evs))
	}
	if last := evs[len(evs)-1].Detail; !strings.Contains(last, "from (many): 1975 more") {
		t.Errorf("last event %q, want the count of the other sources", last)
	}
}

func TestPruneEvents(t *testing.T) {
	f := newAuditFixture(t, registry.AuditConfig{MaxEvents: 10, MaxAge: time.Hour})
	ctx := context.Background()
	f.audit(t, 5) // old
	f.now = f.now.Add(2 * time.Hour)
	f.audit(t, 20)
	n, err := f.reg.PruneEvents(ctx)
	if err != nil || n != 15 {
		t.Fatalf("PruneEvents = %d, %v; want 15", n, err)
	}
	evs := f.events(t)
	if len(evs) != 10 || evs[0].Target != "10" || evs[9].Seq != 25 {
		t.Fatalf("kept %d events from %q to seq %d, want the 10 newest (targets 10..19, seq 16..25)", len(evs), evs[0].Target, evs[len(evs)-1].Seq)
	}
	f.now = f.now.Add(2 * time.Hour)
	f.audit(t, 1)
	if n, err := f.reg.PruneEvents(ctx); err != nil || n != 10 {
		t.Fatalf("age prune = %d, %v; want 10", n, err)
	}
	evs = f.events(t)
	if len(evs) != 1 || evs[0].Seq != 26 {
		t.Fatalf("after age prune: %+v, want only seq 26 (numbers never reused)", evs)
	}
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"GET /v1/nodes/web-1", 128, "GET /v1/nodes/web-1"},
		{"a\x00b\nc\\", 128, `a\x00b\nc\\`},
		{"a\xffb", 128, `a\xffb`},
		{"zero\u200bwidth", 128, `zero\u200bwidth`},
		{"ключ", 128, "ключ"},
		{strings.Repeat("x", 200), 10, "xxxxxxx…"},
		{strings.Repeat("x", 10), 10, "xxxxxxxxxx"},
		{"ключключ", 10, "клю…"},
		{strings.Repeat("\x00", 10), 10, `\x00…`},
	} {
		got := registry.Printable(tt.in, tt.n)
		if got != tt.want || len(got) > tt.n {
			t.Errorf("Printable(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// TestEventsAfterUpgrade: a log written with the old event counter keeps
// its numbers, and new events are numbered above them.
func TestEventsAfterUpgrade(t *testing.T) {
	f := newAuditFixture(t, registry.AuditConfig{})
	ctx := context.Background()
	if _, err := f.st.Put(ctx, "events/00000000000000000007", []byte(`{"seq":7,"time":"2026-11-01T00:00:00Z","actor":"token:ci","action":"release.create"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Put(ctx, "counters/event", []byte("7")); err != nil {
		t.Fatal(err)
	}
	f.audit(t, 2)
	evs := f.events(t)
	if len(evs) != 3 || evs[0].Seq != 7 || evs[0].Action != "release.create" || evs[1].Seq <= 7 || evs[2].Seq <= evs[1].Seq {
		t.Fatalf("events after the upgrade: %+v, want seq 7 then two above it", evs)
	}
}
