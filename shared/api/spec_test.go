package api_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/api/apitest"
)

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := apitest.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestSpecLoads(t *testing.T) {
	doc := loadSpec(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3 (the version kin-openapi fully validates)", doc.OpenAPI)
	}
	if doc.Info.Version != fmt.Sprint(api.ProtocolVersion) {
		t.Errorf("info.version = %q, want the protocol version %d", doc.Info.Version, api.ProtocolVersion)
	}
}

// TestSpecRoutes checks that the spec describes exactly api.Routes.
func TestSpecRoutes(t *testing.T) {
	doc := loadSpec(t)
	inSpec := map[string]bool{}
	for _, path := range doc.Paths.InMatchingOrder() {
		for method := range doc.Paths.Value(path).Operations() {
			inSpec[method+" "+path] = true
		}
	}
	inGo := map[string]bool{}
	for _, r := range api.Routes {
		if inGo[r] {
			t.Errorf("api.Routes lists %q twice", r)
		}
		inGo[r] = true
	}
	for _, r := range slices.Sorted(maps.Keys(inGo)) {
		if !inSpec[r] {
			t.Errorf("missing from openapi.yaml: %s", r)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(inSpec)) {
		if !inGo[r] {
			t.Errorf("in openapi.yaml but not in api.Routes: %s", r)
		}
	}
}

// TestSpecOperations checks what every operation must have: an
// operationId, a summary, a description, its security, and the Error
// schema on every 4xx/5xx that can carry a body.
func TestSpecOperations(t *testing.T) {
	doc := loadSpec(t)
	ids := map[string]string{}
	for _, path := range doc.Paths.InMatchingOrder() {
		for method, op := range doc.Paths.Value(path).Operations() {
			key := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s: no operationId", key)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s: operationId %q also used by %s", key, op.OperationID, other)
			}
			ids[op.OperationID] = key
			if op.Summary == "" || op.Description == "" {
				t.Errorf("%s: summary and description are both required", key)
			}

			if op.Security == nil {
				t.Errorf("%s: no security (write `security: []` for none)", key)
			} else {
				var schemes []string
				tailnet := 0 // empty requirements: the caller's tailnet identity
				for _, req := range *op.Security {
					schemes = append(schemes, slices.Sorted(maps.Keys(req))...)
					if len(req) == 0 {
						tailnet++
					}
				}
				want := wantSecurity(path)
				if !slices.Equal(schemes, want) {
					t.Errorf("%s: security %v, want %v", key, schemes, want)
				}
				// Every route that takes a token takes, over the tailnet,
				// the caller's WhoIs identity instead: [{scheme}, {}].
				if wantTailnet := len(want) > 0; wantTailnet && (len(*op.Security) != 2 || tailnet != 1) {
					t.Errorf("%s: security %v, want [{%s: []}, {}] ({}: the caller's tailnet identity)", key, *op.Security, want[0])
				} else if !wantTailnet && len(*op.Security) != 0 {
					t.Errorf("%s: security %v, want [] (none)", key, *op.Security)
				}
				if slices.Equal(want, []string{"adminToken"}) {
					role, _ := op.Extensions["x-slipway-role"].(string)
					if !slices.Contains([]string{api.RoleViewer, api.RoleDeployer, api.RoleAdmin}, role) {
						t.Errorf("%s: x-slipway-role %q, want viewer, deployer or admin", key, role)
					}
					if !strings.Contains(op.Description, "**"+role+"**") {
						t.Errorf("%s: description does not name the role %q", key, role)
					}
				}
			}

			for code, ref := range op.Responses.Map() {
				if code < "400" {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				switch {
				case method == http.MethodHead:
					if len(ref.Value.Content) != 0 {
						t.Errorf("%s %s: a HEAD answer has no body", key, code)
					}
				case mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error":
					t.Errorf("%s %s: body is not the Error schema", key, code)
				}
			}
		}
	}
}

func wantSecurity(path string) []string {
	switch {
	case path == "/v1/agent/enroll", path == "/healthz", path == "/readyz", path == "/openapi.yaml":
		return nil
	case strings.HasPrefix(path, "/v1/agent/nodes/"):
		return []string{"nodeToken"}
	default:
		return []string{"adminToken"}
	}
}

var (
	t0 = time.Date(2026, 11, 22, 10, 30, 0, 123456789, time.FixedZone("CET", 3600))
	id = "sha256-" + strings.Repeat("ab", 32)
)

var fullStrategy = api.Strategy{
	Kind: api.StrategyCanary, MaxParallel: 4, BatchSize: 2, MaxUnavailable: 1, Stagger: "30s",
	Canary: 1, CanaryPercent: 10, Analysis: "5m", MaxFailures: 1, AutoRevert: true,
	OnNodeDown: api.NodeDownSkip, NodeDeadline: "3m30s", Windows: []string{"Mon-Fri 02:00-05:00 Europe/Berlin"},
	AnalysisGates: []api.AnalysisGate{{Name: "errors", Query: `sum(rate(app_errors_total{instance=~"{{nodes}}"}[1m]))`, Condition: "result < 0.01",
		Scope: api.ScopeAggregate, Aggregate: "max", Interval: "30s", Count: 5, FailureLimit: 1, ConsecutiveErrorLimit: &errorLimit}},
}

var measuredValue, errorLimit = 0.004, 2

var fullAnalysisRun = api.AnalysisRun{Gate: "errors", Query: `sum(rate(app_errors_total{instance=~"web-1"}[1m]))`, Verdict: "failed", Wave: 1,
	Reason: `analysis "errors" failed`, Successful: 1, Failed: 2, Inconclusive: 1, ErrorRun: 1, Measurements: []api.AnalysisMeasurement{
		{At: t0, Outcome: "successful", Value: &measuredValue, Message: "sum of 1 series is 0.004"}}}

var fullRolloutNode = api.RolloutNode{Name: "web-1", State: api.RolloutNodeFailed, Previous: id, Reason: "reverted: health check web-http failed", PublishedAt: t0}

var fullWave = api.Wave{Name: "canary", State: api.WaveFailed, Nodes: []api.RolloutNode{fullRolloutNode}, StartedAt: t0, FinishedAt: t0.Add(time.Minute)}

var fullRollout = api.Rollout{
	ID: "ro3", Release: "r1-web", Group: "role=web", Manifest: id, Strategy: fullStrategy,
	State: api.RolloutReverted, Reason: "1 failure, max_failures 0", Wave: 1, Waves: []api.Wave{fullWave},
	Failures: 1, Rollback: true, CreatedAt: t0, UpdatedAt: t0.Add(2 * time.Minute), CreatedBy: "token:ci",
	WindowOpensAt: t0.Add(time.Hour), WindowOverride: 2, AnalysisRuns: []api.AnalysisRun{fullAnalysisRun},
}

var fullReport = api.Report{
	AgentVersion: "0.1.0",
	State:        api.AgentSwitching,
	Phase:        "verify",
	Current:      3,
	CurrentID:    id,
	LastGood:     2,
	Target:       id,
	Outcome:      "reverted",
	Reason:       "health check web-http failed",
	Generations:  []api.GenerationReport{{Number: 3, ID: id, Status: "quarantined", Reason: "unhealthy"}},
	Units:        []api.UnitReport{{Name: "web.service", Active: "active", Sub: "running"}},
	Warnings:     []string{"units/web.service:4: Unknown key 'ExecStrat' in section [Service], ignoring."},
	Time:         t0,
}

// wireTypes is every type in api.go, as a fully populated and a zero value,
// with the component schema it must match.
var wireTypes = []struct {
	schema string
	full   any
	zero   any
}{
	{"Error", api.Error{Error: "no such node", Code: api.CodeNotFound, Hint: "slipway nodes"}, api.Error{}},
	{"EnrollRequest", api.EnrollRequest{Name: "web-1", JoinToken: "jt", Labels: map[string]string{"role": "web"}, AgeRecipient: "age1x", AgentVersion: "0.1.0"}, api.EnrollRequest{}},
	{"EnrollResponse", api.EnrollResponse{Name: "web-1", NodeToken: "nt"}, api.EnrollResponse{}},
	{"Desired", api.Desired{ID: id, Release: "r1-web", Manifest: json.RawMessage(`{"units":{"web.service":"[Service]\n"}}`), Retry: 1}, api.Desired{}},
	{"GenerationReport", fullReport.Generations[0], api.GenerationReport{}},
	{"UnitReport", fullReport.Units[0], api.UnitReport{}},
	{"Report", fullReport, api.Report{}},
	{"ConfirmRequest", api.ConfirmRequest{ID: id, Number: 3, Report: &fullReport}, api.ConfirmRequest{}},
	{"ConfirmResponse", api.ConfirmResponse{Confirmed: true, ReportRecorded: true}, api.ConfirmResponse{}},
	{"Node", api.Node{
		Name: "web-1", Labels: map[string]string{"role": "web"}, AgeRecipient: "age1x", AgentVersion: "0.1.0",
		EnrolledAt: t0, LastSeen: t0.Add(time.Minute), State: api.NodeConverged,
		Desired: id, DesiredFrom: "r1-web", Actual: id, ActualNumber: 3, Confirmed: id, Retry: 1,
		Liveness: api.LivenessSuspect, LivenessSince: t0.Add(2 * time.Minute),
		Report: &fullReport,
	}, api.Node{}},
	{"CreateReleaseRequest", api.CreateReleaseRequest{Name: "web", Target: "role=web", Manifest: json.RawMessage(`{"units":{}}`), Strategy: &fullStrategy, Queue: true}, api.CreateReleaseRequest{}},
	{"Strategy", fullStrategy, api.Strategy{}},
	{"AnalysisGate", fullStrategy.AnalysisGates[0], api.AnalysisGate{Name: "x", Query: "up", Condition: "result > 0"}},
	{"AnalysisRun", fullAnalysisRun, api.AnalysisRun{Verdict: "running"}},
	{"AnalysisMeasurement", fullAnalysisRun.Measurements[0], api.AnalysisMeasurement{Outcome: "inconclusive"}},
	{"Rollout", fullRollout, api.Rollout{}},
	{"Wave", fullWave, api.Wave{}},
	{"RolloutNode", fullRolloutNode, api.RolloutNode{}},
	{"RolloutRetryRequest", api.RolloutRetryRequest{Node: "web-1"}, api.RolloutRetryRequest{}},
	{"RolloutResumeRequest", api.RolloutResumeRequest{Now: true}, api.RolloutResumeRequest{}},
	{"Notification", api.Notification{ID: "n7", Notifier: "ops", Kind: api.NotifyReverted, Time: t0, Rollout: "ro3", Release: "r1-web", Group: "role=web",
		State: api.RolloutReverted, Node: "web-1", Detail: "1 node(s) failed", Delivery: api.DeliveryPending, Attempts: 2,
		NextAttempt: t0.Add(time.Minute), LastError: "HTTP 503: busy", DeliveredAt: t0}, api.Notification{}},
	{"Release", api.Release{ID: "r1-web", Rollout: "ro1", Name: "web", Target: "role=web", Manifest: id, Nodes: []string{"web-1"}, CreatedAt: t0, CreatedBy: "token:ci"}, api.Release{}},
	{"RollbackRequest", api.RollbackRequest{To: 2}, api.RollbackRequest{}},
	{"JoinTokenRequest", api.JoinTokenRequest{TTL: "1h30m", Node: "web-1"}, api.JoinTokenRequest{}},
	{"JoinToken", api.JoinToken{Token: "jt", ExpiresAt: t0, Node: "web-1"}, api.JoinToken{}},
	{"Event", api.Event{Seq: 7, Time: t0, Actor: "token:ci", Action: "release.create", Target: "r1-web", Detail: "3 nodes"}, api.Event{}},
}

// TestWireTypesCovered checks that wireTypes lists every struct type
// declared in api.go, so a new wire type cannot skip the schema tests.
func TestWireTypesCovered(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "api.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, wt := range wireTypes {
		listed[reflect.TypeOf(wt.full).Name()] = true
	}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			if _, isStruct := ts.Type.(*ast.StructType); isStruct && ts.Name.IsExported() && !listed[ts.Name.Name] {
				t.Errorf("api.%s is not in wireTypes: add it (and its schema to openapi.yaml)", ts.Name.Name)
			}
		}
	}
}

// TestWireTypesMatchSchemas marshals every wire type, fully populated and
// zero, and validates the JSON against its component schema.
func TestWireTypesMatchSchemas(t *testing.T) {
	doc := loadSpec(t)
	for _, wt := range wireTypes {
		t.Run(wt.schema, func(t *testing.T) {
			ref := doc.Components.Schemas[wt.schema]
			if ref == nil {
				t.Fatalf("no component schema %q", wt.schema)
			}
			if missing := zeroFields(reflect.ValueOf(wt.full), reflect.TypeOf(wt.full).Name()); len(missing) > 0 {
				t.Fatalf("the full value is not full; set %s", strings.Join(missing, ", "))
			}
			for _, c := range []struct {
				name string
				v    any
			}{{"full", wt.full}, {"zero", wt.zero}} {
				b, err := json.Marshal(c.v)
				if err != nil {
					t.Fatal(err)
				}
				var doc any
				if err := json.Unmarshal(b, &doc); err != nil {
					t.Fatal(err)
				}
				if err := ref.Value.VisitJSON(doc, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails()); err != nil {
					t.Errorf("%s value %s does not match #/components/schemas/%s:\n%v", c.name, b, wt.schema, err)
				}
			}
		})
	}
}

// TestSchemasMirrorGoFields compares each schema with its Go type field by
// field: the same JSON names, required exactly when not omitempty/omitzero,
// a matching type and format, and additionalProperties false.
func TestSchemasMirrorGoFields(t *testing.T) {
	doc := loadSpec(t)
	for _, wt := range wireTypes {
		t.Run(wt.schema, func(t *testing.T) {
			checkStruct(t, doc, reflect.TypeOf(wt.full), doc.Components.Schemas[wt.schema])
		})
	}
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

func checkStruct(t *testing.T, doc *openapi3.T, typ reflect.Type, ref *openapi3.SchemaRef) {
	t.Helper()
	if ref == nil || ref.Value == nil {
		t.Errorf("%s: no schema", typ.Name())
		return
	}
	s := ref.Value
	if !s.Type.Is(openapi3.TypeObject) {
		t.Errorf("%s: schema type %v, want object", typ.Name(), s.Type)
	}
	if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
		t.Errorf("%s: schema lacks additionalProperties: false", typ.Name())
	}
	var names, required []string
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		optional := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		if !optional {
			required = append(required, name)
		}
		prop := s.Properties[name]
		if prop == nil {
			t.Errorf("%s.%s: no property %q in the schema", typ.Name(), f.Name, name)
			continue
		}
		checkType(t, doc, typ.Name()+"."+f.Name, f.Type, prop)
	}
	slices.Sort(names)
	slices.Sort(required)
	if got := slices.Sorted(maps.Keys(s.Properties)); !slices.Equal(got, names) {
		t.Errorf("%s: schema properties %v, Go fields %v", typ.Name(), got, names)
	}
	if got := slices.Sorted(slices.Values(s.Required)); !slices.Equal(got, required) {
		t.Errorf("%s: schema required %v, Go fields without omitempty %v", typ.Name(), got, required)
	}
}

func checkType(t *testing.T, doc *openapi3.T, field string, typ reflect.Type, ref *openapi3.SchemaRef) {
	t.Helper()
	s := ref.Value
	want, format := "", ""
	switch {
	case typ == timeType:
		want, format = openapi3.TypeString, "date-time"
	case typ == rawType:
		want = openapi3.TypeObject
		if ref.Ref != "#/components/schemas/Manifest" {
			t.Errorf("%s: json.RawMessage is a manifest: want $ref Manifest, got %q", field, ref.Ref)
		}
	case typ.Kind() == reflect.String:
		want = openapi3.TypeString
	case typ.Kind() == reflect.Bool:
		want = openapi3.TypeBoolean
	case typ.Kind() == reflect.Int64:
		want, format = openapi3.TypeInteger, "int64"
	case typ.Kind() == reflect.Int:
		want = openapi3.TypeInteger
	case typ.Kind() == reflect.Float64:
		want = openapi3.TypeNumber
	case typ.Kind() == reflect.Slice:
		want = openapi3.TypeArray
		if s.Items != nil {
			checkElem(t, doc, field+"[]", typ.Elem(), s.Items)
		}
	case typ.Kind() == reflect.Map:
		want = openapi3.TypeObject
		if s.AdditionalProperties.Schema == nil {
			t.Errorf("%s: map without an additionalProperties schema", field)
		} else {
			checkElem(t, doc, field+"[k]", typ.Elem(), s.AdditionalProperties.Schema)
		}
	case typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Struct:
		checkElem(t, doc, field, typ.Elem(), ref)
		return
	case typ.Kind() == reflect.Pointer: // an optional scalar (omitempty)
		checkType(t, doc, field, typ.Elem(), ref)
		return
	case typ.Kind() == reflect.Struct:
		checkElem(t, doc, field, typ, ref)
		return
	default:
		t.Errorf("%s: Go type %s not handled by this test", field, typ)
		return
	}
	if !s.Type.Is(want) {
		t.Errorf("%s: schema type %v, want %s (Go %s)", field, s.Type.Slice(), want, typ)
	}
	if s.Format != format {
		t.Errorf("%s: schema format %q, want %q (Go %s)", field, s.Format, format, typ)
	}
}

// checkElem checks a nested type: structs must be a $ref to the component
// schema of the same name, checked in full by their own table entry.
func checkElem(t *testing.T, doc *openapi3.T, field string, typ reflect.Type, ref *openapi3.SchemaRef) {
	t.Helper()
	if typ.Kind() == reflect.Struct && typ != timeType {
		if want := "#/components/schemas/" + typ.Name(); ref.Ref != want {
			t.Errorf("%s: want $ref %s, got %q", field, want, ref.Ref)
		}
		return
	}
	checkType(t, doc, field, typ, ref)
}

// zeroFields lists the fields of v (recursively) that hold a zero value.
func zeroFields(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return []string{path}
		}
		return zeroFields(v.Elem(), path)
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			return []string{path}
		}
		if v.Kind() == reflect.Slice && v.Type() != rawType {
			return zeroFields(v.Index(0), path+"[0]")
		}
		return nil
	case reflect.Struct:
		if v.Type() == timeType {
			if v.Interface().(time.Time).IsZero() {
				return []string{path}
			}
			return nil
		}
		var out []string
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				out = append(out, zeroFields(v.Field(i), path+"."+v.Type().Field(i).Name)...)
			}
		}
		return out
	default:
		if v.IsZero() {
			return []string{path}
		}
		return nil
	}
}

// TestSchemasCatchDrift shows the schema tests bite: an extra field, a
// missing required field, a wrong type and a bad time each fail.
func TestSchemasCatchDrift(t *testing.T) {
	doc := loadSpec(t)
	tests := []struct {
		name, schema, json, want string
	}{
		{"extra field", "Event", `{"seq":1,"time":"2026-11-22T10:00:00Z","actor":"server","action":"x","new_field":1}`, "new_field"},
		{"missing required", "JoinToken", `{"token":"x"}`, "expires_at"},
		{"wrong type", "ConfirmResponse", `{"confirmed":"yes"}`, "boolean"},
		{"bad date-time", "JoinToken", `{"token":"x","expires_at":"tomorrow"}`, "date-time"},
		{"unknown error code", "Error", `{"error":"x","code":"teapot"}`, "code"},
		{"wave extra field", "Rollout", `{"id":"ro1","release":"r1-web","group":"","manifest_id":"x","strategy":{"kind":"rolling"},"state":"running","wave":0,"waves":[{"name":"wave 1","state":"running","nodes":[],"x":1}],"failures":0,"created_at":"2026-11-22T10:00:00Z","updated_at":"2026-11-22T10:00:00Z","created_by":"token:ci"}`, "x"},
		{"rollout node without state", "Wave", `{"name":"wave 1","state":"running","nodes":[{"name":"web-1"}]}`, "state"},
		{"unknown node-down policy", "Strategy", `{"kind":"rolling","on_node_down":"ignore"}`, "on_node_down"},
		{"bad stagger", "Strategy", `{"kind":"rolling","stagger":"30"}`, "stagger"},
		{"canary percent over 100", "Strategy", `{"kind":"canary","canary_percent":101}`, "canary_percent"},
		{"retry with a bad node name", "RolloutRetryRequest", `{"node":"-web"}`, "node"},
		{"rollout action with a body", "RolloutActionRequest", `{"node":"web-1"}`, "node"},
		{"unknown liveness", "Node", `{"name":"a","enrolled_at":"2026-11-22T10:00:00Z","state":"new","liveness":"dead"}`, "liveness"},
		{"nested extra field", "Node", `{"name":"a","enrolled_at":"2026-11-22T10:00:00Z","state":"new","report":{"state":"idle","current":0,"last_good":0,"time":"2026-11-22T10:00:00Z","x":1}}`, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tt.json), &v); err != nil {
				t.Fatal(err)
			}
			err := doc.Components.Schemas[tt.schema].Value.VisitJSON(v)
			if err == nil {
				t.Fatalf("%s accepted %s", tt.schema, tt.json)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// TestSpecParameters checks the path and query parameter constraints.
func TestSpecParameters(t *testing.T) {
	doc := loadSpec(t)
	param := func(name string) *openapi3.Schema { return doc.Components.Parameters[name].Value.Schema.Value }
	tests := []struct {
		param string
		value any
		ok    bool
	}{
		{"NodeName", "web-1", true},
		{"NodeName", "a", true},
		{"NodeName", "web_1.eu", true},
		{"NodeName", strings.Repeat("a", 63), true},
		{"NodeName", strings.Repeat("a", 64), false},
		{"NodeName", "-web", false},
		{"NodeName", "", false},
		{"NodeName", "a/b", false},
		{"SHA256", strings.Repeat("0f", 32), true},
		{"SHA256", strings.Repeat("0F", 32), false},
		{"SHA256", strings.Repeat("0f", 31), false},
		{"ReleaseID", "r12-web", true},
		{"ReleaseID", "web", false},
		{"RolloutID", "ro1", true},
		{"RolloutID", "ro123", true},
		{"RolloutID", "ro", false},
		{"RolloutID", "r1", false},
		{"RolloutID", "ro1-web", false},
		{"RolloutID", "RO1", false},
		{"ManifestID", id, true},
		{"ManifestID", strings.Repeat("ab", 32), false},
		{"ManifestID", "sha256-" + strings.Repeat("AB", 32), false},
		{"ManifestID", "sha256-" + strings.Repeat("ab", 31), false},
		{"Wait", "30s", true},
		{"Wait", "0s", true},
		{"Wait", "0", true},
		{"Wait", "1m30s", true},
		{"Wait", "1.5s", true},
		{"Wait", "250ms", true},
		{"Wait", "1h0m0s", true},
		{"Wait", (5 * time.Minute).String(), true},
		{"Wait", "-1s", false},
		{"Wait", "30", false},
		{"Wait", "soon", false},
	}
	for _, tt := range tests {
		err := param(tt.param).VisitJSON(tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("%s %q: err = %v, want ok = %v", tt.param, tt.value, err, tt.ok)
		}
	}

	for _, tt := range []struct {
		path  string
		name  string
		value any
		ok    bool
	}{
		{"/v1/events", "since", 0.0, true}, {"/v1/events", "since", 1e12, true}, {"/v1/events", "since", -1.0, false},
		{"/v1/events", "limit", 1.0, true}, {"/v1/events", "limit", 1000.0, true}, {"/v1/events", "limit", 0.0, false}, {"/v1/events", "limit", 1001.0, false},
		{"/v1/events/stream", "since", 0.0, true}, {"/v1/events/stream", "since", 1e12, true}, {"/v1/events/stream", "since", -1.0, false},
	} {
		p := doc.Paths.Value(tt.path).Get.Parameters.GetByInAndName(openapi3.ParameterInQuery, tt.name)
		if p == nil {
			t.Fatalf("GET %s: no query parameter %q", tt.path, tt.name)
		}
		if err := p.Schema.Value.VisitJSON(tt.value); (err == nil) != tt.ok {
			t.Errorf("GET %s %s %v: err = %v, want ok = %v", tt.path, tt.name, tt.value, err, tt.ok)
		}
	}
	if p := doc.Paths.Value("/v1/events/stream").Get.Parameters.GetByInAndName(openapi3.ParameterInQuery, "since"); p == nil || p.Schema.Value.Default != 0.0 {
		t.Errorf("GET /v1/events/stream: since must default to 0")
	}
}

// TestSpecRolloutOperations pins the statuses, bodies and roles of the
// rollout, manifest and event stream operations, as the server implements
// them.
func TestSpecRolloutOperations(t *testing.T) {
	doc := loadSpec(t)
	tests := []struct {
		route    string
		role     string
		body     string // request body schema; "" = none
		ok       int
		okSchema string // "[]X" for an array of X, a media type for a non-JSON body
		errs     []string
	}{
		{api.RouteRollouts, api.RoleViewer, "", 200, "[]Rollout", []string{"401", "403", "500", "503"}},
		{api.RouteRollout, api.RoleViewer, "", 200, "Rollout", []string{"400", "401", "403", "404", "500", "503"}},
		{api.RouteRolloutPause, api.RoleDeployer, "RolloutActionRequest", 200, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteRolloutResume, api.RoleDeployer, "RolloutResumeRequest", 200, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteRolloutPromote, api.RoleDeployer, "RolloutActionRequest", 200, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteRolloutAbort, api.RoleDeployer, "RolloutActionRequest", 200, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteRolloutRollback, api.RoleDeployer, "RolloutActionRequest", 201, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteRolloutRetry, api.RoleDeployer, "RolloutRetryRequest", 200, "Rollout", []string{"400", "401", "403", "404", "409", "500", "503"}},
		{api.RouteManifest, api.RoleViewer, "", 200, "Manifest", []string{"400", "401", "403", "404", "500", "503"}},
		{api.RouteEventStream, api.RoleViewer, "", 200, "text/event-stream", []string{"400", "401", "403", "429", "500", "503"}},
		{api.RouteNotifications, api.RoleViewer, "", 200, "[]Notification", []string{"400", "401", "403", "500", "503"}},
		{api.RouteCreateRelease, api.RoleDeployer, "CreateReleaseRequest", 201, "Release", []string{"400", "401", "403", "409", "500", "503"}},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			method, path, _ := strings.Cut(tt.route, " ")
			item := doc.Paths.Value(path)
			if item == nil || item.GetOperation(method) == nil {
				t.Fatalf("no operation")
			}
			op := item.GetOperation(method)
			if role, _ := op.Extensions["x-slipway-role"].(string); role != tt.role {
				t.Errorf("role %q, want %q", role, tt.role)
			}
			switch {
			case tt.body == "" && op.RequestBody != nil:
				t.Errorf("declares a request body")
			case tt.body != "":
				if op.RequestBody == nil || op.RequestBody.Value.Content.Get("application/json") == nil {
					t.Fatalf("no JSON request body")
				}
				if got := op.RequestBody.Value.Content.Get("application/json").Schema.Ref; got != "#/components/schemas/"+tt.body {
					t.Errorf("request body %q, want %s", got, tt.body)
				}
				if tt.body == "RolloutActionRequest" && op.RequestBody.Value.Required {
					t.Errorf("the empty body must be optional")
				}
			}
			var codes []string
			for code := range op.Responses.Map() {
				codes = append(codes, code)
			}
			slices.Sort(codes)
			want := append([]string{fmt.Sprint(tt.ok)}, tt.errs...)
			slices.Sort(want)
			if !slices.Equal(codes, want) {
				t.Errorf("statuses %v, want %v", codes, want)
			}
			ok := op.Responses.Status(tt.ok)
			if ok == nil {
				t.Fatalf("no %d", tt.ok)
			}
			if strings.Contains(tt.okSchema, "/") {
				if ok.Value.Content.Get(tt.okSchema) == nil || len(ok.Value.Content) != 1 {
					t.Errorf("%d content %v, want only %s", tt.ok, slices.Collect(maps.Keys(ok.Value.Content)), tt.okSchema)
				}
				return
			}
			mt := ok.Value.Content.Get("application/json")
			if mt == nil {
				t.Fatalf("%d: no JSON body", tt.ok)
			}
			ref := mt.Schema.Ref
			if elem, isList := strings.CutPrefix(tt.okSchema, "[]"); isList {
				if !mt.Schema.Value.Type.Is(openapi3.TypeArray) || mt.Schema.Value.Items.Ref != "#/components/schemas/"+elem {
					t.Errorf("%d: want an array of %s", tt.ok, elem)
				}
				return
			}
			if ref != "#/components/schemas/"+tt.okSchema {
				t.Errorf("%d body %q, want %s", tt.ok, ref, tt.okSchema)
			}
		})
	}
}
