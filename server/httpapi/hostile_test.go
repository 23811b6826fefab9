package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// hostile is one request an attacker or a broken client sends, and the
// exact refusal it must get.
type hostile struct {
	name   string
	method string
	path   string
	token  string            // "" none; see the tokens of hostileFixture
	header map[string]string // extra headers
	body   string
	status int
	code   string // api.Error.Code ("" when net/http answers itself)
	msg    string // a substring of api.Error.Error (or of the body)
}

// hostileFixture is a server with two enrolled nodes (web-1 in role=web,
// db-1 in role=db), one release published to each, and unused join tokens.
type hostileFixture struct {
	*fixture
	st         store.Store
	webTok     string
	dbTok      string
	join       string // an unused, unbound join token
	webID      string // the manifest published to web-1
	dbID       string // the manifest published to db-1 only
	dbBlob     string // the sha256 of db's artifact
	rolloutID  string
	unknownSHA string
}

func startHostile(t *testing.T) *hostileFixture {
	t.Helper()
	ctx := context.Background()
	var st store.Store
	f := startWith(t, t.TempDir(), func(s store.Store) store.Store { st = s; return s }, 0)
	h := &hostileFixture{fixture: f, st: st}
	_, h.webTok = f.enrollToken("web-1", map[string]string{"role": "web"})
	_, h.dbTok = f.enrollToken("db-1", map[string]string{"role": "db"})
	jt, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	must(t, err)
	h.join = jt.Token
	publish := func(target, msg string) (string, string) {
		blob := []byte("#!/bin/sh\necho " + msg + "\n")
		must(t, f.deploy.PutBlob(ctx, sum(blob), bytes.NewReader(blob), int64(len(blob))))
		rel, err := f.deploy.CreateRelease(ctx, api.CreateReleaseRequest{Name: msg, Target: target, Manifest: manifestWith(blob, msg)})
		must(t, err)
		return rel.Manifest, sum(blob)
	}
	h.webID, _ = publish("role=web", "web")
	h.dbID, h.dbBlob = publish("role=db", "db")
	ros, err := f.admin.Rollouts(ctx)
	must(t, err)
	if len(ros) == 0 {
		t.Fatal("no rollout after two releases")
	}
	h.rolloutID = ros[0].ID
	h.unknownSHA = strings.Repeat("ab", 32)
	return h
}

// snapshot is every key and value of the store but the audit log (refusals
// are audited: that is the one write a refusal makes).
func (h *hostileFixture) snapshot(t *testing.T) map[string]string {
	t.Helper()
	es, err := h.st.List(context.Background(), "")
	must(t, err)
	m := map[string]string{}
	for _, e := range es {
		if !strings.HasPrefix(e.Key, "events/") {
			m[e.Key] = string(e.Value)
		}
	}
	return m
}

func (h *hostileFixture) send(t *testing.T, c hostile) (int, api.Error, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, h.url+c.path, strings.NewReader(c.body))
	must(t, err)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e, string(raw)
}

// report returns a status report body for web-1 with one field changed.
func report(edit func(m map[string]any)) string {
	m := map[string]any{"state": "idle", "current": 1, "last_good": 1}
	edit(m)
	b, _ := json.Marshal(m)
	return string(b)
}

func hostileCases(h *hostileFixture) []hostile {
	web, db := h.webTok, h.dbTok
	huge := strings.Repeat("x", 900<<10)
	manyLabels := map[string]string{}
	for i := range 5000 {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	ml, _ := json.Marshal(map[string]any{"name": "new-1", "join_token": h.join, "labels": manyLabels})
	enrol := func(name string, labels map[string]string) string {
		b, _ := json.Marshal(map[string]any{"name": name, "join_token": h.join, "labels": labels})
		return string(b)
	}
	gen := func(n int, id, status string) []map[string]any {
		return []map[string]any{{"number": n, "id": id, "status": status}}
	}
	return []hostile{
		// Authentication and authorisation.
		{name: "no token", method: "GET", path: "/v1/nodes", status: 401, code: api.CodeUnauthorized, msg: "missing bearer token"},
		{name: "wrong admin token", method: "GET", path: "/v1/nodes", token: "swa_wrong0123456789", status: 401, code: api.CodeUnauthorized},
		{name: "900 KB path, no token", method: "GET", path: "/v1/nodes/" + huge, status: 401, code: api.CodeUnauthorized},
		{name: "node token on an admin route", method: "GET", path: "/v1/nodes", token: web, status: 401, code: api.CodeUnauthorized},
		{name: "admin token on an agent route", method: "GET", path: "/v1/agent/nodes/web-1/desired?wait=0s", token: adminTok, status: 401, code: api.CodeUnauthorized},
		{name: "viewer creates a join token", method: "POST", path: "/v1/join-tokens", token: viewerTok, body: `{}`, status: 403, code: api.CodeForbidden},
		{name: "deployer resets a node", method: "POST", path: "/v1/nodes/web-1/reset", token: deployerTok, body: `{}`, status: 403, code: api.CodeForbidden},
		{name: "node reads another's desired", method: "GET", path: "/v1/agent/nodes/db-1/desired?wait=0s", token: web, status: 403, code: api.CodeForbidden},
		{name: "node reports for another", method: "POST", path: "/v1/agent/nodes/db-1/status", token: web, body: report(func(map[string]any) {}), status: 403, code: api.CodeForbidden},
		{name: "node confirms for another", method: "POST", path: "/v1/agent/nodes/db-1/confirm", token: web, body: `{"number":1,"id":"` + h.dbID + `"}`, status: 403, code: api.CodeForbidden},
		{name: "blob of another group's artifact", method: "GET", path: "/v1/agent/nodes/web-1/blobs/" + h.dbBlob, token: web, status: 403, code: api.CodeForbidden},
		{name: "blob path traversal", method: "GET", path: "/v1/agent/nodes/web-1/blobs/..%2F..%2Fstore.db", token: web, status: 400, code: api.CodeInvalid, msg: "not a sha256"},
		{name: "blob sha not hex", method: "GET", path: "/v1/agent/nodes/web-1/blobs/" + strings.Repeat("zz", 32), token: web, status: 400, code: api.CodeInvalid, msg: "not a sha256"},
		{name: "unicode lookalike node (Cyrillic е)", method: "GET", path: "/v1/nodes/w%D0%B5b-1", token: viewerTok, status: 404, code: api.CodeNotFound},
		{name: "dot-dot node name", method: "GET", path: "/v1/nodes/..%2F..%2Fetc", token: viewerTok, status: 404, code: api.CodeNotFound},
		{name: "unknown route", method: "GET", path: "/v1/secrets", token: adminTok, status: 404, code: api.CodeNotFound, msg: "no route GET /v1/secrets"},
		{name: "wrong method", method: "DELETE", path: "/v1/nodes", token: adminTok, status: 404, code: api.CodeNotFound, msg: "no route DELETE /v1/nodes"},
		{name: "oversized header", method: "GET", path: "/v1/nodes", token: viewerTok, header: map[string]string{"X-Pad": strings.Repeat("p", 2<<20)}, status: 431, msg: "Request Header Fields Too Large"},

		// Enrolment.
		{name: "enrol: not JSON", method: "POST", path: "/v1/agent/enroll", body: `{"name":`, status: 400, code: api.CodeInvalid},
		{name: "enrol: unknown field", method: "POST", path: "/v1/agent/enroll", body: `{"name":"new-1","join_token":"` + h.join + `","admin":true}`, status: 400, code: api.CodeInvalid, msg: "admin"},
		{name: "enrol: bogus join token", method: "POST", path: "/v1/agent/enroll", body: `{"name":"new-1","join_token":"swj_bogus"}`, status: 401, code: api.CodeUnauthorized},
		{name: "enrol: takeover of an existing node", method: "POST", path: "/v1/agent/enroll", body: enrol("web-1", nil), status: 409, code: api.CodeConflict, msg: "web-1"},
		{name: "enrol: name with a slash", method: "POST", path: "/v1/agent/enroll", body: enrol("web/1", nil), status: 400, code: api.CodeInvalid, msg: "web/1"},
		{name: "enrol: unicode lookalike name", method: "POST", path: "/v1/agent/enroll", body: enrol("wеb-1", nil), status: 400, code: api.CodeInvalid},
		{name: "enrol: 300-byte name", method: "POST", path: "/v1/agent/enroll", body: enrol(strings.Repeat("n", 300), nil), status: 400, code: api.CodeInvalid},
		{name: "enrol: empty name", method: "POST", path: "/v1/agent/enroll", body: enrol("", nil), status: 400, code: api.CodeInvalid},
		{name: "enrol: bad label key", method: "POST", path: "/v1/agent/enroll", body: enrol("new-1", map[string]string{"ro le": "x"}), status: 400, code: api.CodeInvalid, msg: "ro le"},
		{name: "enrol: huge label map", method: "POST", path: "/v1/agent/enroll", body: string(ml), status: 400, code: api.CodeInvalid, msg: "labels: 5000 of them; at most 64"},
		{name: "enrol: 2 MB body", method: "POST", path: "/v1/agent/enroll", body: `{"name":"new-1","agent_version":"` + strings.Repeat("v", 2<<20) + `"}`, status: 400, code: api.CodeInvalid, msg: "request body too large"},

		// Reports and confirms.
		{name: "report: made-up state", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["state"] = "pwned" }), status: 400, code: api.CodeInvalid, msg: "is not one of idle, switching, failed"},
		{name: "report: negative current", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["current"] = -5 }), status: 400, code: api.CodeInvalid, msg: "current: -5"},
		{name: "report: overflowing number", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: `{"state":"idle","current":99999999999999999999999}`, status: 400, code: api.CodeInvalid},
		{name: "report: made-up phase", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["state"], m["phase"] = "switching", "exfiltrate" }), status: 400, code: api.CodeInvalid, msg: "phase"},
		{name: "report: generation 0", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["generations"] = gen(0, h.webID, "good") }), status: 400, code: api.CodeInvalid, msg: "generations[0].number"},
		{name: "report: another group's manifest", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["current_id"] = h.dbID }), status: 400, code: api.CodeInvalid, msg: "never published to node web-1"},
		{name: "report: another group's manifest in history", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["generations"] = gen(1, h.dbID, "good") }), status: 400, code: api.CodeInvalid, msg: "never published to node web-1"},
		{name: "report: malformed manifest ID", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["current_id"] = "sha256-../../x" }), status: 400, code: api.CodeInvalid, msg: "current_id"},
		{name: "report: made-up generation status", method: "POST", path: "/v1/agent/nodes/web-1/status", token: web, body: report(func(m map[string]any) { m["generations"] = gen(1, h.webID, "owned") }), status: 400, code: api.CodeInvalid, msg: "generations[0].status"},
		{name: "confirm: malformed ID", method: "POST", path: "/v1/agent/nodes/web-1/confirm", token: web, body: `{"number":1,"id":"sha256-zz"}`, status: 400, code: api.CodeInvalid, msg: "id"},
		{name: "confirm: negative number", method: "POST", path: "/v1/agent/nodes/web-1/confirm", token: web, body: `{"number":-1,"id":"` + h.webID + `"}`, status: 400, code: api.CodeInvalid, msg: "number"},
		{name: "confirm: another group's manifest", method: "POST", path: "/v1/agent/nodes/web-1/confirm", token: web, body: `{"number":1,"id":"` + h.dbID + `"}`, status: 409, code: api.CodeConflict},
		{name: "confirm: for db-1 with db's own token but web's ID", method: "POST", path: "/v1/agent/nodes/db-1/confirm", token: db, body: `{"number":1,"id":"` + h.webID + `"}`, status: 409, code: api.CodeConflict},

		// Admin requests.
		{name: "rollback to a generation never confirmed", method: "POST", path: "/v1/nodes/web-1/rollback", token: deployerTok, body: `{"to":1}`, status: 409, code: api.CodeConflict},
		{name: "rollback to a negative generation", method: "POST", path: "/v1/nodes/web-1/rollback", token: deployerTok, body: `{"to":-3}`, status: 400, code: api.CodeInvalid},
		{name: "retry with nothing failed", method: "POST", path: "/v1/nodes/web-1/retry", token: deployerTok, body: `{}`, status: 409, code: api.CodeConflict},
		{name: "release: unit name escaping", method: "POST", path: "/v1/releases", token: deployerTok, body: `{"name":"x","manifest":{"units":{"../x.service":"[Service]\nExecStart=/bin/true\n"}}}`, status: 400, code: api.CodeInvalid, msg: "../x.service"},
		{name: "release: bad selector", method: "POST", path: "/v1/releases", token: deployerTok, body: `{"name":"x","target":"role==","manifest":{"units":{"x.service":"[Service]\nExecStart=/bin/true\n"}}}`, status: 400, code: api.CodeInvalid, msg: "role=="},
		{name: "release: artifact not uploaded", method: "POST", path: "/v1/releases", token: deployerTok, body: `{"name":"x","manifest":{"artifacts":[{"name":"a","sha256":"` + h.unknownSHA + `","size":1,"mode":"0755"}]}}`, status: 400, code: api.CodeInvalid, msg: "not uploaded"},
		{name: "blob upload with the wrong hash", method: "PUT", path: "/v1/blobs/" + h.unknownSHA, token: deployerTok, body: "not the blob", status: 400, code: api.CodeInvalid},
		{name: "join token with a negative TTL", method: "POST", path: "/v1/join-tokens", token: adminTok, body: `{"ttl":"-1h"}`, status: 400, code: api.CodeInvalid, msg: "ttl"},
		{name: "join token with an overflowing TTL", method: "POST", path: "/v1/join-tokens", token: adminTok, body: `{"ttl":"9999999999h"}`, status: 400, code: api.CodeInvalid, msg: "ttl"},
		{name: "events: negative limit", method: "GET", path: "/v1/events?limit=-1", token: viewerTok, status: 400, code: api.CodeInvalid, msg: "limit"},
		{name: "events: overflowing since", method: "GET", path: "/v1/events?since=99999999999999999999999", token: viewerTok, status: 400, code: api.CodeInvalid, msg: "since"},
		{name: "rollout action on an unknown rollout", method: "POST", path: "/v1/rollouts/..%2F" + h.rolloutID + "/abort", token: deployerTok, body: `{}`, status: 404, code: api.CodeNotFound},
	}
}

// TestHostileInputs sends each hostile request and checks the exact
// refusal, and that nothing but the audit log changed in the store.
func TestHostileInputs(t *testing.T) {
	h := startHostile(t)
	cases := hostileCases(h)
	if len(cases) < 40 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.snapshot(t)
			status, e, raw := h.send(t, c)
			if status != c.status {
				t.Errorf("status %d, want %d: %.300s", status, c.status, raw)
			}
			if c.code != "" && e.Code != c.code {
				t.Errorf("code %q, want %q: %.300s", e.Code, c.code, raw)
			}
			if c.msg != "" && !strings.Contains(raw, c.msg) {
				t.Errorf("answer lacks %q: %.300s", c.msg, raw)
			}
			if after := h.snapshot(t); !maps.Equal(before, after) {
				t.Errorf("the store changed: %s", diffKeys(before, after))
			}
		})
	}
}

// TestReplayedConfirm confirms a generation and replays the confirm: the
// replay answers as the first did and writes nothing.
func TestReplayedConfirm(t *testing.T) {
	h := startHostile(t)
	c := hostile{method: "POST", path: "/v1/agent/nodes/web-1/confirm", token: h.webTok, body: `{"number":1,"id":"` + h.webID + `"}`}
	status, _, raw := h.send(t, c)
	if status != http.StatusOK {
		t.Fatalf("first confirm: %d %s", status, raw)
	}
	before := h.snapshot(t)
	for range 3 {
		if status, _, raw := h.send(t, c); status != http.StatusOK {
			t.Fatalf("replayed confirm: %d %s", status, raw)
		}
	}
	if after := h.snapshot(t); !maps.Equal(before, after) {
		t.Errorf("a replayed confirm wrote: %s", diffKeys(before, after))
	}
}

func diffKeys(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "-"+k)
		} else if v != w {
			out = append(out, "~"+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "+"+k)
		}
	}
	return strings.Join(out, " ")
}
