package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A client with several servers (NewClientServers) sends every request to
// the server in use and sticks to it while it answers. It moves to the
// next one (in the order given, wrapping around) when the server does not
// answer: the connection cannot be made or breaks (refused, reset, a dial
// or TLS failure), the request's deadline passes without an answer, or a
// proxy in front of it answers that it cannot reach it (502, 504, or 503
// with neither a JSON error of slipway-server nor Retry-After). The
// request is then sent to the next server at once, each server at most
// once per call; callers back off between calls as before. Any other
// answer, including 429 and 503 with Retry-After (overload: the server is
// up), ends the call on the server that gave it: an overloaded server is
// not a reason to move, so the fleet does not stampede onto another one.
//
// A server address whose host is a DNS name with several A/AAAA records
// (and no Config dialer: a tailnet dialer resolves names itself) is dialed
// record by record, sticking to the record that last answered.

// DefaultDialTimeout bounds one connection attempt of a client with
// several servers (or a name with several records), so that a server that
// drops packets does not use up a request's whole deadline.
const DefaultDialTimeout = 10 * time.Second

// WithDialTimeout bounds each connection attempt (0: DefaultDialTimeout
// with several servers, else only the request's deadline).
func WithDialTimeout(d time.Duration) ClientOption {
	return func(o *clientOptions) { o.dialTimeout = d }
}

// Failover tells a WithFailover callback that From stopped answering
// (Err says how) and the client now uses To.
type Failover struct {
	From, To string // redacted server addresses
	Err      error
}

// WithFailover calls fn each time the client moves from one server to the
// next (for logs and metrics). fn must not block.
func WithFailover(fn func(Failover)) ClientOption {
	return func(o *clientOptions) { o.onFailover = fn }
}

// target is one server of a client.
type target struct {
	base string // URL prefix requests go to
	name string // the address as configured, redacted, for logs and errors
	hc   *http.Client
}

// serverSet is a client's servers and the one in use; copies of a client
// (WithToken) share it.
type serverSet struct {
	targets    []target
	cur        atomic.Int64
	onFailover func(Failover)
}

// NewClientServers is NewClient with several servers to fail over between
// (see the notes on failover above). servers must not be empty.
func NewClientServers(servers []string, token string, opts ...ClientOption) (*Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("no server address")
	}
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.dialTimeout == 0 && len(servers) > 1 {
		o.dialTimeout = DefaultDialTimeout
	}
	set := &serverSet{onFailover: o.onFailover}
	roots := "the system's roots"
	for i, s := range servers {
		t, r, err := newTarget(s, o)
		if err != nil {
			if len(servers) > 1 {
				return nil, fmt.Errorf("server %d of %d: %w", i+1, len(servers), err)
			}
			return nil, err
		}
		set.targets, roots = append(set.targets, t), r
	}
	return &Client{servers: set, token: token, roots: roots}, nil
}

// Servers returns the client's server addresses, redacted, the one in use
// first.
func (c *Client) Servers() []string {
	n := len(c.servers.targets)
	cur := int(c.servers.cur.Load())
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, c.servers.targets[(cur+i)%n].name)
	}
	return out
}

// roundTrip sends the request build makes for a server's base URL to the
// server in use, and on to the next ones while they do not answer (see
// unanswered); a request whose body cannot be read again (a stream) goes
// to one server only. The last server's answer or error is returned as it
// is; a transport error of a client with several servers says how many
// were tried.
func (c *Client) roundTrip(ctx context.Context, build func(base string) (*http.Request, error)) (*http.Response, error) {
	set := c.servers
	n := len(set.targets)
	start := int(set.cur.Load())
	for i := 0; ; i++ {
		idx := (start + i) % n
		t := set.targets[idx]
		req, err := build(t.base)
		if err != nil {
			return nil, err
		}
		c.authorize(req)
		resp, err := t.hc.Do(req)
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			return nil, err // the caller gave up: not the server's fault
		}
		why := unanswered(resp, err)
		if why == nil {
			set.use(idx)
			return resp, nil
		}
		set.failed(idx, why)
		oneShot := req.Body != nil && req.Body != http.NoBody && req.GetBody == nil
		if i == n-1 || ctx.Err() != nil || oneShot {
			if err != nil && n > 1 {
				err = fmt.Errorf("%w (no answer from %d of %d servers; last tried %s)", err, i+1, n, t.name)
			}
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
	}
}

// authorize sets the token and protocol headers.
func (c *Client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set(HeaderProtocol, fmt.Sprint(ProtocolVersion))
}

// use makes idx the server in use.
func (s *serverSet) use(idx int) { s.cur.Store(int64(idx)) }

// failed moves off idx, unless another request already did.
func (s *serverSet) failed(idx int, why error) {
	n := len(s.targets)
	if n == 1 {
		return
	}
	next := (idx + 1) % n
	if s.cur.CompareAndSwap(int64(idx), int64(next)) && s.onFailover != nil {
		s.onFailover(Failover{From: s.targets[idx].name, To: s.targets[next].name, Err: why})
	}
}

// unanswered says why a request's outcome means the server did not answer
// (nil: it answered). A request deadline that passed counts: the server
// did not answer in time.
func unanswered(resp *http.Response, err error) error {
	switch {
	case err != nil:
		return err
	case resp.StatusCode == http.StatusBadGateway, resp.StatusCode == http.StatusGatewayTimeout:
		return fmt.Errorf("a proxy answered %s", resp.Status)
	case proxyUnavailable(resp):
		return fmt.Errorf("a proxy answered %s (not slipway-server: no JSON error, no Retry-After)", resp.Status)
	}
	return nil
}

// proxyUnavailable reports whether resp is a 503 that slipway-server did
// not write: it answers 503 with a JSON error and Retry-After; a proxy
// with no server behind it answers with neither.
func proxyUnavailable(resp *http.Response) bool {
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "" {
		return false
	}
	ct := resp.Header.Get("Content-Type")
	return !strings.HasPrefix(strings.TrimSpace(ct), "application/json")
}

// newTarget builds one server of a client; it also returns what verifies
// the server's certificate (for errors).
func newTarget(server string, o clientOptions) (target, string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return target{}, "", fmt.Errorf("server address %q: %w", server, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	base := strings.TrimSuffix(server, "/")
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return target{}, "", fmt.Errorf("server address %q: no host", server)
		}
		tr.DialContext = hostDialer(u.Hostname(), o)
	case "unix":
		if o.dial != nil {
			return target{}, "", fmt.Errorf("server address %q: a unix socket cannot be reached through a dialer", server)
		}
		path := u.Path
		if path == "" {
			return target{}, "", fmt.Errorf("server address %q: no socket path", server)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://slipway-server"
	default:
		return target{}, "", fmt.Errorf("server address %q: scheme must be http, https or unix", server)
	}
	roots := "the system's roots"
	if o.caFile != "" {
		pool, err := loadCAFile(o.caFile)
		if err != nil {
			return target{}, "", err
		}
		tr.TLSClientConfig = tlsConfig(pool)
		roots = "the CA file " + o.caFile
	}
	return target{base: base, name: u.Redacted(), hc: &http.Client{Transport: tr}}, roots, nil
}

// hostDialer is the dial function of an http(s) server: o's dialer, or
// the host's network trying each A/AAAA record of a DNS name; each
// attempt bounded by o.dialTimeout when set.
func hostDialer(host string, o clientOptions) DialFunc {
	dial := o.dial
	if dial == nil {
		if _, err := netip.ParseAddr(host); err != nil {
			return (&recordDialer{timeout: o.dialTimeout}).DialContext // bounds each record
		}
		dial = baseDialer().DialContext
	}
	if o.dialTimeout <= 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

// recordDialer dials a DNS name record by record, starting with the
// address that answered last, each attempt bounded by timeout (when set).
type recordDialer struct {
	timeout time.Duration
	// lookup resolves a name (tests: a fake); nil = net.DefaultResolver.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	mu     sync.Mutex
	good   netip.Addr
}

// DialContext resolves addr's host and dials its addresses in turn.
func (r *recordDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	lookup := r.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ips, err := lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	good := r.good
	r.mu.Unlock()
	ordered := stickyOrder(ips, good)
	var errs []error
	for _, ip := range ordered {
		c, err := r.dialOne(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			r.mu.Lock()
			r.good = ip
			r.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dial %s (%d address(es)): %w", host, len(ordered), errors.Join(errs...))
}

func (r *recordDialer) dialOne(ctx context.Context, network, addr string) (net.Conn, error) {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	return baseDialer().DialContext(ctx, network, addr)
}

// baseDialer is the dialer of http.DefaultTransport (30 s, keep-alives).
func baseDialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
}

// stickyOrder is ips starting with good (when among them), in their order
// after it and wrapping around.
func stickyOrder(ips []netip.Addr, good netip.Addr) []netip.Addr {
	for i, ip := range ips {
		if ip == good {
			return append(append([]netip.Addr(nil), ips[i:]...), ips[:i]...)
		}
	}
	return ips
}
