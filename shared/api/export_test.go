package api

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// NewRecordDialer exposes the record dialer with a fake resolver.
func NewRecordDialer(timeout time.Duration, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&recordDialer{timeout: timeout, lookup: lookup}).DialContext
}

// StickyOrder exposes stickyOrder.
var StickyOrder = stickyOrder
