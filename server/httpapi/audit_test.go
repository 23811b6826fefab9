package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/shared/api"
)

// auditServer serves a handler whose registry aggregates refusals per
// minute and whose callers may hold two event streams each; with spec,
// requests and answers are checked against the spec (slow for huge paths).
func auditServer(t *testing.T, spec bool) (*httptest.Server, *registry.Registry) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, nil, registry.Config{Audit: registry.AuditConfig{RefusalWindow: time.Minute}}, zerolog.Nop())
	h := New(reg, rollout.New(reg, rollout.Config{}, zerolog.Nop()), nil, []AdminToken{
		{Name: "ops", Role: api.RoleAdmin, SHA256: HashToken(adminTok)},
		{Name: "dash", Role: api.RoleViewer, SHA256: HashToken(viewerTok)},
	}, api.Spec, zerolog.Nop())
	h.LimitStreams(NewStreamLimit(2))
	var handler http.Handler = h
	if spec {
		handler, _ = wrap(t, h)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(func() { srv.Close(); st.Close() })
	return srv, reg
}

func get(t *testing.T, ctx context.Context, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestEventStreamsCappedPerCaller: a caller's third stream is 429 with
// Retry-After and a message naming the cap; another caller is not
// affected; a closed stream frees its slot.
func TestEventStreamsCappedPerCaller(t *testing.T) {
	srv, _ := auditServer(t, true)
	ctx := t.Context()
	var cancels []context.CancelFunc
	for range 2 {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		resp := get(t, sctx, srv.URL+"/v1/events/stream", viewerTok)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %s", resp.Status)
		}
		defer resp.Body.Close()
	}
	resp := get(t, ctx, srv.URL+"/v1/events/stream", viewerTok)
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" || e.Code != api.CodeOverloaded ||
		!strings.Contains(e.Error, "token:dash already has 2 event streams open") {
		t.Fatalf("third stream: %s Retry-After %q %+v", resp.Status, resp.Header.Get("Retry-After"), e)
	}
	sctx, cancel := context.WithCancel(ctx)
	if resp := get(t, sctx, srv.URL+"/v1/events/stream", adminTok); resp.StatusCode != http.StatusOK {
		t.Errorf("another caller's stream: %s", resp.Status)
	}
	cancel()
	cancels[0]()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sctx, cancel := context.WithCancel(ctx)
		resp := get(t, sctx, srv.URL+"/v1/events/stream", viewerTok)
		status := resp.StatusCode
		cancel()
		resp.Body.Close()
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream did not free its slot: %d", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancels[1]()
}

// TestRefusalsAggregatedOverHTTP: refused requests with huge paths from
// one client are one audit event at once and one count at the window's
// end, each with a short target.
func TestRefusalsAggregatedOverHTTP(t *testing.T) {
	srv, reg := auditServer(t, false)
	ctx := t.Context()
	path := "/v1/nodes/" + strings.Repeat("x", 100<<10)
	for range 50 {
		resp := get(t, ctx, srv.URL+path, "")
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated: %s", resp.Status)
		}
	}
	if err := reg.FlushRefusals(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err := reg.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %+v", len(evs), evs)
	}
	for _, e := range evs {
		if e.Action != "auth.denied" || e.Actor != "anonymous" || len(e.Target) > 128 || !strings.HasPrefix(e.Target, "GET /v1/nodes/xxx") {
			t.Errorf("event %+v", e)
		}
	}
	if want := "missing bearer token from 127.0.0.1: 49 more refused in 1m0s"; !strings.HasPrefix(evs[1].Detail, want) {
		t.Errorf("count detail %q, want %q…", evs[1].Detail, want)
	}
}
