package fleetsim

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// route is one agent route the simulator calls.
type route int

const (
	routeEnroll route = iota
	routeDesired
	routeReport
	routeConfirm
	numRoutes
)

var routeNames = [numRoutes]string{"enroll", "desired", "status", "confirm"}

func (r route) String() string { return routeNames[r] }

// RouteCounts are the answers of one route.
type RouteCounts struct {
	Requests    int           // every request sent
	OK          int           // 2xx
	NotModified int           // 304 (long-poll ended unchanged)
	TooMany     int           // 429
	Status5xx   map[int]int   // 5xx by status
	Other4xx    int           // 4xx but 429
	Timeouts    int           // no answer in time (client deadline)
	NetErrors   int           // connection errors other than timeouts
	MaxLatency  time.Duration // of answered requests (long-polls included)
	SumLatency  time.Duration
}

// Errors5xx is the sum of the 5xx answers.
func (c RouteCounts) Errors5xx() int {
	n := 0
	for _, v := range c.Status5xx {
		n += v
	}
	return n
}

// sub returns c - o (o an earlier snapshot of the same counters).
func (c RouteCounts) sub(o RouteCounts) RouteCounts {
	d := RouteCounts{
		Requests: c.Requests - o.Requests, OK: c.OK - o.OK, NotModified: c.NotModified - o.NotModified,
		TooMany: c.TooMany - o.TooMany, Other4xx: c.Other4xx - o.Other4xx, Timeouts: c.Timeouts - o.Timeouts,
		NetErrors: c.NetErrors - o.NetErrors, MaxLatency: c.MaxLatency, SumLatency: c.SumLatency - o.SumLatency,
		Status5xx: map[int]int{},
	}
	for k, v := range c.Status5xx {
		if n := v - o.Status5xx[k]; n != 0 {
			d.Status5xx[k] = n
		}
	}
	return d
}

// Counts are every route's answers, by route name.
type Counts [numRoutes]RouteCounts

// Sub returns c - o per route. MaxLatency stays c's (the maximum since
// the counters were last reset).
func (c Counts) Sub(o Counts) Counts {
	var d Counts
	for i := range c {
		d[i] = c[i].sub(o[i])
	}
	return d
}

// Stats counts the answers of every route; safe for concurrent use.
type Stats struct {
	mu sync.Mutex
	c  Counts
}

func (s *Stats) record(r route, status int, err error, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.c[r]
	c.Requests++
	switch {
	case status == 0 && err != nil:
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			c.Timeouts++
		} else if !errors.Is(err, context.Canceled) {
			c.NetErrors++
		}
		return
	case status == http.StatusNotModified:
		c.NotModified++
	case status >= 200 && status < 300:
		c.OK++
	case status == http.StatusTooManyRequests:
		c.TooMany++
	case status >= 500:
		if c.Status5xx == nil {
			c.Status5xx = map[int]int{}
		}
		c.Status5xx[status]++
	default:
		c.Other4xx++
	}
	c.SumLatency += took
	c.MaxLatency = max(c.MaxLatency, took)
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.c
	for i := range out {
		m := make(map[int]int, len(out[i].Status5xx))
		for k, v := range out[i].Status5xx {
			m[k] = v
		}
		out[i].Status5xx = m
	}
	return out
}

// ResetMax starts a new maximum latency for every route.
func (s *Stats) ResetMax() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.c {
		s.c[i].MaxLatency = 0
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
