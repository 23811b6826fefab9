package confirmwait

import (
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	w := New(t0, t0.Add(30*time.Second), 5*time.Minute)
	if !w.End().Equal(t0.Add(30*time.Second)) || w.Overloaded() || w.Bound() != 5*time.Minute {
		t.Fatalf("fresh: end %v overloaded %v bound %v", w.End(), w.Overloaded(), w.Bound())
	}
	// An overload answer at 25 s asking for 10 s: reachable until a window
	// after the next attempt (25+10+30 = 65 s).
	if wait := w.Overload(t0.Add(25*time.Second), time.Second, time.Second, 10*time.Second); wait != 10*time.Second {
		t.Fatalf("wait %v, want Retry-After 10s", wait)
	}
	if !w.End().Equal(t0.Add(65*time.Second)) || !w.Overloaded() {
		t.Fatalf("after an overload: end %v overloaded %v", w.End(), w.Overloaded())
	}
	// Never beyond the overload bound.
	w.Overload(t0.Add(290*time.Second), time.Second, time.Second, 10*time.Second)
	if !w.End().Equal(t0.Add(5 * time.Minute)) {
		t.Fatalf("end %v, want the bound", w.End())
	}
	// A bound shorter than the window is raised to it.
	if b := New(t0, t0.Add(time.Minute), time.Second).Bound(); b != time.Minute {
		t.Fatalf("bound %v, want the window", b)
	}
}

func TestBackoffDoublesAndResets(t *testing.T) {
	t0 := time.Now()
	w := New(t0, t0.Add(time.Hour), 2*time.Hour)
	var waits []time.Duration
	for range 4 {
		waits = append(waits, w.Overload(t0, time.Second, 4*time.Second, 0))
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if waits[i] < want-want/10 || waits[i] > want+want/10 {
			t.Errorf("wait %d = %v, want %v ±10%%", i, waits[i], want)
		}
	}
	w.Answered()
	if got := w.Overload(t0, time.Second, 4*time.Second, 0); got > 1100*time.Millisecond {
		t.Errorf("after an answer the backoff starts again: %v", got)
	}
}

func TestAttemptEnd(t *testing.T) {
	now := time.Unix(1000, 0)
	end := now.Add(30 * time.Second)
	for _, tt := range []struct {
		name    string
		timeout time.Duration
		end     time.Time
		want    time.Duration
	}{
		{"half the window left", time.Minute, end, 15 * time.Second},
		{"the request timeout first", 10 * time.Second, end, 10 * time.Second},
		{"an extended (overload) end", 30 * time.Second, now.Add(5 * time.Minute), 30 * time.Second},
		{"the end passed", time.Minute, now.Add(-time.Second), -time.Second},
	} {
		if got := AttemptEnd(now, tt.end, tt.timeout).Sub(now); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
