package daemon

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
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

// TestUILoginRateLimited: wrong dashboard logins spend the address's
// unauthenticated budget like other 401s; past it they get 429.
func TestUILoginRateLimited(t *testing.T) {
	s := startServeWith(t, "[limits]\nunauthenticated_rate = 0.01\nunauthenticated_burst = 2\n")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	var got []int
	for range 4 {
		resp, err := c.Get("http://" + s.addr + "/ui/login")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfField.FindSubmatch(page)
		if m == nil {
			t.Fatalf("login form without a CSRF token:\n%s", page)
		}
		resp, err = c.PostForm("http://"+s.addr+"/ui/login", url.Values{"csrf": {string(m[1])}, "token": {"not-the-admin-token-xyz"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, resp.StatusCode)
	}
	if got[0] != 401 || got[1] != 401 || got[2] != 429 || got[3] != 429 {
		t.Errorf("wrong logins answered %v, want 401, 401, then 429", got)
	}
}
