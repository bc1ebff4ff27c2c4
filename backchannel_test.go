package oidcauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// logoutClaims are the claims of a valid logout token for sid "sid-1" of
// user-1; mutate changes them.
func (e *itEnv) logoutClaims(mutate func(c map[string]any)) map[string]any {
	c := oidctest.LogoutClaims(e.op.Issuer, e.op.ClientID, "user-1", "sid-1", oidctest.RandomHex(12), e.clock.Now())
	if mutate != nil {
		mutate(c)
	}
	return c
}

// logoutToken signs claims with the OP's current key, typ logout+jwt.
func (e *itEnv) logoutToken(mutate func(c map[string]any)) string {
	return e.op.ActiveKey().Sign(e.logoutClaims(mutate), "logout+jwt")
}

// expectBackchannelAccepted fails unless a valid logout token was answered
// 200, uncacheable.
func expectBackchannelAccepted(t *testing.T, res *itResult) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("valid logout token: status %d, want 200; body %q", res.StatusCode, res.body)
	}
	if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
}

func expectBackchannelRefused(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("%s: status %d, want 400; body %q", what, res.StatusCode, res.body)
		return
	}
	var body map[string]any
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") || json.Unmarshal([]byte(res.body), &body) != nil || body["error"] == nil {
		t.Errorf("%s: 400 without a JSON error body: %q (%s)", what, res.body, res.Header.Get("Content-Type"))
	}
}

// TestBackchannelLogoutRefused: one token per rule of OIDC Back-Channel
// Logout 1.0 section 2.6; none of them may end the session it names.
func TestBackchannelLogoutRefused(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("user-1", "user1@example.com", "sid-1")
	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", api), "session before the logout tokens")

	claims := func(f func(c map[string]any)) func() string {
		return func() string { return e.logoutToken(f) }
	}
	tests := []struct {
		name  string
		token func() string
	}{
		{"bad signature", func() string {
			return oidctest.NewRSAKey(e.op.ActiveKey().KID, 1).Sign(e.logoutClaims(nil), "logout+jwt")
		}},
		{"alg none", func() string { return oidctest.SignNone(e.logoutClaims(nil), "key-1") }},
		{"HS256 with the client secret", func() string {
			return oidctest.SignHS256(e.logoutClaims(nil), []byte(e.op.ClientSecret), "key-1")
		}},
		{"unknown kid", func() string {
			return oidctest.NewRSAKey("unknown-kid", 2).Sign(e.logoutClaims(nil), "logout+jwt")
		}},
		{"wrong iss", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })},
		{"aud without our client_id", claims(func(c map[string]any) { c["aud"] = "other-client" })},
		{"aud array without our client_id", claims(func(c map[string]any) { c["aud"] = []string{"a", "b"} })},
		{"missing iat", claims(func(c map[string]any) { delete(c, "iat") })},
		{"iat in the future", claims(func(c map[string]any) {
			c["iat"] = e.clock.Now().Add(time.Hour).Unix()
			c["exp"] = e.clock.Now().Add(2 * time.Hour).Unix()
		})},
		{"iat too old", claims(func(c map[string]any) {
			c["iat"] = e.clock.Now().Add(-time.Hour).Unix()
			delete(c, "exp")
		})},
		{"expired exp", claims(func(c map[string]any) {
			c["iat"] = e.clock.Now().Add(-time.Minute).Unix()
			c["exp"] = e.clock.Now().Add(-30 * time.Minute).Unix()
		})},
		{"missing jti", claims(func(c map[string]any) { delete(c, "jti") })},
		{"empty jti", claims(func(c map[string]any) { c["jti"] = "" })},
		{"missing events", claims(func(c map[string]any) { delete(c, "events") })},
		{"events without the back-channel member", claims(func(c map[string]any) {
			c["events"] = map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}
		})},
		{"event value a string", claims(func(c map[string]any) { c["events"] = map[string]any{oidc.BackchannelEvent: "yes"} })},
		{"event value an array", claims(func(c map[string]any) { c["events"] = map[string]any{oidc.BackchannelEvent: []any{}} })},
		{"event value null", claims(func(c map[string]any) { c["events"] = map[string]any{oidc.BackchannelEvent: nil} })},
		{"events not an object", claims(func(c map[string]any) { c["events"] = []string{oidc.BackchannelEvent} })},
		{"neither sub nor sid", claims(func(c map[string]any) { delete(c, "sub"); delete(c, "sid") })},
		{"nonce present", claims(func(c map[string]any) { c["nonce"] = "n-0S6_WzA2Mj" })},
		{"nonce present but null", claims(func(c map[string]any) {
			c["nonce"] = nil
			c["sid"] = "sid-null" // leave the session alone if this is accepted
		})},
		{"typ at+jwt", func() string { return e.op.ActiveKey().Sign(e.logoutClaims(nil), "at+jwt") }},
		{"typ secevent+jwt", func() string { return e.op.ActiveKey().Sign(e.logoutClaims(nil), "secevent+jwt") }},
		{"an ID token", func() string {
			return e.op.ActiveKey().Sign(e.logoutClaims(func(c map[string]any) {
				delete(c, "events")
				c["nonce"] = "abc"
			}), "JWT")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := e.postLogout(tc.token())
			if tc.name == "nonce present but null" && res.StatusCode == http.StatusOK {
			}
			expectBackchannelRefused(t, res, tc.name)
			if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
		})
	}

	t.Run("replayed jti", func(t *testing.T) {
		tok := e.logoutToken(func(c map[string]any) { c["sid"] = "sid-other" })
		if res := e.postLogout(tok); res.StatusCode != http.StatusOK {
			t.Fatalf("first post: status %d, want 200; body %q", res.StatusCode, res.body)
		}
		expectBackchannelRefused(t, e.postLogout(tok), "second post of the same token")
	})

	t.Run("request shape", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/auth/backchannel-logout?logout_token="+e.logoutToken(nil), nil)
		if res := serveIT(e.h, req); res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET: status %d, want 405", res.StatusCode)
		}
		req = httptest.NewRequest(http.MethodPost, "http://"+itHost+"/auth/backchannel-logout", strings.NewReader(`{"logout_token":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		expectBackchannelRefused(t, serveIT(e.h, req), "JSON body")
		req = httptest.NewRequest(http.MethodPost, "http://"+itHost+"/auth/backchannel-logout",
			strings.NewReader("logout_token="+e.logoutToken(nil)+"&logout_token="+e.logoutToken(nil)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		expectBackchannelRefused(t, serveIT(e.h, req), "two logout tokens")
	})

	// None of the refused tokens ended the session.
	expectServed(t, b.get("/private", api), "session after the refused logout tokens")
}

func TestBackchannelLogoutBySID(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("user-1", "user1@example.com", "sid-A")
	a1 := e.browser()
	a1.mustLogin("/private")
	a2 := e.browser() // a second browser in the same IdP session
	a2.mustLogin("/private")
	e.op.SetUser("user-1", "user1@example.com", "sid-B")
	other := e.browser()
	other.mustLogin("/private")
	if res := a1.get("/private", api); res.sid != "sid-A" {
		t.Fatalf("{http.auth.user.sid} = %q, want sid-A", res.sid)
	}

	res := e.postLogout(e.logoutToken(func(c map[string]any) {
		c["sid"] = "sid-A"
		delete(c, "sub")
	}))
	expectBackchannelAccepted(t, res)

	e.expectLoginRedirect(a1.get("/private", nav), "session with the logged-out sid")
	expectAPI401(t, a2.get("/private", api), "other session with the logged-out sid")
	expectServed(t, other.get("/private", api), "session with another sid")

	// A refresh does not bring the session back.
	e.clock.Advance(11 * time.Minute)
	expectAPI401(t, a2.get("/private", api), "logged-out sid after the access token's expiry")
	expectServed(t, other.get("/private", api), "other sid after a refresh")
}

func TestBackchannelLogoutBySubject(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("user-2", "user2@example.com", "")
	u2a := e.browser()
	u2a.mustLogin("/private")
	u2b := e.browser()
	u2b.mustLogin("/private")
	e.op.SetUser("user-3", "user3@example.com", "")
	u3 := e.browser()
	u3.mustLogin("/private")

	res := e.postLogout(e.logoutToken(func(c map[string]any) {
		c["sub"] = "user-2"
		delete(c, "sid")
	}))
	expectBackchannelAccepted(t, res)
	e.expectLoginRedirect(u2a.get("/private", nav), "first session of the logged-out sub")
	expectAPI401(t, u2b.get("/private", api), "second session of the logged-out sub")
	expectServed(t, u3.get("/private", api), "session of another sub")

	// Sessions begun after the logout are not affected.
	e.clock.Advance(2 * time.Second)
	e.op.SetUser("user-2", "user2@example.com", "")
	again := e.browser()
	again.mustLogin("/private")
	expectServed(t, again.get("/private", api), "new session of the sub after the logout")
}

func TestBackchannelLogoutAccepted(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	tests := []struct {
		name   string
		mutate func(c map[string]any)
		typ    string
	}{
		{"aud as a string", func(c map[string]any) { c["aud"] = e.op.ClientID }, "logout+jwt"},
		{"aud as an array", func(c map[string]any) { c["aud"] = []string{"other-client", e.op.ClientID} }, "logout+jwt"},
		{"typ JWT", nil, "JWT"},
		{"typ application/logout+jwt", nil, "application/logout+jwt"},
		{"no exp", func(c map[string]any) { delete(c, "exp") }, "logout+jwt"},
		{"only sid", func(c map[string]any) { delete(c, "sub") }, "logout+jwt"},
		{"only sub", func(c map[string]any) { delete(c, "sid"); c["sub"] = "someone" }, "logout+jwt"},
		{"event with members", func(c map[string]any) {
			c["events"] = map[string]any{oidc.BackchannelEvent: map[string]any{"x": 1}, "other": "y"}
		}, "logout+jwt"},
		{"iat a little in the future (clock skew)", func(c map[string]any) { c["iat"] = e.clock.Now().Add(time.Minute).Unix() }, "logout+jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := e.op.ActiveKey().Sign(e.logoutClaims(tc.mutate), tc.typ)
			res := e.postLogout(tok)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200; body %q", res.StatusCode, res.body)
			}
		})
	}
}
