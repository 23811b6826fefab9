package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// muxRoute is what http.ServeMux makes of a request: the pattern it
// routes to and the name wildcard, or "" when it would redirect (a path
// it cleans) or not route to one of the agent routes.
func muxRoute(t testing.TB, method, target string) (route, name string) {
	t.Helper()
	mux := http.NewServeMux()
	for _, p := range []string{RouteDesired, RouteReport, RouteConfirm, RouteAgentBlob} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			route, name = r.Pattern, r.PathValue("name")
		})
	}
	r := httptest.NewRequest(method, "http://slipway.test/", nil)
	r.URL.Path, r.URL.RawPath = "", ""
	u, err := r.URL.Parse(target)
	if err != nil {
		return "", ""
	}
	r.URL = u
	r.RequestURI = u.RequestURI()
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		return "", ""
	}
	return route, name
}

func TestMatchAgentRoute(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		route, name  string
	}{
		{"GET", "/v1/agent/nodes/web-1/desired", RouteDesired, "web-1"},
		{"POST", "/v1/agent/nodes/web-1/status", RouteReport, "web-1"},
		{"POST", "/v1/agent/nodes/db.eu-1/confirm", RouteConfirm, "db.eu-1"},
		{"POST", "/v1/agent/nodes/web-1/desired", "", ""},         // wrong method: the mux answers 405
		{"HEAD", "/v1/agent/nodes/web-1/desired", "", ""},         // the mux's GET-for-HEAD
		{"GET", "/v1/agent/nodes/web%2F1/desired", "", ""},        // an escape: the mux unescapes
		{"GET", "/v1/agent/nodes//desired", "", ""},               // the mux cleans and redirects
		{"GET", "/v1/agent/nodes/../nodes/web-1/desired", "", ""}, // likewise
		{"GET", "/v1/agent/nodes/web-1/desired/", "", ""},         // no such route
		{"GET", "/v1/agent/nodes/web-1/blobs/abc", "", ""},        // not a hot route
		{"GET", "/v1/nodes/web-1", "", ""},
	} {
		route, name, ok := MatchAgentRoute(tc.method, tc.path)
		if route != tc.route || name != tc.name || ok != (tc.route != "") {
			t.Errorf("MatchAgentRoute(%s %s) = %q, %q, %v; want %q, %q", tc.method, tc.path, route, name, ok, tc.route, tc.name)
		}
	}
}

// FuzzMatchAgentRoute: whatever MatchAgentRoute answers for, the ServeMux
// routes to the same pattern with the same name.
func FuzzMatchAgentRoute(f *testing.F) {
	for _, s := range []string{"/v1/agent/nodes/web-1/desired", "/v1/agent/nodes/a/status", "/v1/agent/nodes/./confirm", "/v1/agent/nodes/a%20b/desired"} {
		f.Add("GET", s)
		f.Add("POST", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		route, name, ok := MatchAgentRoute(method, path)
		if !ok {
			return
		}
		if mr, mn := muxRoute(t, method, path); mr != route || mn != name {
			t.Fatalf("MatchAgentRoute(%s %q) = %q, %q; the ServeMux routes it to %q, %q", method, path, route, name, mr, mn)
		}
	})
}
