// Package confirmwait decides how long an agent keeps asking the server to
// confirm a switch before it reverts: slipway-agent's rule, shared with
// the fleet simulator so that the simulator reverts exactly when the real
// agent would.
//
// The confirm window (the manifest's confirm_timeout) bounds a server that
// does not answer. Overload answers (429, 5xx but 502/504) show the server
// reachable: each one keeps the confirm going until a full confirm window
// after the next attempt it asks for (Retry-After or backoff), never beyond
// the overload bound from the start (at least the window). A request that
// times out or a connection that fails is no answer.
package confirmwait

import (
	"math/rand/v2"
	"time"
)

// Wait is the state of one confirm.
type Wait struct {
	window      time.Duration // confirm_timeout
	windowEnd   time.Time     // start + window
	bound       time.Duration // max(window, the overload bound)
	overloadEnd time.Time     // start + bound
	reachable   time.Time     // zero: no overload answer yet; else last one + its wait + window
	overloads   int           // overload answers in a row
}

// New starts a confirm at now whose window ends at windowEnd and whose
// overload bound is bound (raised to the window if shorter).
func New(now, windowEnd time.Time, bound time.Duration) *Wait {
	w := windowEnd.Sub(now)
	b := max(w, bound)
	return &Wait{window: w, windowEnd: windowEnd, bound: b, overloadEnd: now.Add(b)}
}

// End is when the confirm gives up.
func (c *Wait) End() time.Time {
	e := c.windowEnd
	if c.reachable.After(e) {
		e = c.reachable
	}
	if e.After(c.overloadEnd) {
		e = c.overloadEnd
	}
	return e
}

// Overloaded reports whether the end is the overload bound rather than the
// confirm window.
func (c *Wait) Overloaded() bool { return c.End().After(c.windowEnd) }

// Bound is the overload bound (at least the window).
func (c *Wait) Bound() time.Duration { return c.bound }

// Answered records an answer that is not an overload (a refusal, not
// confirmed yet, or no answer): the backoff starts again.
func (c *Wait) Answered() { c.overloads = 0 }

// Overload records an overload answer at now and returns the time until
// the next attempt: Retry-After or the backoff (interval doubling to
// backoffMax, jittered), whichever is longer.
func (c *Wait) Overload(now time.Time, interval, backoffMax, retryAfter time.Duration) time.Duration {
	c.overloads++
	back := interval << min(c.overloads-1, 20)
	back = Jitter(min(back, max(backoffMax, interval)))
	wait := max(back, retryAfter)
	c.reachable = now.Add(wait + c.window)
	return wait
}

// Jitter spreads p by ±10%, so that many agents do not ask in step.
func Jitter(p time.Duration) time.Duration {
	return p - p/10 + rand.N(p/5+1)
}

// AttemptEnd is when one confirm request begun at now gives up: at the
// confirm's end, after requestTimeout, and after half the time left, so
// that a request that never gets an answer (a half-open connection, a
// server that stalls) leaves time to ask again on a new connection, or
// the next server, within the window.
func AttemptEnd(now, end time.Time, requestTimeout time.Duration) time.Time {
	t := now.Add(requestTimeout)
	if half := now.Add(end.Sub(now) / 2); half.Before(t) {
		t = half
	}
	if end.Before(t) {
		t = end
	}
	return t
}
