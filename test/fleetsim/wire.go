package fleetsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// wire sends the agent routes of shared/api over one shared HTTP client:
// the same paths, headers and bodies as api.Client (which builds a
// transport per client; ten thousand of them would hold twice the
// connections and file descriptors a shared pool needs). Every answer is
// counted in stats.
type wire struct {
	base  string
	hc    *http.Client // every request but long-polls
	polls *http.Client // long-polls (nil: hc)
	stats *Stats
}

// newTransport returns a transport the simulated agents share:
// keep-alive connections to the server, at most maxConns of them (a
// request beyond waits for a free one), and as many idle ones kept, so a
// connection is reused rather than closed and redialled (which would pile
// up TIME_WAIT ports on loopback). Idle ones close after 90 s, as the real
// agent's (Go's default transport).
//
// The fleet has two: one for long-polls, one for everything else. A real
// agent long-polls on one connection and reports on another, which it
// closes after 90 s idle; an idle fleet's reports ride on the long-polls,
// so an idle server holds one connection per agent. One pool shared by
// every request kept about half as many again open and in use (10,000
// agents: ~15,400 connections, each with a goroutine and net/http's
// buffers on the server): a burst of polls answered together took idle
// connections from deep in the pool, so none stayed idle long enough to
// close.
func newTransport(maxConns int, dials *atomic.Int64) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		MaxConnsPerHost:     maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// call sends one request for route r (in, out may be nil) and returns the
// status (and, when got is not nil, the answer's headers into it).
// Non-2xx answers other than 304 are an *api.StatusError, as api.Client
// returns them.
func (w *wire) call(ctx context.Context, r route, method, path, token string, hdr http.Header, in, out any, got *http.Header) (int, error) {
	start := time.Now()
	hc := w.hc
	if r == routeDesired && w.polls != nil {
		hc = w.polls
	}
	status, err := w.send(ctx, hc, method, path, token, hdr, in, out, got)
	w.stats.record(r, status, err, time.Since(start))
	return status, err
}

func (w *wire) send(ctx context.Context, hc *http.Client, method, path, token string, hdr http.Header, in, out any, got *http.Header) (int, error) {
	var body io.Reader
	if in != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(in); err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = &buf
	}
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, body)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set(api.HeaderProtocol, strconv.Itoa(api.ProtocolVersion))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if got != nil {
		*got = resp.Header
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotModified {
		se := &api.StatusError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &se.Body) != nil {
			se.Body.Error = strings.TrimSpace(string(b))
		}
		return resp.StatusCode, se
	}
	if out != nil && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, req.URL.Path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body) // the connection goes back to the pool
	}
	return resp.StatusCode, nil
}

// retryAfter reads Retry-After in delta seconds (what slipway-server
// sends); anything else is 0.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func (w *wire) enroll(ctx context.Context, r api.EnrollRequest) (api.EnrollResponse, error) {
	var out api.EnrollResponse
	_, err := w.call(ctx, routeEnroll, http.MethodPost, "/v1/agent/enroll", "", nil, r, &out, nil)
	return out, err
}

// desired long-polls as api.Client.DesiredWith: (nil, false) unchanged,
// (nil, true) no desired generation; extra are added request headers,
// and the answer's headers are returned.
func (w *wire) desired(ctx context.Context, name, token, have string, wait time.Duration, extra http.Header) (*api.Desired, bool, http.Header, error) {
	hdr := http.Header{}
	for k, v := range extra {
		hdr[k] = v
	}
	if have != "" {
		hdr.Set("If-None-Match", strconv.Quote(have))
	}
	path := "/v1/agent/nodes/" + url.PathEscape(name) + "/desired?" + api.QueryWait + "=" + wait.String()
	var d api.Desired
	var got http.Header
	status, err := w.call(ctx, routeDesired, http.MethodGet, path, token, hdr, nil, &d, &got)
	switch {
	case err != nil:
		return nil, false, nil, err
	case status == http.StatusNotModified:
		return nil, false, got, nil
	case status == http.StatusNoContent:
		return nil, true, got, nil
	}
	return &d, true, got, nil
}

// report posts r and returns the answer's headers.
func (w *wire) report(ctx context.Context, name, token string, r api.Report) (http.Header, error) {
	var got http.Header
	_, err := w.call(ctx, routeReport, http.MethodPost, "/v1/agent/nodes/"+url.PathEscape(name)+"/status", token, nil, r, nil, &got)
	return got, err
}

func (w *wire) confirm(ctx context.Context, name, token string, r api.ConfirmRequest) (api.ConfirmResponse, error) {
	var out api.ConfirmResponse
	_, err := w.call(ctx, routeConfirm, http.MethodPost, "/v1/agent/nodes/"+url.PathEscape(name)+"/confirm", token, nil, r, &out, nil)
	return out, err
}

// permanentRefusal reports whether err is an answer the real agent does
// not retry (a refused enrolment: 400, 401, 403, 409, 422).
func permanentRefusal(err error) bool {
	return errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden) ||
		errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrConflict)
}
