// Package apitest checks HTTP handlers against slipway's OpenAPI spec
// (shared/api/openapi.yaml) in tests: wrap the server's handler with
// Validator.Handler, drive it, and every request and response that does
// not match the spec fails the test. RequireCoverage then fails the test
// for every operation the test never exercised.
//
// What counts as a mismatch:
//
//   - a request to a method and path the spec does not describe;
//   - a request whose parameters, headers, bearer token presence or body do
//     not match its operation (query parameters the operation does not
//     declare included);
//   - a response whose status the operation does not declare, whose
//     declared headers are missing or malformed, whose Content-Type is not
//     declared, or whose body does not match the declared schema (or is not
//     empty where the spec declares no body).
//
// A request the spec rejects is fine when the server rejects it too, so
// tests can send bad requests on purpose and check the server turns them
// away: a mismatched request answered with a 4xx status, or a request to an
// unknown route answered with 404 or 405, is logged (t.Logf), not failed;
// the 4xx answer to a known route is still validated. The same requests
// answered otherwise fail the test. Strict turns this leniency off.
//
// An answer to a client that went away before the handler returned (its
// request context is done, as when a long-poll is given up) is not
// validated: nobody receives it.
//
// Authentication is the server's job: any present bearer token satisfies
// the spec's security schemes here. The agent and admin operations also
// list the empty security requirement ({}), which stands for the caller's
// tailnet identity and is accepted only over the server's tailnet node:
// a Validator made with Tailnet (for a handler served there) counts it, so
// those requests need no token; any other Validator ignores it, so they
// need a bearer token, as on every other listener.
//
// Bodies: request bodies of application/octet-stream are never read by the
// validator (only their Content-Type is checked against the operation);
// other request bodies and all response bodies are validated up to MaxBody
// bytes. Larger ones stream through unchanged, and only their Content-Type
// (and for responses the status and headers) is checked. Server-sent event
// streams (text/event-stream answers) are never kept: they pass through as
// the handler flushes them, and only their status and Content-Type are
// checked, when the handler returns (a stream the client left is not
// checked at all, as above).
//
// This package is for tests only; it never changes what the handler sees
// or what the client receives.
package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/slipway-dev/slipway/shared/api"
)

// MaxBody is the largest request or response body the validator buffers
// for validation.
const MaxBody = 1 << 20

const (
	octetStream = "application/octet-stream"
	eventStream = "text/event-stream"
)

// Validator validates traffic against the spec. It is safe for concurrent
// use.
type Validator struct {
	t       testing.TB
	doc     *openapi3.T
	router  routers.Router
	strict  bool
	tailnet bool

	mu        sync.Mutex
	exercised map[string]map[int]int // "METHOD /path" → status → count
	problems  []string
}

// Option changes a Validator.
type Option func(*Validator)

// Strict makes every request mismatch and every request to an unknown
// route fail the test, even when the server rejected it with a 4xx status.
func Strict() Option { return func(v *Validator) { v.strict = true } }

// Tailnet validates traffic as the server's tailnet listener sees it: an
// operation's empty security requirement (the caller's tailnet identity,
// see the package doc) is satisfied by any request, so agent and admin
// requests without a bearer token match the spec.
func Tailnet() Option { return func(v *Validator) { v.tailnet = true } }

// New loads the spec and builds a Validator that reports to t. It fails t
// at once if the spec does not load.
func New(t testing.TB, opts ...Option) *Validator {
	t.Helper()
	doc, err := LoadSpec()
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	v := &Validator{t: t, doc: doc, exercised: map[string]map[int]int{}}
	for _, o := range opts {
		o(v)
	}
	if !v.tailnet {
		withoutTailnet(doc)
	}
	// The spec's servers name the default address; the router would match
	// only requests to it, and tests serve on any loopback port.
	doc.Servers = nil
	if v.router, err = gorillamux.NewRouter(doc); err != nil {
		t.Fatalf("apitest: router: %v", err)
	}
	return v
}

// withoutTailnet drops the empty security requirement ({}, the caller's
// tailnet identity) from every operation that also names a scheme: off the
// tailnet only tokens count. An operation with no security, or with only
// {}, keeps it.
func withoutTailnet(doc *openapi3.T) {
	for _, path := range doc.Paths.InMatchingOrder() {
		for _, op := range doc.Paths.Value(path).Operations() {
			if op.Security == nil {
				continue
			}
			var kept openapi3.SecurityRequirements
			for _, req := range *op.Security {
				if len(req) > 0 {
					kept = append(kept, req)
				}
			}
			if len(kept) > 0 {
				op.Security = &kept
			}
		}
	}
}

// Handler returns h wrapped in validation of each request and response.
func (v *Validator) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.serve(h, w, r)
	})
}

// Exercised returns, for every operation a request reached ("METHOD /path",
// as in api.Routes), the sorted statuses it was answered with.
func (v *Validator) Exercised() map[string][]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string][]int, len(v.exercised))
	for op, statuses := range v.exercised {
		out[op] = slices.Sorted(maps.Keys(statuses))
	}
	return out
}

// Problems returns every mismatch reported so far, in order.
func (v *Validator) Problems() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.problems)
}

// RequireCoverage fails t, listing them, when some operations of the spec
// were never exercised through Handler. Call it at the end of a test, after
// the server is closed: a request is recorded when its handler returns
// (httptest.Server.Close waits for that).
func (v *Validator) RequireCoverage(t testing.TB) {
	t.Helper()
	exercised := v.Exercised()
	var missing []string
	total := 0
	for _, path := range v.doc.Paths.InMatchingOrder() {
		for method, op := range v.doc.Paths.Value(path).Operations() {
			total++
			key := method + " " + path
			if _, ok := exercised[key]; !ok {
				missing = append(missing, fmt.Sprintf("%s (%s)", key, op.OperationID))
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("apitest: %d of %d operations never exercised:\n\t%s", len(missing), total, strings.Join(missing, "\n\t"))
	}
}

func (v *Validator) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	where := r.Method + " " + r.URL.RequestURI()

	route, pathParams, routeErr := v.router.FindRoute(r)
	if routeErr != nil {
		v.serveUnrouted(h, w, r, where, routeErr)
		return
	}
	key := route.Method + " " + route.Path
	op := route.Operation
	in, reqProblems := v.checkRequest(r, route, pathParams)

	rw := newRecorder(w)
	h.ServeHTTP(rw, r)
	status := rw.finish()
	v.record(key, status)

	where = fmt.Sprintf("%s → %d", where, status)
	if len(reqProblems) > 0 {
		msg := fmt.Sprintf("%s: request does not match %s (%s):\n\t%s", where, key, op.OperationID, strings.Join(reqProblems, "\n\t"))
		if !v.strict && status >= 400 && status < 500 {
			v.t.Logf("apitest: %s\n(rejected by the server: fine)", msg)
		} else {
			v.fail(msg)
		}
	}
	if err := ctx.Err(); err != nil {
		// The client went away (or gave up a long-poll): nobody receives
		// this answer, so it is no part of the contract.
		v.t.Logf("apitest: %s: response not validated: the client went away (%v)", where, err)
		return
	}
	if probs := v.checkResponse(ctx, in, rw, status); len(probs) > 0 {
		msg := fmt.Sprintf("%s: response does not match %s (%s):\n\t%s", where, key, op.OperationID, strings.Join(probs, "\n\t"))
		if !rw.overflow && len(rw.buf.Bytes()) > 0 && r.Method != http.MethodHead {
			msg += "\n\tbody: " + excerpt(rw.buf.Bytes())
		}
		v.fail(msg)
	}
}

// serveUnrouted serves a request for a route the spec lacks, and fails the
// test unless (not strict) the server refused it with 404 or 405.
func (v *Validator) serveUnrouted(h http.Handler, w http.ResponseWriter, r *http.Request, where string, routeErr error) {
	rw := newRecorder(w)
	h.ServeHTTP(rw, r)
	status := rw.finish()
	msg := fmt.Sprintf("%s → %d: route not in the spec: %v", where, status, routeErr)
	if !v.strict && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		v.t.Logf("apitest: %s (rejected by the server: fine)", msg)
		return
	}
	v.fail(msg)
}

// checkRequest validates r against its route on a clone (validation must
// not change what the handler reads) and returns the validation input, for
// the response, with the request's problems.
func (v *Validator) checkRequest(r *http.Request, route *routers.Route, pathParams map[string]string) (*openapi3filter.RequestValidationInput, []string) {
	ctx := r.Context()
	vr := r.Clone(ctx)
	vr.GetBody = nil
	bodyExcluded := takeRequestBody(r, vr)
	var problems []string
	if bodyExcluded {
		problems = append(problems, checkExcludedBody(route.Operation, r)...)
	}
	problems = append(problems, checkQueryNames(route, r)...)
	in := &openapi3filter.RequestValidationInput{
		Request:    vr,
		PathParams: pathParams,
		Route:      route,
		Options:    v.options(bodyExcluded),
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		problems = append(problems, explain(err)...)
	}
	return in, problems
}

// takeRequestBody reads a JSON (or other non-binary) request body of up to
// MaxBody bytes, gives the handler the same bytes, and puts them into vr.
// It reports excluded = true, leaving vr without a body, for binary bodies
// and for larger ones (which the handler then reads in full, unchanged).
func takeRequestBody(r, vr *http.Request) (excluded bool) {
	vr.Body = http.NoBody
	if r.Body == nil || r.Body == http.NoBody {
		vr.ContentLength = 0
		return false
	}
	if mediaType(r.Header.Get("Content-Type")) == octetStream {
		return true
	}
	orig := r.Body
	data, err := io.ReadAll(io.LimitReader(orig, MaxBody+1))
	if err != nil || len(data) > MaxBody {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(data), orig), orig}
		return true
	}
	r.Body = readCloser{bytes.NewReader(data), orig}
	vr.Body = io.NopCloser(bytes.NewReader(data))
	vr.ContentLength = int64(len(data))
	return false
}

type readCloser struct {
	io.Reader
	io.Closer
}

// checkExcludedBody checks what can be checked of a body the validator did
// not read: that the operation takes a body, of that media type.
func checkExcludedBody(op *openapi3.Operation, r *http.Request) []string {
	ct := r.Header.Get("Content-Type")
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return []string{fmt.Sprintf("request body (%q) not declared for this operation", ct)}
	}
	if op.RequestBody.Value.Content.Get(ct) == nil {
		return []string{fmt.Sprintf("request Content-Type %q not declared (want one of %s)", ct, strings.Join(slices.Sorted(maps.Keys(op.RequestBody.Value.Content)), ", "))}
	}
	return nil
}

// checkQueryNames reports query parameters the operation does not declare
// (kin-openapi ignores them).
func checkQueryNames(route *routers.Route, r *http.Request) []string {
	declared := map[string]bool{}
	for _, params := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, p := range params {
			if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
				declared[p.Value.Name] = true
			}
		}
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(r.URL.Query())) {
		if !declared[name] {
			out = append(out, fmt.Sprintf("query parameter %q not declared", name))
		}
	}
	return out
}

func (v *Validator) options(excludeRequestBody bool) *openapi3filter.Options {
	return &openapi3filter.Options{
		ExcludeRequestBody:                excludeRequestBody,
		IncludeResponseStatus:             true,
		MultiError:                        true,
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true,
		AuthenticationFunc:                anyBearer,
		SchemaValidationOptions:           []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
	}
}

// anyBearer accepts any non-empty bearer token: which token may do what is
// the server's business, not the spec's.
func anyBearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	if s == nil || s.Type != "http" || !strings.EqualFold(s.Scheme, "bearer") {
		return in.NewError(fmt.Errorf("apitest supports only http bearer schemes, not %q", in.SecuritySchemeName))
	}
	scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return in.NewError(fmt.Errorf("%s: no bearer token in Authorization", in.SecuritySchemeName))
	}
	return nil
}

// checkResponse validates the recorded response against the operation.
func (v *Validator) checkResponse(ctx context.Context, in *openapi3filter.RequestValidationInput, rw *recorder, status int) []string {
	op := in.Route.Operation
	ref := op.Responses.Status(status)
	if ref == nil || ref.Value == nil {
		return []string{fmt.Sprintf("status %d not declared (declared: %s)", status, strings.Join(slices.Sorted(maps.Keys(op.Responses.Map())), ", "))}
	}
	resp := ref.Value
	hdr := rw.sent
	head := in.Request.Method == http.MethodHead
	var probs []string

	// Neither a HEAD answer nor a 304 has a body, and kin-openapi checks
	// nothing of either: check the headers here.
	if head || status == http.StatusNotModified {
		probs = append(probs, checkHeaders(resp, hdr)...)
		if !head && rw.buf.Len() > 0 {
			probs = append(probs, "body sent with a 304")
		}
		return probs
	}
	if rw.stream {
		// An event stream has no schema to check, and was not kept.
		if resp.Content.Get(hdr.Get("Content-Type")) == nil {
			declared := slices.Sorted(maps.Keys(resp.Content))
			if len(declared) == 0 {
				return append(probs, fmt.Sprintf("body sent (Content-Type %q) where the spec declares none", hdr.Get("Content-Type")))
			}
			probs = append(probs, fmt.Sprintf("response Content-Type %q not declared (declared: %s)", hdr.Get("Content-Type"), strings.Join(declared, ", ")))
		}
		return probs
	}
	if len(resp.Content) == 0 && (rw.buf.Len() > 0 || rw.overflow) {
		probs = append(probs, fmt.Sprintf("body sent (Content-Type %q) where the spec declares none", hdr.Get("Content-Type")))
	}
	opts := v.options(false)
	opts.ExcludeResponseBody = rw.overflow
	if rw.overflow {
		// Content-Type is checked with the body, which is skipped.
		if len(resp.Content) > 0 && resp.Content.Get(hdr.Get("Content-Type")) == nil {
			probs = append(probs, fmt.Sprintf("response Content-Type %q not declared", hdr.Get("Content-Type")))
		}
	}
	err := openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 hdr,
		Body:                   io.NopCloser(bytes.NewReader(rw.buf.Bytes())),
		Options:                opts,
	})
	if err != nil {
		probs = append(probs, explain(err)...)
	}
	return probs
}

// checkHeaders checks the declared headers of a response kin-openapi does
// not validate (HEAD, 304).
func checkHeaders(resp *openapi3.Response, hdr http.Header) []string {
	var probs []string
	for _, name := range slices.Sorted(maps.Keys(resp.Headers)) {
		h := resp.Headers[name].Value
		if h == nil {
			continue
		}
		vals := hdr.Values(name)
		if len(vals) == 0 {
			if h.Required {
				probs = append(probs, fmt.Sprintf("response header %q missing", name))
			}
			continue
		}
		if h.Schema == nil || h.Schema.Value == nil {
			continue
		}
		var val any = vals[0]
		if h.Schema.Value.Type.Is(openapi3.TypeInteger) || h.Schema.Value.Type.Is(openapi3.TypeNumber) {
			n, err := strconv.ParseFloat(vals[0], 64)
			if err != nil {
				probs = append(probs, fmt.Sprintf("response header %q: %q is not a number", name, vals[0]))
				continue
			}
			val = n
		}
		if err := h.Schema.Value.VisitJSON(val, openapi3.DisableSchemaErrorDetails()); err != nil {
			probs = append(probs, fmt.Sprintf("response header %q doesn't match schema: %v", name, err))
		}
	}
	return probs
}

// explain flattens a kin-openapi error into one line per problem.
func explain(err error) []string {
	switch e := err.(type) {
	case openapi3.MultiError:
		var out []string
		for _, sub := range e {
			out = append(out, explain(sub)...)
		}
		return out
	case *openapi3filter.SecurityRequirementsError:
		var out []string
		for _, sub := range e.Errors {
			out = append(out, explain(sub)...)
		}
		if len(out) > 0 {
			return out
		}
	case *openapi3filter.RequestError:
		if me, ok := e.Err.(openapi3.MultiError); ok && len(me) > 0 {
			outer := &openapi3filter.RequestError{Parameter: e.Parameter, RequestBody: e.RequestBody, Reason: e.Reason}
			return prefixed(strings.TrimSuffix(outer.Error(), ": "), explain(me))
		}
	case *openapi3filter.ResponseError:
		if me, ok := e.Err.(openapi3.MultiError); ok && len(me) > 0 {
			return prefixed(e.Reason, explain(me))
		}
	}
	return []string{strings.ReplaceAll(err.Error(), "\n", " ")}
}

func prefixed(prefix string, lines []string) []string {
	if prefix == "" {
		return lines
	}
	for i, l := range lines {
		lines[i] = prefix + ": " + l
	}
	return lines
}

func (v *Validator) record(key string, status int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.exercised[key]
	if m == nil {
		m = map[int]int{}
		v.exercised[key] = m
	}
	m[status]++
}

func (v *Validator) fail(msg string) {
	v.mu.Lock()
	v.problems = append(v.problems, msg)
	v.mu.Unlock()
	v.t.Errorf("apitest: %s", msg)
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

func excerpt(b []byte) string {
	const max = 512
	s := string(b)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}

// LoadSpec parses api.Spec, resolves its references and validates it as an
// OpenAPI 3.0 document. Each call returns a fresh document.
func LoadSpec() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("openapi spec: load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi spec: validate: %w", err)
	}
	return doc, nil
}
