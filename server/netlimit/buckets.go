package netlimit

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Rate configures Buckets: each address may spend Burst at once, and gets
// Rate back per second.
type Rate struct {
	Rate  float64
	Burst int
	// MaxAddresses bounds the addresses tracked at once; when full, full
	// buckets are forgotten, and a new address that still finds no room is
	// refused (fails closed under a flood from many addresses).
	MaxAddresses int
}

// Buckets are token buckets per client address.
type Buckets struct {
	rate Rate
	now  func() time.Time

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewBuckets returns per-address buckets; now is the clock (nil: time.Now).
func NewBuckets(r Rate, now func() time.Time) *Buckets {
	if now == nil {
		now = time.Now
	}
	return &Buckets{rate: r, now: now, m: map[string]*bucket{}}
}

// AddressKey is the key of a request's or connection's remote address
// (host:port, or a unix socket's name): its IP, or "unix" for a peer
// without one.
func AddressKey(remote string) string {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().String()
	}
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return "unix"
}

// Wait reports whether key's bucket is empty, and then how long until it
// holds a token again. It spends nothing.
func (b *Buckets) Wait(key string) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.fill(key)
	if !ok {
		return b.refill(0), true
	}
	if k.tokens >= 1 {
		return 0, false
	}
	return b.refill(k.tokens), true
}

// Spend takes a token from key's bucket (it may go empty, never below 0).
func (b *Buckets) Spend(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.fill(key); ok {
		k.tokens = max(k.tokens-1, 0)
	}
}

// refill is how long a bucket holding tokens takes to hold 1.
func (b *Buckets) refill(tokens float64) time.Duration {
	if b.rate.Rate <= 0 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration((1 - tokens) / b.rate.Rate * float64(time.Second))
}

// fill returns key's bucket topped up to now; false when there is no room
// for a new key.
func (b *Buckets) fill(key string) (*bucket, bool) {
	now := b.now()
	k := b.m[key]
	if k == nil {
		if b.rate.MaxAddresses > 0 && len(b.m) >= b.rate.MaxAddresses {
			b.forgetFull(now)
			if len(b.m) >= b.rate.MaxAddresses {
				return nil, false
			}
		}
		k = &bucket{tokens: float64(b.rate.Burst), at: now}
		b.m[key] = k
		return k, true
	}
	k.tokens = b.topUp(k, now)
	k.at = now
	return k, true
}

func (b *Buckets) topUp(k *bucket, now time.Time) float64 {
	return min(k.tokens+now.Sub(k.at).Seconds()*b.rate.Rate, float64(b.rate.Burst))
}

// forgetFull drops the buckets that are full again: they hold nothing a
// new bucket would not.
func (b *Buckets) forgetFull(now time.Time) {
	for key, k := range b.m {
		if b.topUp(k, now) >= float64(b.rate.Burst) {
			delete(b.m, key)
		}
	}
}

// Len is the number of addresses tracked.
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
