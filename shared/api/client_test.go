package api_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/mesh"
	"github.com/slipway-dev/slipway/shared/mesh/meshtest"
	"github.com/slipway-dev/slipway/shared/tlstest"
)

// recordingDialer dials one loopback address whatever it is asked for and
// records what it was asked for, as a tsnet node's DialContext would reach
// a MagicDNS name the host cannot resolve.
type recordingDialer struct {
	target string // "127.0.0.1:port"
	fail   error  // when set, every dial fails with it

	mu    sync.Mutex
	calls []string // "network addr"
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, network+" "+addr)
	d.mu.Unlock()
	if d.fail != nil {
		return nil, d.fail
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, d.target)
}

func (d *recordingDialer) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Compact(slices.Sorted(slices.Values(d.calls)))
}

// TestClientWithDialer: with WithDialer, every kind of request (JSON,
// the long-poll, a blob download, the event stream) goes through the
// dialer, which gets the server's host name unresolved, with the default
// port.
func TestClientWithDialer(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc(api.RouteEnroll, func(w http.ResponseWriter, r *http.Request) {
		var req api.EnrollRequest
		json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.EnrollResponse{Name: req.Name})
	})
	mux.HandleFunc(api.RouteDesired, func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "slipway" {
			http.Error(w, "host "+r.Host, http.StatusBadRequest)
			return
		}
		wait, _ := time.ParseDuration(r.URL.Query().Get(api.QueryWait))
		select { // a long-poll that nothing ends early
		case <-time.After(wait):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc(api.RouteAgentBlob, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "blob "+r.PathValue("sha256"))
	})
	mux.HandleFunc(api.RouteEventStream, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		b, _ := json.Marshal(api.Event{Seq: 7, Action: "node.enroll"})
		fmt.Fprintf(w, "id: 7\ndata: %s\n\n", b)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	d := &recordingDialer{target: srv.Listener.Addr().String()}

	c, err := api.NewClient("http://slipway", "", api.WithDialer(d.dial))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if resp, err := c.Enroll(ctx, api.EnrollRequest{Name: "web-1"}); err != nil || resp.Name != "web-1" {
		t.Fatalf("Enroll: %+v, %v", resp, err)
	}
	des, has, err := c.WithToken("tok").Desired(ctx, "web-1", "sha256-x", 50*time.Millisecond)
	if err != nil || des != nil || has {
		t.Fatalf("Desired: %v %v %v", des, has, err)
	}
	rc, err := c.Blob(ctx, "web-1", "ab12")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "blob ab12" {
		t.Fatalf("blob %q", b)
	}
	var events []int64
	err = c.StreamEvents(ctx, 0, func(e api.Event) error { events = append(events, e.Seq); return nil })
	if !errors.Is(err, api.ErrStreamClosed) || !slices.Equal(events, []int64{7}) {
		t.Fatalf("StreamEvents: %v, events %v", err, events)
	}
	if got := d.seen(); !slices.Equal(got, []string{"tcp slipway:80"}) {
		t.Fatalf("dialer asked for %q, want only \"tcp slipway:80\"", got)
	}

	// A port in the address reaches the dialer as it is.
	d2 := &recordingDialer{target: srv.Listener.Addr().String()}
	c2, err := api.NewClient("http://slipway.tailnet.example:7420/", "", api.WithDialer(d2.dial))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Enroll(ctx, api.EnrollRequest{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	if got := d2.seen(); !slices.Equal(got, []string{"tcp slipway.tailnet.example:7420"}) {
		t.Fatalf("dialer asked for %q", got)
	}
}

// A dialer's error is the request's error; nothing falls back to the
// host's network.
func TestClientWithDialerFails(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	errDown := errors.New("tailnet node is down")
	d := &recordingDialer{fail: errDown}
	// The real address: a fallback to the host's network would reach it.
	c, err := api.NewClient(srv.URL, "", api.WithDialer(d.dial))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Desired(context.Background(), "web-1", "", 0)
	if !errors.Is(err, errDown) {
		t.Fatalf("Desired: %v, want the dialer's error", err)
	}
	if _, err := c.Blob(context.Background(), "web-1", "ab"); !errors.Is(err, errDown) {
		t.Fatalf("Blob: %v, want the dialer's error", err)
	}
	if err := c.StreamEvents(context.Background(), 0, func(api.Event) error { return nil }); !errors.Is(err, errDown) {
		t.Fatalf("StreamEvents: %v, want the dialer's error", err)
	}
}

func TestNewClientAddresses(t *testing.T) {
	dial := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("unused") }
	tests := []struct {
		name   string
		server string
		opts   []api.ClientOption
		want   string // error substring; "" = ok
	}{
		{"http", "http://127.0.0.1:7420", nil, ""},
		{"https with dialer", "https://slipway", []api.ClientOption{api.WithDialer(dial)}, ""},
		{"unix", "unix:///run/slipway.sock", nil, ""},
		{"unix with dialer", "unix:///run/slipway.sock", []api.ClientOption{api.WithDialer(dial)}, "cannot be reached through a dialer"},
		{"no host", "http://", nil, "no host"},
		{"scheme", "ftp://x", []api.ClientOption{api.WithDialer(dial)}, "scheme must be"},
		{"nil dialer", "http://slipway", []api.ClientOption{api.WithDialer(nil)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := api.NewClient(tt.server, "", tt.opts...)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestClientOverTailnet (a real tailnet on loopback; no t.Parallel): a
// client dialing through one tsnet node reaches a server listening on
// another by its MagicDNS name, short or fully qualified, and the server
// sees the client's tailnet identity.
func TestClientOverTailnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	control := meshtest.Control(t)
	sn := meshtest.Node(t, ctx, control, "slipway")
	cn := meshtest.Node(t, ctx, control, "web-1", mesh.DefaultAgentTag)
	ln, err := sn.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(api.RouteDesired, func(w http.ResponseWriter, r *http.Request) {
		id, err := sn.Whois(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.Desired{ID: "sha256-x", Release: id.NodeName + " " + strings.Join(id.Tags, ",")})
	})
	mux.HandleFunc(api.RouteAgentBlob, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "blob over the tailnet")
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	for _, server := range []string{"http://slipway", "http://slipway.mesh.test:80"} {
		c, err := api.NewClient(server, "", api.WithDialer(cn.DialContext))
		if err != nil {
			t.Fatal(err)
		}
		des, has, err := c.Desired(ctx, "web-1", "", 0)
		if err != nil || !has || des.Release != "web-1 "+mesh.DefaultAgentTag {
			t.Fatalf("%s: Desired: %+v, %v, %v; want the server to see web-1 with its tag", server, des, has, err)
		}
		rc, err := c.Blob(ctx, "web-1", "ab")
		if err != nil {
			t.Fatalf("%s: Blob: %v", server, err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "blob over the tailnet" {
			t.Fatalf("%s: blob %q", server, b)
		}
	}
}

// TestClientOverloadAnswers: 429 and 5xx (but 502/504, a proxy that cannot
// reach the server) are overload answers; Retry-After is read as seconds
// or an HTTP date.
func TestClientOverloadAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		overloaded bool
		lo, hi     time.Duration // RetryAfter within [lo, hi]
	}{
		{"429 seconds", http.StatusTooManyRequests, "7", true, 7 * time.Second, 7 * time.Second},
		{"503 date", http.StatusServiceUnavailable, time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), true, 80 * time.Second, 90 * time.Second},
		{"500 none", http.StatusInternalServerError, "", true, 0, 0},
		{"503 garbage", http.StatusServiceUnavailable, "soon", true, 0, 0},
		{"503 negative", http.StatusServiceUnavailable, "-3", true, 0, 0},
		{"502 proxy", http.StatusBadGateway, "5", false, 5 * time.Second, 5 * time.Second},
		{"504 proxy", http.StatusGatewayTimeout, "", false, 0, 0},
		{"409", http.StatusConflict, "", false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			c, err := api.NewClient(srv.URL, "tok")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Confirm(context.Background(), "web-1", api.ConfirmRequest{ID: "sha256-x", Number: 1})
			var se *api.StatusError
			if !errors.As(err, &se) || se.Status != tt.status {
				t.Fatalf("error %v, want a StatusError %d", err, tt.status)
			}
			if got := api.Overloaded(err) != nil; got != tt.overloaded {
				t.Fatalf("Overloaded = %v, want %v", got, tt.overloaded)
			}
			if se.RetryAfter < tt.lo || se.RetryAfter > tt.hi {
				t.Fatalf("RetryAfter %v, want within [%v, %v]", se.RetryAfter, tt.lo, tt.hi)
			}
		})
	}
	if api.Overloaded(errors.New("dial tcp: connection refused")) != nil {
		t.Fatal("a transport error is not an overload answer")
	}
}

// TestClientTLS: an https:// server is verified against the CA file
// given (WithCAFile), else the system's roots; a wrong CA is refused with
// an error that names where the roots came from.
func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "slipway test CA"), tlstest.NewCA(t, "another CA")
	pair := ca.Server(t, "slipway-server")
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[]`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, caFile string
		newErr       string // from NewClient
		callErr      string // from the call
	}{
		{name: "right CA", caFile: ca.Write(t, dir, "ca.pem")},
		{name: "wrong CA", caFile: other.Write(t, dir, "other.pem"), callErr: "x509: certificate signed by unknown authority (the server's certificate is not signed by a CA in the CA file " + filepath.Join(dir, "other.pem") + ")"},
		{name: "system roots", callErr: "(the server's certificate is not signed by a CA in the system's roots)"},
		{name: "missing CA file", caFile: filepath.Join(dir, "nope.pem"), newErr: "CA file: open " + filepath.Join(dir, "nope.pem") + ": no such file or directory"},
		{name: "CA file without a certificate", caFile: empty, newErr: "CA file " + empty + ": no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []api.ClientOption
			if tc.caFile != "" {
				opts = append(opts, api.WithCAFile(tc.caFile))
			}
			c, err := api.NewClient(srv.URL, "tok", opts...)
			if tc.newErr != "" {
				if err == nil || err.Error() != tc.newErr {
					t.Fatalf("NewClient: %v, want %q", err, tc.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Nodes(context.Background())
			switch {
			case tc.callErr == "" && err != nil:
				t.Fatalf("Nodes: %v", err)
			case tc.callErr != "" && (err == nil || !strings.Contains(err.Error(), tc.callErr)):
				t.Fatalf("Nodes: %v, want an error containing %q", err, tc.callErr)
			}
		})
	}
}
