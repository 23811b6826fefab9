package daemon

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestUIMount: the dashboard is served at /ui/ unless [ui] turns it off.
func TestUIMount(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		status      int
	}{
		{"default", "", http.StatusSeeOther},
		{"off", "[ui]\nenabled = false\n", http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServeWith(t, tt.extra)
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Get("http://" + s.addr + "/ui/fleet")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("GET /ui/fleet: %d, want %d", resp.StatusCode, tt.status)
			}
			// The dashboard's requests are counted under one route label.
			if got := metric(scrape(t, s.metrics), "slipway_http_requests_total", map[string]string{"route": "/ui/", "code": strconv.Itoa(tt.status)}); got != 1 {
				t.Errorf("slipway_http_requests_total{route=/ui/} = %v, want 1", got)
			}
		})
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// uiLogin logs a client in to the dashboard with tok and returns it (no
// redirects followed) and the login's status.
func uiLogin(t *testing.T, addr, tok string) (*http.Client, int) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + addr + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindSubmatch(page)
	if m == nil {
		t.Fatalf("login form without a CSRF token:\n%s", page)
	}
	resp, err = c.PostForm("http://"+addr+"/ui/login", url.Values{"csrf": {string(m[1])}, "token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return c, resp.StatusCode
}

func uiStatus(t *testing.T, c *http.Client, addr, path string) int {
	t.Helper()
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUISessionsFollowReload: a dashboard session survives a reload, and
// ends when a reload removes the token it was made from.
func TestUISessionsFollowReload(t *testing.T) {
	s := startServe(t)
	c, st := uiLogin(t, s.addr, adminToken)
	if st != http.StatusSeeOther || uiStatus(t, c, s.addr, "/ui/fleet") != http.StatusOK {
		t.Fatalf("login: %d", st)
	}
	s.doReload()
	if got := uiStatus(t, c, s.addr, "/ui/fleet"); got != http.StatusOK {
		t.Fatalf("fleet after a reload: %d, want 200", got)
	}
	other := filepath.Join(s.dir, "other.token")
	if err := os.WriteFile(other, []byte("another-admin-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(tokenConfig("other", other))
	s.doReload()
	if got := uiStatus(t, c, s.addr, "/ui/fleet"); got != http.StatusSeeOther {
		t.Errorf("fleet after its token was removed: %d, want 303 to the login form", got)
	}
}

// TestUILoginRateLimited: wrong dashboard logins spend the address's
// unauthenticated budget like other 401s; past it they get 429.
func TestUILoginRateLimited(t *testing.T) {
	s := startServeWith(t, "[limits]\nunauthenticated_rate = 0.01\nunauthenticated_burst = 2\n")
	var got []int
	for range 4 {
		_, st := uiLogin(t, s.addr, "not-the-admin-token-xyz")
		got = append(got, st)
	}
	if got[0] != 401 || got[1] != 401 || got[2] != 429 || got[3] != 429 {
		t.Errorf("wrong logins answered %v, want 401, 401, then 429", got)
	}
}
