package ui

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/shared/digest"
)

// maxSessions bounds the sessions held at once; a login beyond it drops
// the session closest to its expiry.
const maxSessions = 10000

// session is one login: the sha256 of the admin token it was made from
// (its caller and role are looked up again on every request, so a token
// removed or changed by a reload takes effect at once), its CSRF token and
// its expiry.
type session struct {
	tokenSum string
	csrf     string
	expires  time.Time
}

// Sessions are the dashboard's logins, in memory: a restart of the
// server ends every session. Session ids are 256-bit random values; the
// map is keyed by their sha256, so the ids themselves are not kept.
type Sessions struct {
	ttl time.Duration
	now func() time.Time
	mu  sync.Mutex
	m   map[string]session
}

// NewSessions makes a session store whose logins last ttl.
func NewSessions(ttl time.Duration, now func() time.Time) *Sessions {
	return &Sessions{ttl: ttl, now: now, m: map[string]session{}}
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func idKey(id string) string {
	return digest.Hex([]byte(id))
}

// Create starts a session for the token whose sha256 is sum and returns
// its id and expiry.
func (s *Sessions) Create(sum string) (id string, expires time.Time) {
	id = randomID()
	now := s.now()
	expires = now.Add(s.ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	s.m[idKey(id)] = session{tokenSum: sum, csrf: randomID(), expires: expires}
	return id, expires
}

// pruneLocked drops expired sessions, and the one closest to expiry while
// the store is full.
func (s *Sessions) pruneLocked(now time.Time) {
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	for len(s.m) >= maxSessions {
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
}

// Get returns the live session id names.
func (s *Sessions) Get(id string) (session, bool) {
	if id == "" {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := idKey(id)
	v, ok := s.m[k]
	if ok && !s.now().Before(v.expires) {
		delete(s.m, k)
		return session{}, false
	}
	return v, ok
}

// Revoke ends a session (logout).
func (s *Sessions) Revoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, idKey(id))
}
