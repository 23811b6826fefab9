package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors matched by *StatusError (errors.Is).
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrInvalid      = errors.New("invalid request")
)

// StatusError is a non-2xx answer from the server. RetryAfter is the
// server's Retry-After header (delta seconds or an HTTP date), 0 when
// absent or unreadable.
type StatusError struct {
	Status     int
	Body       Error
	RetryAfter time.Duration
	// proxied: a 503 that slipway-server did not write (no JSON error, no
	// Retry-After): a proxy with no server behind it.
	proxied bool
}

// Overloaded reports whether the answer says the server is busy, not that
// the request is wrong: 429 and every 5xx except 502, 504, and a 503 with
// neither a JSON error nor Retry-After. Those are what a proxy answers
// when it cannot reach the server behind it, so they say nothing about the
// server being up (slipway-server's 503s carry both). A client that gets
// an overload answer has reached the server.
func (e *StatusError) Overloaded() bool {
	switch {
	case e.Status == http.StatusTooManyRequests:
		return true
	case e.Status == http.StatusBadGateway, e.Status == http.StatusGatewayTimeout, e.proxied:
		return false
	}
	return e.Status >= 500 && e.Status <= 599
}

// Overloaded returns the overload answer in err's chain (see
// StatusError.Overloaded), or nil.
func Overloaded(err error) *StatusError {
	var se *StatusError
	if errors.As(err, &se) && se.Overloaded() {
		return se
	}
	return nil
}

// parseRetryAfter reads a Retry-After header: delta seconds or an HTTP
// date (RFC 9110 10.2.3). Anything else, or a time in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(max(n, 0)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (e *StatusError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("server: %s (HTTP %d)", msg, e.Status)
}

// Is maps the status to the sentinel errors.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrInvalid:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusUnprocessableEntity
	}
	return false
}

// Client talks to slipway-server. Server is "http://host:port",
// "https://…", or "unix:///path/to.sock" (HTTP over a unix socket); a
// client from NewClientServers has several and fails over between them.
type Client struct {
	servers *serverSet
	token   string
	roots   string // what verifies the server's certificate, for errors
}

// DialFunc dials a connection; it has the shape of
// net.Dialer.DialContext, http.Transport.DialContext and
// mesh.Node.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// ClientOption changes how NewClient builds a client.
type ClientOption func(*clientOptions)

type clientOptions struct {
	dial        DialFunc
	caFile      string
	dialTimeout time.Duration
	onFailover  func(Failover)
}

// WithCAFile makes the client verify an https:// server's certificate
// against the CA certificates (PEM) in path instead of the system's roots
// ("": the system's roots). NewClient reads the file.
func WithCAFile(path string) ClientOption {
	return func(o *clientOptions) { o.caFile = path }
}

// ErrCAFile is returned by NewClient when the WithCAFile file cannot be
// read or holds no certificate.
var ErrCAFile = errors.New("CA file")

// loadCAFile reads PEM CA certificates; its errors name the file.
func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w %s: no PEM certificate in it", ErrCAFile, path)
	}
	return pool, nil
}

// WithDialer makes every connection of the client (every request: the
// long-poll, blobs, the event stream) go through dial, e.g. a tsnet node's
// DialContext so the client talks to the server over the tailnet. dial
// gets "host:port" of the server address (port 80 or 443 when it has
// none); the host is not resolved first, so a MagicDNS name reaches the
// dialer as it is. TLS (https) runs over the dialed connection. It cannot
// be combined with a unix:// server.
func WithDialer(dial DialFunc) ClientOption {
	return func(o *clientOptions) { o.dial = dial }
}

// NewClient returns a client for server with a bearer token (may be empty
// for enrolment).
func NewClient(server, token string, opts ...ClientOption) (*Client, error) {
	return NewClientServers([]string{server}, token, opts...)
}

func tlsConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// tlsError explains a failed verification of the server's certificate.
func (c *Client) tlsError(err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%w (the server's certificate is not signed by a CA in %s)", err, c.roots)
	case errors.As(err, &hn):
		return fmt.Errorf("%w (the server's certificate is not for the host in the server address)", err)
	case errors.As(err, &inv):
		return fmt.Errorf("%w (the server's certificate is expired, not yet valid, or not for a server)", err)
	}
	return err
}

// WithToken returns a copy of c using token.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.token = token
	return &cc
}

// do sends a request with a JSON body (in may be nil) and decodes a JSON
// answer into out (may be nil). It returns the status for callers that
// treat 204/304 specially.
func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, in, out any) (int, http.Header, error) {
	var body []byte
	if in != nil {
		// No HTML escaping: manifests travel byte for byte ("&&" in a unit).
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(in); err != nil {
			return 0, nil, err
		}
		body = buf.Bytes()
	}
	return c.send(ctx, method, path, out, func(base string) (*http.Request, error) {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, r)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, nil
	})
}

// send sends the request build makes (see roundTrip) and decodes a JSON
// answer into out (may be nil).
func (c *Client) send(ctx context.Context, method, path string, out any, build func(base string) (*http.Request, error)) (int, http.Header, error) {
	path, _, _ = strings.Cut(path, "?")
	resp, err := c.roundTrip(ctx, build)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, c.tlsError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotModified {
		return resp.StatusCode, resp.Header, statusError(resp)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// statusError reads a non-2xx answer (its body up to 64 KiB): the JSON
// error, else the body's text.
func statusError(resp *http.Response) *StatusError {
	se := &StatusError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		proxied: proxyUnavailable(resp)}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &se.Body) != nil {
		se.Body.Error = strings.TrimSpace(string(b))
	}
	return se
}

func esc(s string) string { return url.PathEscape(s) }

// Enroll registers a node with a one-time join token.
func (c *Client) Enroll(ctx context.Context, r EnrollRequest) (EnrollResponse, error) {
	var out EnrollResponse
	_, _, err := c.do(ctx, http.MethodPost, "/v1/agent/enroll", nil, r, &out)
	return out, err
}

// Desired long-polls the node's desired generation. have is the ETag
// (Desired.ETag) of the desired state the agent last saw ("" = none); the
// call returns when the desired state's ETag differs from have, or when
// wait passed. It returns (nil, false) when
// unchanged, (nil, true) when the node has no desired generation.
func (c *Client) Desired(ctx context.Context, name, have string, wait time.Duration) (*Desired, bool, error) {
	d, changed, _, err := c.DesiredWith(ctx, name, have, wait, nil)
	return d, changed, err
}

// DesiredWith is Desired with extra request headers; it also returns the
// answer's headers (nil on an error).
func (c *Client) DesiredWith(ctx context.Context, name, have string, wait time.Duration, extra http.Header) (*Desired, bool, http.Header, error) {
	hdr := http.Header{}
	for k, v := range extra {
		hdr[k] = v
	}
	if have != "" {
		hdr.Set("If-None-Match", strconv.Quote(have))
	}
	path := "/v1/agent/nodes/" + esc(name) + "/desired?" + QueryWait + "=" + wait.String()
	var d Desired
	status, h, err := c.do(ctx, http.MethodGet, path, hdr, nil, &d)
	switch {
	case err != nil:
		return nil, false, nil, err
	case status == http.StatusNotModified:
		return nil, false, h, nil
	case status == http.StatusNoContent:
		return nil, true, h, nil
	}
	return &d, true, h, nil
}

// Report posts the node's status.
func (c *Client) Report(ctx context.Context, name string, r Report) error {
	_, err := c.ReportAnswer(ctx, name, r)
	return err
}

// ReportAnswer is Report that also returns the answer's headers (nil on
// an error).
func (c *Client) ReportAnswer(ctx context.Context, name string, r Report) (http.Header, error) {
	_, h, err := c.do(ctx, http.MethodPost, "/v1/agent/nodes/"+esc(name)+"/status", nil, r, nil)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Confirm asks the server to confirm the node's switch to r.ID.
func (c *Client) Confirm(ctx context.Context, name string, r ConfirmRequest) (ConfirmResponse, error) {
	var out ConfirmResponse
	_, _, err := c.do(ctx, http.MethodPost, "/v1/agent/nodes/"+esc(name)+"/confirm", nil, r, &out)
	return out, err
}

// Blob downloads a blob the node's generations reference.
func (c *Client) Blob(ctx context.Context, name, sha string) (io.ReadCloser, error) {
	resp, err := c.roundTrip(ctx, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/agent/nodes/"+esc(name)+"/blobs/"+esc(sha), nil)
	})
	if err != nil {
		return nil, fmt.Errorf("GET blob %s: %w", sha, c.tlsError(err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp.Body, nil
}

// Nodes lists every node.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out []Node
	_, _, err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, nil, &out)
	return out, err
}

// Node returns one node with its last report.
func (c *Client) Node(ctx context.Context, name string) (Node, error) {
	var out Node
	_, _, err := c.do(ctx, http.MethodGet, "/v1/nodes/"+esc(name), nil, nil, &out)
	return out, err
}

// Rollback sends a node back to an earlier generation it ran.
func (c *Client) Rollback(ctx context.Context, name string, r RollbackRequest) (Node, error) {
	var out Node
	_, _, err := c.do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/rollback", nil, r, &out)
	return out, err
}

// Retry asks a node to retry its desired generation although it quarantined it.
func (c *Client) Retry(ctx context.Context, name string) (Node, error) {
	var out Node
	_, _, err := c.do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/retry", nil, struct{}{}, &out)
	return out, err
}

// ResetNode revokes a node's token so that a join token bound to its name
// (JoinTokenRequest.Node) may enrol it again (admin).
func (c *Client) ResetNode(ctx context.Context, name string) (Node, error) {
	var out Node
	_, _, err := c.do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/reset", nil, struct{}{}, &out)
	return out, err
}

// Releases lists releases, newest first.
func (c *Client) Releases(ctx context.Context) ([]Release, error) {
	var out []Release
	_, _, err := c.do(ctx, http.MethodGet, "/v1/releases", nil, nil, &out)
	return out, err
}

// Release returns one release.
func (c *Client) Release(ctx context.Context, id string) (Release, error) {
	var out Release
	_, _, err := c.do(ctx, http.MethodGet, "/v1/releases/"+esc(id), nil, nil, &out)
	return out, err
}

// CreateRelease publishes a release.
func (c *Client) CreateRelease(ctx context.Context, r CreateReleaseRequest) (Release, error) {
	var out Release
	_, _, err := c.do(ctx, http.MethodPost, "/v1/releases", nil, r, &out)
	return out, err
}

// HasBlob reports whether the server already has a blob.
func (c *Client) HasBlob(ctx context.Context, sha string) (bool, error) {
	_, _, err := c.do(ctx, http.MethodHead, "/v1/blobs/"+esc(sha), nil, nil, nil)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PutBlob uploads a blob; the server verifies size and sha256.
func (c *Client) PutBlob(ctx context.Context, sha string, r io.Reader, size int64) error {
	_, _, err := c.send(ctx, http.MethodPut, "/v1/blobs/"+esc(sha), nil, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/blobs/"+esc(sha), r)
		if err != nil {
			return nil, err
		}
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		return req, nil
	})
	return err
}

// CreateJoinToken makes a one-time join token.
func (c *Client) CreateJoinToken(ctx context.Context, r JoinTokenRequest) (JoinToken, error) {
	var out JoinToken
	_, _, err := c.do(ctx, http.MethodPost, "/v1/join-tokens", nil, r, &out)
	return out, err
}

// Events returns audit log entries with Seq > since, oldest first, at most limit (0 = server default).
func (c *Client) Events(ctx context.Context, since int64, limit int) ([]Event, error) {
	var out []Event
	q := url.Values{}
	q.Set("since", strconv.FormatInt(since, 10))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	_, _, err := c.do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, nil, &out)
	return out, err
}

// Rollouts lists rollouts, newest first.
func (c *Client) Rollouts(ctx context.Context) ([]Rollout, error) {
	var out []Rollout
	_, _, err := c.do(ctx, http.MethodGet, "/v1/rollouts", nil, nil, &out)
	return out, err
}

// Rollout returns one rollout.
func (c *Client) Rollout(ctx context.Context, id string) (Rollout, error) {
	var out Rollout
	_, _, err := c.do(ctx, http.MethodGet, "/v1/rollouts/"+esc(id), nil, nil, &out)
	return out, err
}

// RolloutAction runs pause, resume, promote, abort or rollback on a
// rollout. rollback returns the new rollout that sends the group back.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (Rollout, error) {
	var out Rollout
	_, _, err := c.do(ctx, http.MethodPost, "/v1/rollouts/"+esc(id)+"/"+esc(action), nil, struct{}{}, &out)
	return out, err
}

// Notifications lists the webhook notifications, newest first, at most
// limit (0: the server's default, 100).
func (c *Client) Notifications(ctx context.Context, limit int) ([]Notification, error) {
	var out []Notification
	path := "/v1/notifications"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	_, _, err := c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out, err
}

// RolloutResume resumes a paused rollout, or (r.Now) starts the next wave
// of one that waits for a maintenance window.
func (c *Client) RolloutResume(ctx context.Context, id string, r RolloutResumeRequest) (Rollout, error) {
	var out Rollout
	_, _, err := c.do(ctx, http.MethodPost, "/v1/rollouts/"+esc(id)+"/resume", nil, r, &out)
	return out, err
}

// RolloutRetry retries failed nodes of a rollout.
func (c *Client) RolloutRetry(ctx context.Context, id string, r RolloutRetryRequest) (Rollout, error) {
	var out Rollout
	_, _, err := c.do(ctx, http.MethodPost, "/v1/rollouts/"+esc(id)+"/retry", nil, r, &out)
	return out, err
}

// Manifest returns a published manifest by ID (canonical JSON).
func (c *Client) Manifest(ctx context.Context, id string) (json.RawMessage, error) {
	var out json.RawMessage
	_, _, err := c.do(ctx, http.MethodGet, "/v1/manifests/"+esc(id), nil, nil, &out)
	return out, err
}

// StreamEvents follows the audit log as server-sent events from since on,
// calling fn for each event until ctx ends, fn returns an error, or the
// connection drops (the error says which).
func (c *Client) StreamEvents(ctx context.Context, since int64, fn func(Event) error) error {
	resp, err := c.roundTrip(ctx, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events/stream?since="+strconv.FormatInt(since, 10), nil)
		if err == nil {
			req.Header.Set("Accept", "text/event-stream")
		}
		return req, err
	})
	if err != nil {
		return fmt.Errorf("GET /v1/events/stream: %w", c.tlsError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // id:, event:, comments and blank separators
		}
		var ev Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("event stream: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrStreamClosed
}

// ErrStreamClosed is returned by StreamEvents when the server ended the
// stream (e.g. it shut down); callers reconnect.
var ErrStreamClosed = errors.New("event stream closed by the server")
