package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// pooled puts m's app in the pool the admin API reads, for one test.
func pooled(t *testing.T, m *OIDCAuth) {
	t.Helper()
	key := "test\x00" + t.Name()
	if _, _, err := apps.LoadOrNew(key, func() (caddy.Destructor, error) { return m.app, nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = apps.Delete(key) })
}

func adminCallTest(t *testing.T, h caddy.AdminHandlerFunc, method, target, body string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	w := httptest.NewRecorder()
	if err := h(w, r); err != nil {
		var ae caddy.APIError
		if !errors.As(err, &ae) {
			t.Fatalf("%s %s: not an API error: %v", method, target, err)
		}
		return ae.HTTPStatus, map[string]any{"error": ae.Err.Error()}
	}
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: %q is not JSON", method, target, w.Body)
	}
	return w.Code, out
}

// TestAdminSessions: the admin API lists a user's sessions (never a
// token) and ends them by sub, sid or session ID; the handler refuses the
// ended sessions at once and keeps the others; bad requests get a 4xx.
func TestAdminSessions(t *testing.T) {
	m := newUnitHandler(t, nil)
	pooled(t, m)
	ctx := context.Background()
	now := time.Now()
	mk := func(sub, sid string) *session {
		s := unitSession(now)
		s.Subject, s.SID = sub, sid
		if sub == "alice" && sid == "sid-a3" {
			s.Created = now.Unix() + 1 // begun after the revocation
		}
		r := apiRequest(http.MethodGet, "/")
		r.Header.Set("User-Agent", "test-agent")
		m.tokens.registerSession(r, s)
		return s
	}
	a1, a2, b1, c1 := mk("alice", "sid-a1"), mk("alice", "sid-a2"), mk("bob", "sid-b"), mk("carol", "sid-c")
	alive := func(s *session) bool {
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		_, next := serve(t, m, r)
		return next.called
	}

	code, out := adminCallTest(t, serveSessionList, http.MethodGet, "/oidc_auth/sessions?sub=alice", "")
	list, _ := out["sessions"].([]any)
	if code != 200 || len(list) != 2 {
		t.Fatalf("list alice: %d %v", code, out)
	}
	raw, _ := json.Marshal(out)
	if strings.Contains(string(raw), a1.AccessToken) || !strings.Contains(string(raw), "test-agent") || !strings.Contains(string(raw), `"app":"unit-app"`) {
		t.Fatalf("list holds a token, or lacks the user agent or app: %s", raw)
	}

	// A session ended by a logout is no longer listed.
	gone := mk("alice", "sid-gone")
	_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSession, Value: gone.ID, Until: now.Add(time.Hour).Unix()})
	if _, out := adminCallTest(t, serveSessionList, http.MethodGet, "/oidc_auth/sessions?sub=alice", ""); len(out["sessions"].([]any)) != 2 {
		t.Fatalf("a logged-out session is listed: %v", out)
	}

	for _, bad := range []struct{ method, target, body string }{
		{http.MethodGet, "/oidc_auth/sessions", ""},
		{http.MethodPost, "/oidc_auth/sessions?sub=alice", ""},
		{http.MethodPost, "/oidc_auth/sessions/revoke", `{}`},
		{http.MethodPost, "/oidc_auth/sessions/revoke", `{"sub":"a","sid":"b"}`},
		{http.MethodPost, "/oidc_auth/sessions/revoke", `{"user":"a"}`},
		{http.MethodPost, "/oidc_auth/sessions/revoke", `not json`},
		{http.MethodGet, "/oidc_auth/sessions/revoke", ``},
	} {
		h := serveSessionRevoke
		if !strings.HasSuffix(strings.SplitN(bad.target, "?", 2)[0], "revoke") {
			h = serveSessionList
		}
		if code, out := adminCallTest(t, h, bad.method, bad.target, bad.body); code < 400 || code >= 500 {
			t.Errorf("%s %s %s: %d %v; want a 4xx", bad.method, bad.target, bad.body, code, out)
		}
	}

	started := testutil.ToFloat64(metrics.sessionsBegun)
	if started < 4 {
		t.Errorf("sessions_started_total = %v after 4 logins", started)
	}
	ended := testutil.ToFloat64(metrics.sessionsEnded.WithLabelValues("admin"))
	if code, out := adminCallTest(t, serveSessionRevoke, http.MethodPost, "/oidc_auth/sessions/revoke", `{"sub":"alice","idp":true}`); code != 200 || out["ended"] != 2.0 || !strings.HasPrefix(out["idp"].(string), "not asked") {
		t.Fatalf("revoke alice: %d %v", code, out)
	}
	if d := testutil.ToFloat64(metrics.sessionsEnded.WithLabelValues("admin")) - ended; d != 2 {
		t.Errorf("sessions_ended_total{reason=admin} went up by %v, want 2", d)
	}
	if alive(a1) || alive(a2) {
		t.Fatal("a session of a revoked user still works")
	}
	if !alive(b1) || !alive(c1) {
		t.Fatal("another user's session was ended")
	}
	if code, out := adminCallTest(t, serveSessionRevoke, http.MethodPost, "/oidc_auth/sessions/revoke", `{"sid":"sid-b"}`); code != 200 || out["ended"] != 1.0 || alive(b1) {
		t.Fatalf("revoke by sid: %d %v, alive %v", code, out, alive(b1))
	}
	if code, out := adminCallTest(t, serveSessionRevoke, http.MethodPost, "/oidc_auth/sessions/revoke", `{"session":"`+c1.ID+`"}`); code != 200 || out["ended"] != 1.0 || alive(c1) {
		t.Fatalf("revoke by session: %d %v", code, out)
	}
	if list, _ := m.app.store.Sessions(ctx, "alice"); len(list) != 0 {
		t.Fatalf("revoked sessions still listed: %v", list)
	}
	// A login after the revocation is a new session, and works.
	if a3 := mk("alice", "sid-a3"); !alive(a3) {
		t.Fatal("a session begun after the user's revocation is refused")
	}
}

// TestAdminRevokeAtIdP: with "idp": true and a handler with
// management_api, the user's sessions are also revoked at the IdP with the
// Management API token; a failing call is reported, not hidden.
func TestAdminRevokeAtIdP(t *testing.T) {
	var revoked atomic.Value
	var fail atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"mgmt-token-1","token_type":"Bearer","expires_in":3600}`))
	})
	mux.HandleFunc("POST /api/v1/users/{id}/sessions/revoke", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer mgmt-token-1" || fail.Load() {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		revoked.Store(r.PathValue("id"))
		w.WriteHeader(http.StatusOK)
	})
	api := httptest.NewServer(mux)
	defer api.Close()
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.ManagementAPI = &ManagementAPI{BaseURL: api.URL, TokenURL: api.URL + "/oauth/token"}
	})
	m.wire()
	m.app.mgmt.Store(m.mgmt)
	pooled(t, m)
	s := unitSession(time.Now())
	s.Subject = "usr_9"
	m.tokens.registerSession(apiRequest(http.MethodGet, "/"), s)

	code, out := adminCallTest(t, serveSessionRevoke, http.MethodPost, "/oidc_auth/sessions/revoke", `{"session":"`+s.ID+`","idp":true}`)
	if code != 200 || out["ended"] != 1.0 || out["idp"] != "revoked" || revoked.Load() != "usr_9" {
		t.Fatalf("revoke at the IdP: %d %v, IdP saw %v", code, out, revoked.Load())
	}
	fail.Store(true)
	code, out = adminCallTest(t, serveSessionRevoke, http.MethodPost, "/oidc_auth/sessions/revoke", `{"sub":"usr_9","idp":true}`)
	if code != 200 || !strings.HasPrefix(out["idp"].(string), "failed:") {
		t.Fatalf("failing IdP call: %d %v", code, out)
	}
}

// TestLoginInTheSecondOfARevocation: a revocation of every session of a
// user ends those begun up to its second; a login completed after it in
// that same second is a new session and works. (Sessions count whole
// seconds: such a login used to be refused on its first request and sent
// back through the IdP until the login-loop page.)
func TestLoginInTheSecondOfARevocation(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	before := e.browser()
	before.mustLogin("/private")

	now := e.clock.Now() // the test clock stands still: everything below is in this second
	rev := store.Revocation{Kind: store.RevokeSubject, Value: "user-1", At: now.Unix(), Until: now.Add(time.Hour).Unix()}
	if err := e.h.app.store.Revoke(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	if res := before.get("/private", nav); res.reachedNext {
		t.Fatal("a session begun before the revocation still works")
	}

	after := e.browser()
	after.mustLogin("/private")
	expectServed(t, after.get("/private", nav), "a login in the second of the revocation, after it")
	if res := before.get("/private", nav); res.reachedNext || res.StatusCode == http.StatusOK {
		t.Fatalf("the revoked session came back: %d", res.StatusCode)
	}
}
