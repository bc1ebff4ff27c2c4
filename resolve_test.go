package oidcauth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// resolve follows caddyauth's contract: a user and ok; or no user, ok
// false and a refusal saying why, with no error; or an error, which is
// always a technical failure. It writes no response itself.
func TestResolveContract(t *testing.T) {
	now := time.Now()
	m := newUnitHandler(t, func(m *OIDCAuth) {
		m.Require = []Rule{{Claim: "groups", Values: []string{"staff"}}}
	})
	check := func(name string, s *session, wantOK bool, wantWhy refusal, wantErr error) {
		t.Helper()
		r := apiRequest(http.MethodGet, "/x")
		if s != nil {
			addSession(t, m, r, s)
		}
		rec := httptest.NewRecorder()
		p, ok, err := m.resolve(rec, r)
		switch {
		case wantErr != nil:
			if !errors.Is(err, wantErr) || ok {
				t.Errorf("%s: ok %v, err %v; want err %v", name, ok, err, wantErr)
			}
		case err != nil || ok != wantOK:
			t.Errorf("%s: ok %v, err %v; want ok %v and no error", name, ok, err, wantOK)
		case !ok && p.refused != wantWhy:
			t.Errorf("%s: refusal %d, want %d", name, p.refused, wantWhy)
		case ok && p.subject() != s.Subject:
			t.Errorf("%s: user %q, want %q", name, p.subject(), s.Subject)
		}
		if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("%s: resolve wrote a response: %d %q %v", name, rec.Code, rec.Body.String(), rec.Header())
		}
	}

	check("no session", nil, false, noSession, nil)
	check("valid session", unitSession(now), true, noSession, nil)

	old := unitSession(now)
	old.Created = now.Add(-25 * time.Hour).Unix()
	check("session past its lifetime", old, false, sessionEnded, nil)

	other := unitSession(now)
	other.Claims = []byte(`{"groups":["guests"]}`)
	check("require rules not met", other, false, forbidden, nil)

	// The token is due and has expired; the IdP (unreachable) cannot
	// refresh it: a failure, not a refusal.
	due := unitSession(now)
	due.RefreshToken = "rt"
	due.Expiry, due.RefreshAt = now.Add(-time.Minute).Unix(), now.Add(-time.Minute).Unix()
	check("IdP unavailable", due, false, noSession, errIdPUnavailable)
}
