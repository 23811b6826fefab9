package config

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Limits is the [limits] section: HTTP timeouts and caps on what one
// client can take. Every listener of the API (listen, agent_socket, the
// tailnet node) applies them; see server/daemon for where each applies.
//
// The per-address connection cap protects the server from one host, not
// the fleet from itself: 10,000 agents from distinct addresses hold one or
// two connections each. Many agents behind one address (NAT) need it
// raised; loopback is exempt by default (tests, meshbench and local
// tooling run every agent on 127.0.0.1), and a unix socket's peers count
// only towards max_connections. The unauthenticated rate limit is spent
// only by refused requests and failed enrolments, so it never slows a
// fleet that authenticates, however many agents share an address.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (and a TLS
	// handshake).
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	// ReadTimeout bounds reading a request's body, except blob uploads
	// (below). Long-polls and event streams have no body to read.
	ReadTimeout Duration `toml:"read_timeout"`
	// WriteTimeout bounds writing a response, except long-polls, event
	// streams and blob downloads.
	WriteTimeout Duration `toml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout Duration `toml:"idle_timeout"`
	// BlobTimeout plus the upload's size at BlobMinRate bytes per second
	// bound reading a blob upload.
	BlobTimeout Duration `toml:"blob_timeout"`
	BlobMinRate int64    `toml:"blob_min_rate"`
	// MaxHeaderBytes bounds a request's header (request line included);
	// larger is answered 431.
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxConnections caps open connections over all listeners; one more is
	// answered 503 with Retry-After and closed.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerAddress caps open connections from one client IP;
	// one more is answered 429 with Retry-After and closed.
	MaxConnectionsPerAddress int `toml:"max_connections_per_address"`
	// PerAddressExempt lists networks (CIDR) whose clients count only
	// towards MaxConnections.
	PerAddressExempt []string `toml:"per_address_exempt"`
	// UnauthenticatedRate and UnauthenticatedBurst are a token bucket per
	// client address, spent by each request refused as unauthenticated
	// (401) and each failed enrolment. While it is empty, enrolments and
	// requests that would be refused 401 are answered 429 with Retry-After
	// (and not audited).
	UnauthenticatedRate  float64 `toml:"unauthenticated_rate"`
	UnauthenticatedBurst int     `toml:"unauthenticated_burst"`
}

// DefaultLimits are the [limits] defaults. max_connections: 10,000 agents
// with up to two connections each (the long-poll, and a report's while it
// lasts) plus headroom, below the packaged unit's LimitNOFILE=65536.
// The timeouts are generous for agents on slow links; the burst lets a
// few mistyped tokens through before the rate applies. Starting points,
// not measured optima.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout:        Duration(10 * time.Second),
		ReadTimeout:              Duration(30 * time.Second),
		WriteTimeout:             Duration(60 * time.Second),
		IdleTimeout:              Duration(90 * time.Second),
		BlobTimeout:              Duration(time.Minute),
		BlobMinRate:              256 << 10,
		MaxHeaderBytes:           64 << 10,
		MaxConnections:           30000,
		MaxConnectionsPerAddress: 128,
		PerAddressExempt:         []string{"127.0.0.0/8", "::1/128"},
		UnauthenticatedRate:      1,
		UnauthenticatedBurst:     20,
	}
}

// Exempt parses PerAddressExempt (Validate reports what is wrong).
func (l Limits) Exempt() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(l.PerAddressExempt))
	for i, s := range l.PerAddressExempt {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("limits.per_address_exempt[%d]: %q: want a network like 127.0.0.0/8", i, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (l Limits) validate() []error {
	var errs []error
	for _, d := range []struct {
		key string
		v   Duration
	}{{"read_header_timeout", l.ReadHeaderTimeout}, {"read_timeout", l.ReadTimeout}, {"write_timeout", l.WriteTimeout},
		{"idle_timeout", l.IdleTimeout}, {"blob_timeout", l.BlobTimeout}} {
		if d.v < Duration(10*time.Millisecond) || d.v > Duration(24*time.Hour) {
			errs = append(errs, fmt.Errorf("limits.%s: %v, want 10ms to 24h", d.key, time.Duration(d.v)))
		}
	}
	ints := []struct {
		key     string
		v, lo   int64
		hi      int64
		example string
	}{
		{"blob_min_rate", l.BlobMinRate, 1 << 10, 1 << 40, "bytes per second"},
		{"max_header_bytes", int64(l.MaxHeaderBytes), 4 << 10, 16 << 20, "bytes"},
		{"max_connections", int64(l.MaxConnections), 1, 10_000_000, "connections"},
		{"max_connections_per_address", int64(l.MaxConnectionsPerAddress), 1, 10_000_000, "connections"},
		{"unauthenticated_burst", int64(l.UnauthenticatedBurst), 1, 1_000_000, "requests"},
	}
	for _, n := range ints {
		if n.v < n.lo || n.v > n.hi {
			errs = append(errs, fmt.Errorf("limits.%s: %d, want %d to %d %s", n.key, n.v, n.lo, n.hi, n.example))
		}
	}
	if l.MaxConnectionsPerAddress > l.MaxConnections {
		errs = append(errs, fmt.Errorf("limits.max_connections_per_address: %d is above max_connections (%d)", l.MaxConnectionsPerAddress, l.MaxConnections))
	}
	if !(l.UnauthenticatedRate > 0 && l.UnauthenticatedRate <= 1e6) {
		errs = append(errs, fmt.Errorf("limits.unauthenticated_rate: %v, want more than 0 and at most 1000000 per second", l.UnauthenticatedRate))
	}
	if _, err := l.Exempt(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return []error{errors.Join(errs...)}
	}
	return nil
}
