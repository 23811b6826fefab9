package daemon

// HTTP limits ([limits] in the config) on every listener of the API:
//
//   - http.Server: ReadHeaderTimeout (headers and the TLS handshake),
//     IdleTimeout (keep-alive), MaxHeaderBytes (431 beyond). ReadTimeout
//     and WriteTimeout stay unset there: they would end long-polls and
//     event streams.
//   - Per request (http.ResponseController): a request with a body must
//     send it within read_timeout, a blob upload within blob_timeout plus
//     its size at blob_min_rate; the deadline is lifted once the body is
//     read, so a handler still working is not cut off. The response must be
//     written within write_timeout (a blob upload's: its read deadline),
//     except for the desired long-poll, event streams and blob downloads,
//     which have no deadline.
//   - Connections (server/netlimit): at most max_connections at once, and
//     max_connections_per_address from one client IP (loopback, exempt
//     networks and unix-socket peers count only towards the total). One
//     more gets its first request answered — 503 (total) or 429 (per
//     address) with Retry-After and Connection: close — while up to
//     refusingConns such answers are pending; beyond that it is closed at
//     once and logged (sampled).
//   - Unauthenticated rate (server/netlimit.Buckets): a token bucket per
//     client address, spent by every request refused as unauthenticated
//     (401) and every failed enrolment (4xx). While it is empty, an
//     enrolment is answered 429 before its body is read, and a request that
//     would be refused 401 is answered 429 instead, without an audit event
//     (httpapi.LimitRefusals). Authenticated requests never spend it, not
//     even when they are forbidden (403: the caller is known), so agents
//     sharing an address are not slowed by it.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/longpoll"
	"github.com/slipway-dev/slipway/server/netlimit"
	"github.com/slipway-dev/slipway/shared/api"
)

// refusingConns bounds the connections over a cap that wait at once for
// their 429/503 answer.
const refusingConns = 256

// maxTrackedAddresses bounds the client addresses the unauthenticated rate
// limit tracks at once (netlimit.Rate.MaxAddresses).
const maxTrackedAddresses = 100_000

// guard applies [limits] to the API's servers and requests.
type guard struct {
	// count records a refusal by a limit (metrics.Server.Limited).
	count  func(limit, outcome string)
	lim    config.Limits
	conns  *netlimit.Limiter
	unauth *netlimit.Buckets
	log    zerolog.Logger // sampled: floods must not flood the log
	// hold holds the desired long-polls of every server made by server.
	hold *longpoll.Holder
}

// Limit names, as in the config and slipway_http_limited_total.
const (
	limitTotal   = "max_connections"
	limitPerAddr = "max_connections_per_address"
	limitUnauth  = "unauthenticated_rate"
)

// limitName is the config key of the cap r.
func limitName(r netlimit.Reason) string {
	if r == netlimit.OverPerAddress {
		return limitPerAddr
	}
	return limitTotal
}

func newGuard(l config.Limits, count func(limit, outcome string), log zerolog.Logger) (*guard, error) {
	exempt, err := l.Exempt()
	if err != nil {
		return nil, err
	}
	g := &guard{
		count:  count,
		lim:    l,
		conns:  netlimit.New(netlimit.Caps{Total: l.MaxConnections, PerAddress: l.MaxConnectionsPerAddress, Exempt: exempt, Refusing: refusingConns}),
		unauth: netlimit.NewBuckets(netlimit.Rate{Rate: l.UnauthenticatedRate, Burst: l.UnauthenticatedBurst, MaxAddresses: maxTrackedAddresses}, nil),
		log:    log.With().Str("component", "limits").Logger().Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second}),
		hold:   longpoll.New(time.Duration(l.WriteTimeout), log),
	}
	g.conns.OnDrop = func(addr string, r netlimit.Reason) {
		g.count(limitName(r), "closed")
		g.log.Warn().Str("remote", addr).Str("reason", r.String()).Int("max_connections", l.MaxConnections).
			Int("max_connections_per_address", l.MaxConnectionsPerAddress).Msg("connection closed unanswered: over a connection cap and too many refusals pending (sampled)")
	}
	return g, nil
}

type connKey struct{}

// server returns an http.Server for h with the limits that live there;
// listeners it serves must be wrapped by g.listener.
func (g *guard) server(h http.Handler, base func(net.Listener) context.Context) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: time.Duration(g.lim.ReadHeaderTimeout),
		IdleTimeout:       time.Duration(g.lim.IdleTimeout),
		MaxHeaderBytes:    g.lim.MaxHeaderBytes,
		BaseContext:       base,
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ErrorLog:          stdlog.New(serverErrors{g.log}, "", 0),
	}
	g.hold.Attach(srv)
	return srv
}

// serverErrors logs net/http's own errors (TLS handshakes that fail,
// mostly: scanners and clients that do not trust the certificate) at
// debug level, sampled.
type serverErrors struct{ log zerolog.Logger }

func (e serverErrors) Write(p []byte) (int, error) {
	e.log.Debug().Str("error", strings.TrimSpace(string(p))).Msg("http server")
	return len(p), nil
}

// listener counts ln's connections against the caps.
func (g *guard) listener(ln net.Listener) net.Listener { return g.conns.Wrap(ln) }

// refuseConn answers a request on a connection over a cap and reports
// whether it did.
func (g *guard) refuseConn(w http.ResponseWriter, r *http.Request) bool {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	reason, refused := netlimit.Refusal(c)
	if !refused {
		return false
	}
	status, limit := http.StatusServiceUnavailable, g.lim.MaxConnections
	code, msg := api.CodeUnavailable, "the server has too many open connections"
	if reason == netlimit.OverPerAddress {
		status, limit = http.StatusTooManyRequests, g.lim.MaxConnectionsPerAddress
		code, msg = api.CodeOverloaded, "too many open connections from your address"
	}
	g.count(limitName(reason), "answered")
	g.log.Warn().Str("remote", r.RemoteAddr).Str("reason", reason.String()).Int("limit", limit).Msg("connection over a cap: answered and closed (sampled)")
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", "1")
	writeError(w, status, code, fmt.Sprintf("%s (limit %d); try again", msg, limit), "retry after the Retry-After header's seconds, reusing one connection")
	return true
}

// deadlines sets r's read and write deadlines (see the file comment) and
// returns r with a body that lifts the read deadline once it is read.
func (g *guard) deadlines(w http.ResponseWriter, r *http.Request, route string, long bool) *http.Request {
	rc := http.NewResponseController(w)
	now := time.Now()
	var read, write time.Time // zero: none
	switch {
	case long, route == api.RouteAgentBlob:
	case route == api.RouteBlobPut:
		d := time.Duration(g.lim.BlobTimeout) + time.Duration(max(r.ContentLength, 0)/g.lim.BlobMinRate)*time.Second
		read, write = now.Add(d), now.Add(d+time.Duration(g.lim.WriteTimeout))
	default:
		read, write = now.Add(time.Duration(g.lim.ReadTimeout)), now.Add(time.Duration(g.lim.WriteTimeout))
	}
	// Always set: a deadline of an earlier request on this connection
	// must not end a long-poll.
	_ = rc.SetWriteDeadline(write)
	if read.IsZero() || r.Body == nil || r.Body == http.NoBody {
		return r
	}
	if err := rc.SetReadDeadline(read); err != nil {
		return r
	}
	r2 := *r
	r2.Body = &liftBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
	return &r2
}

// liftBody lifts the read deadline once the body is read to its end or
// closed: net/http then reads the connection in the background to notice
// a client going away, and a deadline hit there would cancel the request.
type liftBody struct {
	io.ReadCloser
	lift   func()
	lifted bool
}

func (b *liftBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.lifted {
		b.lifted = true
		b.lift()
	}
	return n, err
}

// unauthWait reports whether r's address has spent its unauthenticated
// budget, and how long until it has some again (httpapi.LimitRefusals:
// when it has, the request is answered 429).
func (g *guard) unauthWait(r *http.Request) (time.Duration, bool) {
	wait, over := g.unauth.Wait(netlimit.AddressKey(r.RemoteAddr))
	if over {
		g.count(limitUnauth, "answered")
	}
	return wait, over
}

// limitEnroll answers an enrolment 429 while its address's budget is
// spent; it reports whether it did.
func (g *guard) limitEnroll(w http.ResponseWriter, r *http.Request) bool {
	wait, empty := g.unauth.Wait(netlimit.AddressKey(r.RemoteAddr))
	if !empty {
		return false
	}
	g.count(limitUnauth, "answered")
	g.log.Warn().Str("remote", r.RemoteAddr).Dur("retry_after", wait).Msg("enrolment rate-limited: too many failed enrolments or refused requests from this address (sampled)")
	tooManyRequests(w, wait, "too many failed enrolments or refused requests from your address; try again later")
	return true
}

// spend charges r's address for an unauthenticated request (401) or a
// failed enrolment.
func (g *guard) spend(r *http.Request, route string, status int) {
	refused := status == http.StatusUnauthorized
	failedEnrol := route == api.RouteEnroll && status >= 400 && status < 500 && status != http.StatusTooManyRequests
	if refused || failedEnrol {
		g.unauth.Spend(netlimit.AddressKey(r.RemoteAddr))
	}
}

// tooManyRequests writes a 429 with Retry-After (whole seconds, at least
// 1) and msg.
func tooManyRequests(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(int64((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, http.StatusTooManyRequests, api.CodeOverloaded, msg, "retry after the Retry-After header's seconds")
}

func writeError(w http.ResponseWriter, status int, code, msg, hint string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.Error{Error: msg, Code: code, Hint: hint})
}
