package ui

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
)

// Cookie names. Both are HttpOnly, SameSite=Strict, Path=/ui/, and Secure
// when the request came over TLS.
const (
	sessionCookie = "slipway_session"
	loginCookie   = "slipway_login" // the login form's CSRF token (double submit)
)

// caller is who a dashboard request comes from.
type caller struct {
	httpapi.Caller
	Session string // session id; "" over the tailnet
	CSRF    string
}

// view is what every page template gets besides its own data.
type view struct {
	Caller caller
	CanAct bool // the caller's role may act on rollouts
	Title  string
	Nav    string
	Error  string
	Since  int64 // the audit log's newest seq when the page was made
	Data   any
}

// resolve finds the caller of r: over the tailnet by its identity, else
// by its session cookie. ok false: the caller was answered (a refusal or a
// redirect to the login form).
func (h *Handler) resolve(w http.ResponseWriter, r *http.Request, page bool) (caller, bool) {
	if c, d, onMesh := h.auth.MeshCaller(r); onMesh {
		if !d.Allow {
			h.refuse(w, r, d.Status, d.Actor, d.Reason)
			return caller{}, false
		}
		return caller{Caller: c, CSRF: h.meshCSRF(c.Actor)}, true
	}
	ck, err := r.Cookie(sessionCookie)
	if err == nil {
		if s, ok := h.sh.sessions.Get(ck.Value); ok {
			if c, ok := h.auth.TokenCaller(s.tokenSum); ok {
				return caller{Caller: c, Session: ck.Value, CSRF: s.csrf}, true
			}
			h.sh.sessions.Revoke(ck.Value) // its token is no longer configured
		}
	}
	if page {
		http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return caller{}, false
	}
	h.refuse(w, r, http.StatusUnauthorized, "anonymous", "dashboard: no session (log in at /ui/login)")
	return caller{}, false
}

// meshCSRF is the CSRF token of a tailnet caller: a MAC of its actor
// under a key of this server process.
func (h *Handler) meshCSRF(actor string) string {
	m := hmac.New(sha256.New, h.sh.key)
	m.Write([]byte("csrf:" + actor))
	return hex.EncodeToString(m.Sum(nil))
}

// refuse audits a refused request and answers with an error page; a 401
// from an address over its budget of refusals is a 429 instead, not
// audited (as the API does).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, actor, why string) {
	if status == http.StatusUnauthorized {
		if wait, over := h.auth.OverRefusals(r); over {
			h.tooMany(w, r, wait)
			return
		}
	}
	h.auth.Refused(r, actor, why)
	h.errorPage(w, r, nil, status, why)
}

// tooMany answers 429 with Retry-After (whole seconds, at least 1).
func (h *Handler) tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(max(int64((wait+time.Second-1)/time.Second), 1), 10))
	h.errorPage(w, r, nil, http.StatusTooManyRequests, "too many refused requests from your address; try again later")
}

// get wraps a page: any caller with a role (viewer or more).
func (h *Handler) get(page func(http.ResponseWriter, *http.Request, *view)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := h.resolve(w, r, true)
		if !ok {
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		page(w, r, &view{Caller: c, CanAct: c.Allows(api.RoleDeployer)})
	}
}

// post wraps a state-changing request: it needs the caller's CSRF token
// and the role need; anything else is 403 and audited.
func (h *Handler) post(need string, act func(http.ResponseWriter, *http.Request, *view)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := h.resolve(w, r, false)
		if !ok {
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if !sameToken(r.PostFormValue("csrf"), c.CSRF) {
			h.refuse(w, r, http.StatusForbidden, c.Actor, "dashboard: missing or wrong CSRF token")
			return
		}
		if !c.Allows(need) {
			h.refuse(w, r, http.StatusForbidden, c.Actor, fmt.Sprintf("role %s may not do this (needs %s)", c.Role, need))
			return
		}
		act(w, r, &view{Caller: c, CanAct: c.Allows(api.RoleDeployer)})
	}
}

func sameToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: Prefix, Expires: expires, MaxAge: maxAge(expires),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// maxAge is a cookie's Max-Age for expires (zero time: delete it).
func maxAge(expires time.Time) int {
	if expires.IsZero() {
		return -1
	}
	return max(int(time.Until(expires).Seconds()), 1)
}

type loginData struct {
	Next, CSRF string
	Mesh       bool
}

// loginForm shows the login form, with a fresh CSRF token in a cookie and
// the form (double submit: a page of another origin can set neither).
func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, _, onMesh := h.auth.MeshCaller(r); onMesh {
		http.Redirect(w, r, "/ui/fleet", http.StatusSeeOther) // the tailnet identity needs no login
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	h.render(w, r, http.StatusOK, "login", &view{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next")), CSRF: loginToken(w, r)}})
}

// loginToken is the login form's CSRF token: the browser's, if it has one
// (another tab's login form, or a request that was sent to the form, must
// not invalidate a form already shown), else a new one; the cookie that
// holds it is set again for an hour.
func loginToken(w http.ResponseWriter, r *http.Request) string {
	tok := ""
	if ck, err := r.Cookie(loginCookie); err == nil && tokenRe.MatchString(ck.Value) {
		tok = ck.Value
	} else {
		tok = randomID()
	}
	setCookie(w, r, loginCookie, tok, time.Now().Add(time.Hour))
	return tok
}

// tokenRe matches randomID's tokens.
var tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// login checks the admin token and starts a session. A wrong token is a
// 401, audited and counted against the address's budget of refusals; over
// that budget it is a 429, not audited, as the API's 401s are.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), ck.Value) {
		h.refuse(w, r, http.StatusForbidden, "anonymous", "dashboard login: missing or wrong CSRF token (reload the login form)")
		return
	}
	sum := httpapi.HashToken(strings.TrimSpace(r.PostFormValue("token")))
	c, ok := h.auth.TokenCaller(sum)
	if !ok {
		if wait, over := h.auth.OverRefusals(r); over { // as the API's 401s
			h.tooMany(w, r, wait)
			return
		}
		h.auth.Refused(r, "anonymous", "dashboard login: unknown admin token")
		h.render(w, r, http.StatusUnauthorized, "login", &view{Title: "Log in", Error: "unknown admin token",
			Data: loginData{Next: safeNext(r.PostFormValue("next")), CSRF: loginToken(w, r)}})
		return
	}
	id, expires := h.sh.sessions.Create(sum)
	setCookie(w, r, sessionCookie, id, expires)
	setCookie(w, r, loginCookie, "", time.Time{})
	if err := h.reg.Audit(r.Context(), c.Actor, "ui.login", "", "dashboard session until "+expires.UTC().Format(time.RFC3339)); err != nil {
		h.log.Error().Err(err).Msg("audit login")
	}
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// logout ends the caller's session.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, v *view) {
	if v.Caller.Session != "" {
		h.sh.sessions.Revoke(v.Caller.Session)
		if err := h.reg.Audit(r.Context(), v.Caller.Actor, "ui.logout", "", ""); err != nil {
			h.log.Error().Err(err).Msg("audit logout")
		}
	}
	setCookie(w, r, sessionCookie, "", time.Time{})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext keeps a post-login redirect inside the dashboard.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/fleet"
	}
	return next
}
