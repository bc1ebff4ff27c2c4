package oidcauth

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

func TestFlowLoginSuccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		methods   []string
		wantStyle string
	}{
		{"basic listed", []string{"client_secret_basic", "client_secret_post"}, "basic"},
		{"only post listed", []string{"client_secret_post"}, "post"},
		{"nothing listed", nil, "basic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			if n := e.op.DiscoveryFetches.Load(); n != 0 {
				t.Fatalf("Provision fetched discovery %d times; it must do no network I/O", n)
			}
			e.op.Set(func(s *oidctest.Script) {
				var methods any // nil removes the field
				if tc.methods != nil {
					methods = tc.methods
				}
				s.Discovery = map[string]any{"token_endpoint_auth_methods_supported": methods}
			})
			b := e.browser()

			loc, q := b.startLogin("/private/page?x=1")
			if q.Get("redirect_uri") != "http://"+itHost+"/auth/callback" {
				t.Errorf("redirect_uri = %q", q.Get("redirect_uri"))
			}
			code := e.op.Authorize(loc)
			res := b.get(itCallbackURL(code, q.Get("state")), nav)
			if res.StatusCode != http.StatusFound || res.location() != "/private/page?x=1" {
				t.Fatalf("callback: status %d location %q, want 302 to the original page; body %s", res.StatusCode, res.location(), res.body)
			}

			styles, verifiers, _, _ := e.op.Observed()
			if len(styles) != 1 || styles[0] != tc.wantStyle {
				t.Errorf("client authentication at the token endpoint: %v, want [%s]", styles, tc.wantStyle)
			}
			if len(verifiers) != 1 || len(verifiers[0]) < 43 {
				t.Errorf("PKCE code_verifier sent: %q", verifiers)
			}

			sc := res.setCookie(e.sessionCookieName())
			if sc == nil || sc.Value == "" {
				t.Fatalf("callback set no session cookie %q; cookies: %v", e.sessionCookieName(), res.Cookies())
			}
			if !sc.HttpOnly || sc.Path != "/" || sc.SameSite != http.SameSiteLaxMode {
				t.Errorf("session cookie attributes: HttpOnly=%v Path=%q SameSite=%v", sc.HttpOnly, sc.Path, sc.SameSite)
			}
			// The ID token (for logout's id_token_hint) is sent only to the
			// logout path.
			if ic := res.setCookie(e.sessionCookieName() + "_idt"); ic == nil || ic.Path != "/auth/logout" || !ic.HttpOnly {
				t.Errorf("ID token cookie: %+v, want HttpOnly with Path=/auth/logout", ic)
			}
			_, access, refresh := e.op.Issued()
			for _, c := range res.Cookies() {
				if strings.Contains(c.Value, access[:20]) || strings.Contains(c.Value, refresh) {
					t.Errorf("cookie %s carries a token in clear", c.Name)
				}
				if strings.Contains(c.Name, "_s_") && c.MaxAge >= 0 {
					t.Errorf("callback left the state cookie %s in place", c.Name)
				}
			}

			for _, kind := range []string{nav, api} {
				res = b.get("/private/page?x=1", kind)
				expectServed(t, res, "request after login ("+kind+")")
				if res.user != "user-1" || res.email != "user1@example.com" {
					t.Errorf("placeholders: user.id=%q user.email=%q", res.user, res.email)
				}
			}
		})
	}
}

func TestFlowUnauthenticated(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.AuthParams = map[string]string{"prompt": "login"} })
	b := e.browser()
	res := b.get("/private", nav)
	e.expectLoginRedirect(res, "navigation without session")
	q, _ := url.ParseQuery(strings.SplitN(res.location(), "?", 2)[1])
	if q.Get("prompt") != "login" || q.Get("code_challenge_method") != "S256" {
		t.Errorf("authorize parameters: %v", q)
	}
	expectAPI401(t, b.get("/private", api), "API call without session")

	// A session cookie that does not decrypt counts as none.
	b.cookies["/\x00"+e.sessionCookieName()] = itCookie{name: e.sessionCookieName(), value: "AQ" + strings.Repeat("x", 80), path: "/"}
	expectAPI401(t, b.get("/private", api), "API call with a forged cookie")
}

func TestFlowCallbackStateReplay(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	b := e.browser()
	loc, q := b.startLogin("/private")
	code := e.op.Authorize(loc)
	cb := itCallbackURL(code, q.Get("state"))
	stolen := b.clone() // the state cookie, as it was before the callback

	expectRedirectTo(t, b.get(cb, nav), "/private", "first callback")

	// The browser replays the callback (back button, reload): its state
	// cookie is gone.
	res := b.clone().get(cb, nav)
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("second use of the callback: status %d, want 400", res.StatusCode)
	}
	e.expectNoSession(res, "second use of the callback")

	t.Run("with a copy of the state cookie", func(t *testing.T) {
		// The IdP here does not enforce one-time codes, so only the
		// handler can notice that the state was used already.
		e.op.Set(func(s *oidctest.Script) { s.AllowCodeReuse = true })
		res := stolen.get(cb, nav)
		if res.StatusCode != http.StatusBadRequest {
		}
		e.expectNoSession(res, "replayed state with a copied state cookie")
	})
}

func expectRedirectTo(t *testing.T, res *itResult, target, what string) {
	t.Helper()
	if res.StatusCode != http.StatusFound || res.location() != target {
		t.Fatalf("%s: status %d location %q, want 302 to %q; body %s", what, res.StatusCode, res.location(), target, truncateForLog(res.body))
	}
}

func TestFlowCallbackRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		issParam   bool // discovery: authorization_response_iss_parameter_supported
		query      func(e *itEnv, code, state string) string
		wantStatus int
	}{
		{"iss mismatch", false, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state, "iss", "https://evil.example")
		}, http.StatusBadRequest},
		{"iss mismatch when supported", true, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state, "iss", e.op.Issuer+"/other")
		}, http.StatusBadRequest},
		{"iss missing when supported", true, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state)
		}, http.StatusBadRequest},
		{"duplicate state", false, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state, "state", state)
		}, http.StatusBadRequest},
		{"duplicate state, the other one wrong", false, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state, "state", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		}, http.StatusBadRequest},
		{"wrong state", false, func(e *itEnv, code, state string) string {
			return itCallbackURL(code, state[:len(state)-2]+"xx")
		}, http.StatusBadRequest},
		{"missing state", false, func(e *itEnv, code, state string) string {
			return "/auth/callback?code=" + url.QueryEscape(code)
		}, http.StatusBadRequest},
		{"missing code", false, func(e *itEnv, code, state string) string {
			return "/auth/callback?state=" + url.QueryEscape(state)
		}, http.StatusBadRequest},
		{"code unknown to the IdP", false, func(e *itEnv, code, state string) string {
			return itCallbackURL("forged-code", state)
		}, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			if tc.issParam {
				e.op.Set(func(s *oidctest.Script) {
					s.Discovery = map[string]any{"authorization_response_iss_parameter_supported": true}
				})
			}
			b := e.browser()
			loc, q := b.startLogin("/private")
			code := e.op.Authorize(loc)
			res := b.get(tc.query(e, code, q.Get("state")), nav)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", res.StatusCode, tc.wantStatus, truncateForLog(res.body))
			}
			e.expectNoSession(res, tc.name)
			expectAPI401(t, b.get("/private", api), "request after the refused callback")
		})
	}

	t.Run("iss matches when supported", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t)
		e.op.Set(func(s *oidctest.Script) {
			s.Discovery = map[string]any{"authorization_response_iss_parameter_supported": true}
		})
		b := e.browser()
		loc, q := b.startLogin("/private")
		code := e.op.Authorize(loc)
		expectRedirectTo(t, b.get(itCallbackURL(code, q.Get("state"), "iss", e.op.Issuer), nav), "/private", "callback with the right iss")
	})

	t.Run("error from the IdP is escaped", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t)
		b := e.browser()
		_, q := b.startLogin("/private")
		res := b.get("/auth/callback?"+url.Values{
			"state": {q.Get("state")}, "error": {"access_denied"}, "error_description": {"<script>alert(1)</script>"},
		}.Encode(), nav)
		if res.StatusCode < 400 || res.StatusCode >= 500 {
			t.Fatalf("status %d, want 4xx", res.StatusCode)
		}
		if strings.Contains(res.body, "<script>") || !strings.Contains(res.body, "access_denied") {
			t.Errorf("error page: %s", res.body)
		}
		e.expectNoSession(res, "error callback")
	})
}

func TestFlowCallbackTokenEndpointFailures(t *testing.T) {
	t.Parallel()

	t.Run("500", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t)
		e.op.Set(func(s *oidctest.Script) {
			s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
				http.Error(w, "boom", http.StatusInternalServerError)
				return true
			}
		})
		res := e.browser().login("/private")
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502; body %s", res.StatusCode, truncateForLog(res.body))
		}
		if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("Content-Type %q, want an HTML page", res.Header.Get("Content-Type"))
		}
		e.expectNoSession(res, "token endpoint 500")
	})

	t.Run("redirect is not followed", func(t *testing.T) {
		t.Parallel()
		var elsewhere atomic.Int64
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			elsewhere.Add(1)
			oidctest.WriteJSON(w, http.StatusOK, map[string]any{"access_token": "x", "token_type": "Bearer"})
		}))
		defer other.Close()
		e := newITEnv(t)
		e.op.Set(func(s *oidctest.Script) {
			s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
				http.Redirect(w, r, other.URL+"/token", http.StatusTemporaryRedirect)
				return true
			}
		})
		res := e.browser().login("/private")
		if res.StatusCode == http.StatusFound || res.StatusCode < 400 {
			t.Fatalf("status %d location %q, want the login to fail", res.StatusCode, res.location())
		}
		if n := elsewhere.Load(); n != 0 {
			t.Fatalf("the redirect target received %d requests (the code and client secret)", n)
		}
		e.expectNoSession(res, "token endpoint redirect")
	})

	t.Run("slow", func(t *testing.T) {
		// A token endpoint that answers after the user gave up must not
		// leave a session behind; here it answers in time.
		t.Parallel()
		e := newITEnv(t)
		e.op.Set(func(s *oidctest.Script) {
			s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
				time.Sleep(300 * time.Millisecond)
				return false
			}
		})
		expectRedirectTo(t, e.browser().login("/private"), "/private", "slow token endpoint")
	})
}

// refreshEnv is a logged-in browser whose access token lives 60 s, so that
// its refresh window starts 15 s before expiry.
func refreshEnv(t *testing.T, script func(s *oidctest.Script)) (*itEnv, *itBrowser) {
	t.Helper()
	e := newITEnv(t)
	e.op.Set(func(s *oidctest.Script) {
		s.AccessTTL = time.Minute
		if script != nil {
			script(s)
		}
	})
	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", api), "request right after login")
	return e, b
}

func TestFlowRefreshTransparent(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, nil)
	before := b.clone()
	oldRT := e.lastRefreshToken()
	e.clock.Advance(61 * time.Second) // access token expired

	res := b.get("/private", nav)
	expectServed(t, res, "request with an expired access token")
	if n := e.op.Grants("refresh_token"); n != 1 {
		t.Fatalf("refresh grants: %d, want 1", n)
	}
	_, _, sent, _ := e.op.Observed()
	if len(sent) != 1 || sent[0] != oldRT {
		t.Errorf("refresh token sent: %v, want [%s]", sent, oldRT)
	}
	sc := res.setCookie(e.sessionCookieName())
	if sc == nil || sc.MaxAge <= 0 || sc.Value == "" {
		t.Fatalf("refresh did not set a new session cookie: %v", res.Cookies())
	}
	if old, _ := before.cookie(e.sessionCookieName()); old.value == sc.Value {
		t.Error("new session cookie equals the old one")
	}
	if res.user != "user-1" || res.email != "user1@example.com" {
		t.Errorf("placeholders after refresh: %q %q", res.user, res.email)
	}

	// The new cookie works without another refresh.
	expectServed(t, b.get("/private", api), "request with the refreshed cookie")
	if n := e.op.Grants("refresh_token"); n != 1 {
		t.Errorf("refresh grants: %d, want 1", n)
	}
}

func TestFlowRefreshParallelOnce(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			if grant == "refresh_token" {
				time.Sleep(200 * time.Millisecond) // let the requests pile up
			}
			return false
		}
	})
	e.clock.Advance(61 * time.Second)

	const n = 200
	var wg sync.WaitGroup
	results := make([]*itResult, n)
	start := make(chan struct{})
	for i := range n {
		c := b.clone()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = c.get("/private", api)
		}()
	}
	close(start)
	wg.Wait()
	for i, res := range results {
		if res.StatusCode != http.StatusOK || !res.reachedNext || res.user != "user-1" {
			t.Fatalf("request %d: status %d next=%v user=%q body %q", i, res.StatusCode, res.reachedNext, res.user, truncateForLog(res.body))
		}
	}
	if got := e.op.Grants("refresh_token"); got != 1 {
		t.Fatalf("%d parallel requests caused %d refresh grants at the IdP, want 1", n, got)
	}

	// A request that was sent with the old cookie before the browser got
	// the new one: the old refresh token was rotated away at the IdP.
	e.clock.Advance(5 * time.Second)
	res := b.get("/private", nav)
	expectServed(t, res, "request with the old cookie after the refresh")
	if got := e.op.Grants("refresh_token"); got != 1 {
		t.Fatalf("the old cookie caused another refresh grant (%d in all)", got)
	}
}

func TestFlowRefreshInvalidGrantEndsSession(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, nil)
	e.op.Set(func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			oidctest.TokenError(w, http.StatusBadRequest, "invalid_grant", "session revoked at the IdP")
			return true
		}
	})
	apiClient := b.clone()
	e.clock.Advance(61 * time.Second)

	res := b.get("/private", nav)
	e.expectLoginRedirect(res, "navigation after invalid_grant")
	if sc := res.setCookie(e.sessionCookieName()); sc == nil || sc.MaxAge >= 0 {
		t.Errorf("session cookie not cleared: %v", res.Cookies())
	}
	if _, ok := b.cookie(e.sessionCookieName()); ok {
		t.Error("browser still holds a session cookie")
	}
	res = apiClient.get("/private", api)
	expectAPI401(t, res, "API call after invalid_grant")
	if sc := res.setCookie(e.sessionCookieName()); sc == nil || sc.MaxAge >= 0 {
		t.Errorf("API answer did not clear the session cookie: %v", res.Cookies())
	}
}

func TestFlowRefreshTokenEndpointDown(t *testing.T) {
	t.Parallel()
	for _, down := range []struct {
		name   string
		answer func(w http.ResponseWriter)
	}{
		{"connection dropped", oidctest.HangUp},
		{"HTTP 500", func(w http.ResponseWriter) { http.Error(w, "internal error", http.StatusInternalServerError) }},
		{"HTTP 503 with a JSON error", func(w http.ResponseWriter) {
			oidctest.TokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "maintenance")
		}},
	} {
		t.Run(down.name, func(t *testing.T) {
			t.Parallel()
			e, b := refreshEnv(t, nil)
			e.op.Set(func(s *oidctest.Script) {
				s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
					down.answer(w)
					return true
				}
			})

			// In the refresh window, not yet expired: the request is served.
			e.clock.Advance(50 * time.Second)
			expectServed(t, b.get("/private", nav), "request in the refresh window with the IdP down")
			if n := e.op.Grants("refresh_token"); n != 1 {
				t.Errorf("refresh attempts: %d, want 1", n)
			}

			// Expired and the IdP still down: 503, and the session is kept
			// for when the IdP is back.
			e.clock.Advance(15 * time.Second)
			res := b.get("/private", nav)
			if res.StatusCode != http.StatusServiceUnavailable || res.reachedNext {
				t.Fatalf("expired token, IdP down: status %d (next reached %v), want 503", res.StatusCode, res.reachedNext)
			}
			if _, ok := b.cookie(e.sessionCookieName()); !ok {
				t.Error("503 cleared the session cookie")
			}

			e.op.Set(func(s *oidctest.Script) { s.Token = nil })
			expectServed(t, b.get("/private", nav), "request once the IdP is back")
		})
	}
}

func TestFlowRefreshRefusesAnotherSubject(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, func(s *oidctest.Script) {
		swap := func(grant string, c map[string]any) {
			if grant == "refresh_token" {
				c["sub"] = "user-2"
			}
		}
		s.IDClaims = swap
		s.AccessClaims = swap
	})
	apiClient := b.clone()
	e.clock.Advance(61 * time.Second)
	res := b.get("/private", nav)
	e.expectLoginRedirect(res, "refresh with an ID token of another sub")
	expectAPI401(t, apiClient.get("/private", api), "API call, refresh with an ID token of another sub")
}

func TestFlowRefreshWithoutNewRefreshToken(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, func(s *oidctest.Script) { s.NoRefreshOnRefresh = true })
	rt := e.lastRefreshToken()

	e.clock.Advance(61 * time.Second)
	expectServed(t, b.get("/private", nav), "first refresh")
	e.clock.Advance(3 * time.Minute)
	expectServed(t, b.get("/private", nav), "second refresh")

	_, _, sent, _ := e.op.Observed()
	if len(sent) != 2 || sent[0] != rt || sent[1] != rt {
		t.Fatalf("refresh tokens sent: %v, want the login's %q twice", sent, rt)
	}
}

func TestFlowRefreshWithoutIDToken(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, func(s *oidctest.Script) { s.NoIDTokenOnRefresh = true })
	e.clock.Advance(61 * time.Second)
	res := b.get("/private", nav)
	expectServed(t, res, "refresh answered without an ID token")
	if res.user != "user-1" || res.email != "user1@example.com" {
		t.Errorf("identity after a refresh without ID token: %q %q", res.user, res.email)
	}
}

func TestFlowIdPDownAtStart(t *testing.T) {
	t.Parallel()
	clock := oidctest.NewClock()
	addr := freeLoopbackAddr(t)
	op := oidctest.NewUnstarted(t, clock)
	op.URL, op.Issuer = "http://"+addr, "http://"+addr
	e := &itEnv{t: t, clock: clock, op: op}
	e.h = e.provision(op.Issuer) // nothing listens: Provision must not care

	b := e.browser()
	res := b.get("/private", nav)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("navigation with the IdP down: status %d, want 503; location %q", res.StatusCode, res.location())
	}
	if res := b.get("/private", api); res.StatusCode != http.StatusServiceUnavailable && res.StatusCode != http.StatusUnauthorized {
		t.Errorf("API call with the IdP down: status %d", res.StatusCode)
	}

	op.StartOn(addr)
	// Within the discovery backoff the IdP is not asked again.
	if res := b.get("/private", nav); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("within the backoff: status %d, want 503", res.StatusCode)
	}
	if n := op.DiscoveryFetches.Load(); n != 0 {
		t.Errorf("discovery fetched %d times within the backoff", n)
	}

	clock.Advance(2 * time.Minute)
	b.mustLogin("/private")
	expectServed(t, b.get("/private", nav), "request after the IdP came up")
}

func TestFlowLogout(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.PostLogoutRedirectURI = "/goodbye" })
	b := e.browser()
	b.mustLogin("/private")
	_, _, _, idToken := e.op.Observed()
	copied := b.clone()

	// Speculative loads and HEAD do not log out.
	req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/auth/logout", nil)
	req.Header.Set("Sec-Purpose", "prefetch")
	if res := b.do(req, nav); res.StatusCode == http.StatusFound {
		t.Errorf("prefetch of the logout path: status %d", res.StatusCode)
	}
	if res := b.do(httptest.NewRequest(http.MethodHead, "http://"+itHost+"/auth/logout", nil), nav); res.StatusCode == http.StatusFound {
		t.Errorf("HEAD of the logout path: status %d", res.StatusCode)
	}
	expectServed(t, b.get("/private", nav), "session after prefetch and HEAD of logout")

	res := b.get("/auth/logout", nav)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("logout: status %d, want 302", res.StatusCode)
	}
	u, err := url.Parse(res.location())
	if err != nil || u.Scheme+"://"+u.Host+u.Path != e.op.URL+"/logout" {
		t.Fatalf("logout redirects to %q, want the end_session_endpoint", res.location())
	}
	q := u.Query()
	if q.Get("id_token_hint") != idToken {
		t.Errorf("id_token_hint = %q, want the login's ID token", truncateForLog(q.Get("id_token_hint")))
	}
	if q.Get("post_logout_redirect_uri") != "http://"+itHost+"/goodbye" {
		t.Errorf("post_logout_redirect_uri = %q", q.Get("post_logout_redirect_uri"))
	}
	if q.Get("client_id") != e.op.ClientID {
		t.Errorf("client_id = %q", q.Get("client_id"))
	}
	for _, name := range []string{e.sessionCookieName(), e.sessionCookieName() + "_idt"} {
		if c := res.setCookie(name); c == nil || c.MaxAge >= 0 {
			t.Errorf("logout did not clear cookie %s", name)
		}
	}

	e.expectLoginRedirect(b.get("/private", nav), "navigation after logout")
	e.expectLoginRedirect(copied.get("/private", nav), "old session cookie replayed after logout")
	expectAPI401(t, copied.get("/private", api), "old session cookie replayed after logout (API)")
}

func TestFlowLogoutWithoutEndSessionEndpoint(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.PostLogoutRedirectURI = "/goodbye" })
	e.op.Set(func(s *oidctest.Script) { s.Discovery = map[string]any{"end_session_endpoint": nil} })
	b := e.browser()
	b.mustLogin("/private")
	copied := b.clone()

	res := b.get("/auth/logout", nav)
	if res.StatusCode != http.StatusFound || res.location() != "http://"+itHost+"/goodbye" {
		t.Fatalf("local logout: status %d location %q, want 302 to the post-logout URI", res.StatusCode, res.location())
	}
	e.expectLoginRedirect(copied.get("/private", nav), "old session cookie after local logout")
}

// TestCaddyIntegration runs the handler inside a real Caddy: the Caddyfile
// directive is ordered and routed, placeholders reach other handlers, and
// the JSON field names work.
func TestFlowCaddyIntegration(t *testing.T) {
	clock := oidctest.NewClock()
	op := oidctest.New(t, clock)
	storage, err := os.MkdirTemp("", "oidcauth-caddytest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(storage) })

	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		skip_install_trust
		admin localhost:2999
		http_port     9080
		https_port    9443
		grace_period  1ns
		storage file_system {
			root %q
		}
	}
	http://localhost:9080 {
		oidc_auth {
			issuer        %s
			client_id     %s
			client_secret %s
			cookie_secret %s
		}
		respond "hello {http.auth.user.id} <{http.auth.user.email}>"
	}
	`, storage, op.Issuer, op.ClientID, op.ClientSecret, itCookieSecret), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	tester.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	caddyGet := func(target string, kind string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080"+target, nil)
		if kind == nav {
			req.Header.Set("Accept", "text/html")
			req.Header.Set("Sec-Fetch-Mode", "navigate")
		} else {
			req.Header.Set("Accept", "application/json")
		}
		res, err := tester.Client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	res, body := caddyGet("/private", api)
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("API call through Caddy: status %d, body %q", res.StatusCode, body)
	}
	var jsonBody map[string]any
	if err := json.Unmarshal([]byte(body), &jsonBody); err != nil || jsonBody["error"] == nil {
		t.Errorf("401 body is not a JSON error: %q", body)
	}

	res, _ = caddyGet("/private", nav)
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.Header.Get("Location"), op.URL+"/authorize?") {
		t.Fatalf("navigation through Caddy: status %d location %q", res.StatusCode, res.Header.Get("Location"))
	}
	loc := res.Header.Get("Location")
	u, _ := url.Parse(loc)
	if got := u.Query().Get("redirect_uri"); got != "http://localhost:9080/auth/callback" {
		t.Errorf("redirect_uri = %q", got)
	}
	code := op.Authorize(loc)
	res, body = caddyGet(itCallbackURL(code, u.Query().Get("state")), nav)
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/private" {
		t.Fatalf("callback through Caddy: status %d location %q body %q", res.StatusCode, res.Header.Get("Location"), body)
	}
	res, body = caddyGet("/private", nav)
	if res.StatusCode != http.StatusOK || body != "hello user-1 <user1@example.com>" {
		t.Fatalf("page after login through Caddy: status %d body %q", res.StatusCode, body)
	}

	// The same through a JSON config, inside a subroute.
	op2 := oidctest.New(t, clock)
	tester2 := caddytest.NewTester(t)
	tester2.InitServer(fmt.Sprintf(`{
		"admin": {"listen": "localhost:2999"},
		"storage": {"module": "file_system", "root": %q},
		"apps": {"http": {"http_port": 9080, "https_port": 9443, "grace_period": 1, "servers": {"srv0": {
			"listen": [":9080"],
			"routes": [{"handle": [{"handler": "subroute", "routes": [{"handle": [
				{"handler": "oidc_auth", "issuer": %q, "client_id": %q, "client_secret": %q,
				 "cookie_secret": %q, "login_path": "/sso/login", "redirect_uri": "/sso/callback"},
				{"handler": "static_response", "body": "json {http.auth.user.id}"}
			]}]}]}]
		}}}}
	}`, storage, op2.Issuer, op2.ClientID, op2.ClientSecret, itCookieSecret), "json")
	if t.Failed() {
		t.FailNow()
	}
	tester2.Client.CheckRedirect = tester.Client.CheckRedirect
	req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080/sso/login?return_to=/x", nil)
	req.Header.Set("Accept", "text/html")
	res, err = tester2.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc = res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(loc, op2.URL+"/authorize?") {
		t.Fatalf("JSON config login_path: status %d location %q", res.StatusCode, loc)
	}
	u, _ = url.Parse(loc)
	if got := u.Query().Get("redirect_uri"); got != "http://localhost:9080/sso/callback" {
		t.Errorf("JSON config redirect_uri = %q", got)
	}
	code = op2.Authorize(loc)
	req, _ = http.NewRequest(http.MethodGet, "http://localhost:9080/sso/callback?"+url.Values{"code": {code}, "state": {u.Query().Get("state")}}.Encode(), nil)
	res, err = tester2.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/x" {
		t.Fatalf("JSON config callback: status %d location %q", res.StatusCode, res.Header.Get("Location"))
	}
	req, _ = http.NewRequest(http.MethodGet, "http://localhost:9080/x", nil)
	req.Header.Set("Accept", "text/html")
	res, err = tester2.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "json user-1" {
		t.Fatalf("JSON config page: status %d body %q", res.StatusCode, b)
	}
}

// TestFlowIssuerWithTrailingSlash: some IdPs (Auth0, for one) have an
// issuer identifier that ends in a slash; discovery and the iss checks
// compare it exactly.
func TestFlowIssuerWithTrailingSlash(t *testing.T) {
	t.Parallel()
	clock := oidctest.NewClock()
	op := oidctest.New(t, clock)
	op.Issuer = op.URL + "/"
	e := &itEnv{t: t, clock: clock, op: op}
	e.h = e.provision(op.Issuer)
	b := e.browser()
	res := b.get("/private", nav)
	if res.StatusCode == http.StatusServiceUnavailable {
	}
	e.expectLoginRedirect(res, "navigation")
	b.mustLogin("/private")
	expectServed(t, b.get("/private", api), "request after login")
}

// TestFlowLogoutDuringRefresh: a back-channel logout that arrives while a
// refresh of the same session is under way is not undone by the refresh.
func TestFlowLogoutDuringRefresh(t *testing.T) {
	t.Parallel()
	hold, started, release := oidctest.Hold("refresh_token")
	e, b := refreshEnv(t, func(s *oidctest.Script) { s.Token = hold })
	e.clock.Advance(61 * time.Second)
	done := make(chan *itResult)
	go func() { done <- b.get("/private", api) }()
	<-started
	res := e.postLogout(e.logoutToken(func(c map[string]any) { c["sid"] = "sid-1" }))
	release()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("logout token: status %d; body %q", res.StatusCode, res.body)
	}
	expectAPI401(t, <-done, "request whose refresh overlapped the logout")
	expectAPI401(t, b.get("/private", api), "request after the logout")
}
