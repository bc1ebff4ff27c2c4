package oidcauth

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// TestTokenTypeMustBeBearer: a token response whose token_type is not
// Bearer (any case) is refused at login and ends the session at a refresh
// (RFC 6749 section 7.1).
func TestTokenTypeMustBeBearer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		typ string
		ok  bool
	}{
		{"Bearer", true},
		{"bearer", true},
		{"BEARER", true},
		{"DPoP", false},
		{"mac", false},
		{"Bearer2", false},
		{"-", false}, // no token_type at all
	} {
		t.Run("login with "+tt.typ, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(func(s *oidctest.Script) { s.TokenType = tt.typ })
			b := e.browser()
			res := b.login("/private")
			if tt.ok {
				if res.StatusCode != http.StatusFound || res.location() != "/private" {
					t.Fatalf("token_type %q: status %d location %q, want a completed login", tt.typ, res.StatusCode, res.location())
				}
				return
			}
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("token_type %q: status %d, want 400", tt.typ, res.StatusCode)
			}
			e.expectNoSession(res, "login with token_type "+tt.typ)
		})
	}
	t.Run("refresh with DPoP", func(t *testing.T) {
		t.Parallel()
		e, b := refreshEnv(t, func(s *oidctest.Script) { s.TokenTypeOnRefresh = "DPoP" })
		e.clock.Advance(61 * time.Second)
		expectAPI401(t, b.get("/private", api), "refresh answered with token_type DPoP")
		if n := e.op.Grants("refresh_token"); n != 1 {
			t.Errorf("refresh grants: %d, want 1", n)
		}
	})
}

// TestLoginHintsNeverOverrideAuthParams: the hints of a sign-in link
// (login_path query, IdP-initiated login) fill only what auth_param leaves
// open; a pinned organization or prompt stays pinned.
func TestLoginHintsNeverOverrideAuthParams(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.AuthParams = map[string]string{"organization_id": "org_pinned", "prompt": "consent"}
	})
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/login?organization_id=org_evil&prompt=none&login_hint=bob%40example.com&connection_id=conn_1"))
	if rec.Code != http.StatusFound {
		t.Fatalf("status %d, want 302", rec.Code)
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	for name, want := range map[string]string{
		"organization_id": "org_pinned",
		"prompt":          "consent",
		"login_hint":      "bob@example.com",
		"connection_id":   "conn_1",
	} {
		if got := q[name]; len(got) != 1 || got[0] != want {
			t.Errorf("authorize %s = %q, want [%q]", name, got, want)
		}
	}
}

// TestUnsafeMethodsWithoutSessionGet401: PUT, PATCH, DELETE (and other
// methods no browser navigates with) get 401 without a session, even
// when their headers look like a navigation; GET and POST navigations
// still go to the IdP.
func TestUnsafeMethodsWithoutSessionGet401(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	for _, method := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete, "PROPFIND", "MKCOL"} {
		rec, next := serve(t, m, navRequest(method, "/items/1"))
		if rec.Code != http.StatusUnauthorized || next.called || rec.Header().Get("Location") != "" {
			t.Errorf("%s navigation without a session: status %d location %q, want 401", method, rec.Code, rec.Header().Get("Location"))
		}
		if rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", method)
		}
		for _, c := range rec.Result().Cookies() {
			t.Errorf("%s: 401 sets cookie %s (no login may start)", method, c.Name)
		}
	}
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/items/1"))
	if rec.Code != http.StatusFound {
		t.Errorf("GET navigation: status %d, want 302", rec.Code)
	}
}

// TestTokenHeaderStrippedInEverySpelling: a client's own copy of the
// Management API token_header never reaches the next handler, whatever
// its case or with '_' for '-', even when the handler has no token to set.
func TestTokenHeaderStrippedInEverySpelling(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		// The token endpoint is unreachable: the handler sets no header.
		m.ManagementAPI = &ManagementAPI{BaseURL: "http://127.0.0.1:1", TokenURL: "http://127.0.0.1:1/token", TokenHeader: "X-Scalekit-Token"}
	})
	m.wire()
	r := apiRequest(http.MethodGet, "/app")
	r.Header["X-Scalekit-Token"] = []string{"Bearer forged-1"}
	r.Header["x-scalekit-token"] = []string{"Bearer forged-2"}
	r.Header["X_Scalekit_Token"] = []string{"Bearer forged-3"}
	r.Header["X-SCALEKIT_TOKEN"] = []string{"Bearer forged-4"}
	r.Header["X-Scalekit-Tokens"] = []string{"kept"}
	addSession(t, m, r, unitSession(time.Now()))
	rec, next := serve(t, m, r)
	if !next.called {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	for k, v := range next.req.Header {
		if strings.Contains(strings.Join(v, ","), "forged") {
			t.Errorf("header %q: %q reached the next handler", k, v)
		}
	}
	if next.req.Header.Get("X-Scalekit-Tokens") != "kept" {
		t.Error("a header with a longer name was removed too")
	}
}

// TestPlaceholdersWithoutControlCharacters: a claim with CR, LF, NUL or
// other control characters (a user's own display name) gives placeholders
// without them, so headers made from them stay valid.
func TestPlaceholdersWithoutControlCharacters(t *testing.T) {
	v := &verifiedToken{claims: map[string]any{"nested": map[string]any{"x": "a\x00b"}}}
	s := &session{Subject: "user\r\n1", Claims: []byte(`{"name":"Alice\r\nX-Injected: 1","tags":["a\nb","c\u0085d"],"plain":"Zoë\tx"}`)}
	id := v.identityFor(s)
	for name, want := range map[string]string{
		"http.auth.user.id":       "user  1",
		"http.auth.user.name":     "Alice  X-Injected: 1",
		"http.auth.user.tags":     "a b,c d",
		"http.auth.user.nested.x": "a b",
		"http.auth.user.plain":    "Zoë x",
	} {
		got, _ := id.replace(name)
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// Rules see the claim as the IdP sent it.
	if id.claims["name"] != "Alice\r\nX-Injected: 1" {
		t.Errorf("claims[name] = %q", id.claims["name"])
	}
}

// TestRequireEmailNeedsVerifiedEmail: a rule on email holds only for an
// address the IdP verified, unless allow_unverified_email is set.
func TestRequireEmailNeedsVerifiedEmail(t *testing.T) {
	rules := []Rule{{Claim: "email", Values: []string{"*@example.com"}}}
	for _, tt := range []struct {
		name     string
		verified string // the email_verified claim as JSON; "" = absent
		allow    bool
		want     bool
	}{
		{"verified", `true`, false, true},
		{"verified as a string", `"true"`, false, true},
		{"unverified", `false`, false, false},
		{"unverified as a string", `"false"`, false, false},
		{"no email_verified claim", ``, false, false},
		{"email_verified of another type", `1`, false, false},
		{"unverified, allowed", `false`, true, true},
		{"no email_verified claim, allowed", ``, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"sub":"u1","email":"mallory@example.com"`
			if tt.verified != "" {
				raw += `,"email_verified":` + tt.verified
			}
			id := &identity{claims: decodeClaims(t, raw+`}`)}
			m := accessRules{rules: rules, allowUnverifiedEmail: tt.allow}
			if got := m.allow(id); got != tt.want {
				t.Errorf("allowed = %v, want %v", got, tt.want)
			}
			// Rules on other claims do not look at email_verified.
			other := accessRules{rules: []Rule{{Claim: "sub", Values: []string{"u1"}}}}
			if !other.allow(id) {
				t.Error("a rule on sub failed")
			}
		})
	}

	// Through a login: the IdP says the address is unverified.
	e := newITEnv(t, func(m *OIDCAuth) { m.Require = rules })
	e.op.SetUser("user-1", "mallory@example.com", "")
	e.op.Set(func(s *oidctest.Script) {
		s.IDClaims = func(_ string, c map[string]any) { c["email_verified"] = false }
	})
	b := e.browser()
	b.mustLogin("/private")
	if res := b.get("/private", nav); res.StatusCode != http.StatusForbidden || res.reachedNext {
		t.Errorf("unverified email under require email: status %d, want 403", res.StatusCode)
	}
}

// TestBearerAcceptsOnlyAccessTokens: bearer mode takes access tokens
// (typ at+jwt, or client_id/scope claims), never an ID token (with or
// without nonce and at_hash, as refreshed ones often are) or a logout
// token, even when they are signed by the IdP for this client.
func TestBearerAcceptsOnlyAccessTokens(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{} })
	now := e.clock.Now()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "user-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	events := map[string]any{oidctest.BackchannelLogoutEvent: map[string]any{}}
	key := e.op.ActiveKey()
	for _, tt := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"RFC 9068 access token", key.Sign(claims(map[string]any{"client_id": e.op.ClientID}), "at+jwt"), true},
		{"typ application/at+jwt", key.Sign(claims(nil), "application/at+jwt"), true},
		{"typ JWT with client_id", key.Sign(claims(map[string]any{"client_id": e.op.ClientID}), "JWT"), true},
		{"typ JWT with scope", key.Sign(claims(map[string]any{"scope": "openid email"}), "JWT"), true},
		{"no typ, Entra scp", key.Sign(claims(map[string]any{"scp": "read"}), ""), true},
		{"ID token without nonce or at_hash", key.Sign(claims(map[string]any{"email": "u@example.com", "sid": "s1"}), "JWT"), false},
		{"ID token with nonce", key.Sign(claims(map[string]any{"nonce": "n"}), "JWT"), false},
		{"ID token typ", key.Sign(claims(map[string]any{"client_id": e.op.ClientID}), "id_token+jwt"), false},
		{"logout token", key.Sign(claims(map[string]any{"events": events, "jti": "j1", "sid": "s1"}), "logout+jwt"), false},
		{"logout token typ JWT with client_id", key.Sign(claims(map[string]any{"events": events, "client_id": e.op.ClientID}), "JWT"), false},
		{"at+jwt with events", key.Sign(claims(map[string]any{"events": events}), "at+jwt"), false},
		{"at+jwt with nonce", key.Sign(claims(map[string]any{"nonce": "n"}), "at+jwt"), false},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/api/items", nil)
		req.Header.Set("Authorization", "Bearer "+tt.tok)
		res := e.browser().do(req, api)
		if tt.ok {
			expectServed(t, res, tt.name)
			continue
		}
		if res.reachedNext || res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("%s: status %d (next reached %v), want 401 invalid_token", tt.name, res.StatusCode, res.reachedNext)
		}
	}
}

// TestBearerAudiences: bearer tokens must be for the client ID or one of
// bearer's audiences; access_token_audiences count only with
// accept_access_token_audiences.
func TestBearerAudiences(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		bearer BearerConfig
		aud    string
		ok     bool
	}{
		{"client ID", BearerConfig{}, "", true},
		{"bearer audience", BearerConfig{Audiences: []string{"api://orders"}}, "api://orders", true},
		{"session audience", BearerConfig{Audiences: []string{"api://orders"}}, "api://sessions", false},
		{"session audience, accepted", BearerConfig{AcceptAccessTokenAudiences: true}, "api://sessions", true},
		{"unknown audience", BearerConfig{AcceptAccessTokenAudiences: true}, "api://other", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t, func(h *OIDCAuth) {
				cfg := tt.bearer
				h.Bearer = &cfg
				h.AccessTokenAudiences = []string{"api://sessions"}
			})
			aud := tt.aud
			if aud == "" {
				aud = e.op.ClientID
			}
			now := e.clock.Now()
			tok := e.op.ActiveKey().Sign(map[string]any{"iss": e.op.Issuer, "aud": aud, "sub": "user-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "client_id": "some-client"}, "at+jwt")
			req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/api/items", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res := e.browser().do(req, api)
			if tt.ok {
				expectServed(t, res, "aud "+aud)
			} else if res.reachedNext || res.StatusCode != http.StatusUnauthorized {
				t.Errorf("aud %s: status %d (next reached %v), want 401", aud, res.StatusCode, res.reachedNext)
			}
		})
	}
}

// TestOwnCookiesNeverReachNextHandler: the session (and its chunks), the
// ID token, state and login loop cookies are removed before the request
// goes on, in every spelling the handler uses; other cookies pass as they
// came, another app's included.
func TestOwnCookiesNeverReachNextHandler(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	base := m.cookies.Name()
	for _, secure := range []bool{false, true} {
		r := apiRequest(http.MethodGet, "/app")
		if secure {
			r.TLS = &tls.ConnectionState{}
		}
		addSession(t, m, r, unitSession(time.Now()))
		r.Header.Add("Cookie", `theme=dark; `+base+`_lg=0; lang="en-GB"`)
		r.Header.Add("Cookie", base+`_s_abcdefghijkl=x; other_app=`+base+`; `+base+`_idt=y; __Host-`+base+`_1=z; __Secure-`+base+`_idt_2=w`)
		r.Header.Add("Cookie", base+`_3=only-ours`)
		r.Header.Add("Cookie", base+`x=another-app; `+base+`_extra=kept; `+base+`_=kept`)
		rec, next := serve(t, m, r)
		if !next.called {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		got := next.req.Header["Cookie"]
		want := []string{`theme=dark; lang="en-GB"`, `other_app=` + base, base + `x=another-app; ` + base + `_extra=kept; ` + base + `_=kept`}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("TLS %v: Cookie headers at the next handler:\n%q\nwant\n%q", secure, got, want)
		}
	}

	// A request with only the handler's cookies goes on without a Cookie header.
	r := apiRequest(http.MethodGet, "/app")
	addSession(t, m, r, unitSession(time.Now()))
	if _, next := serve(t, m, r); !next.called || next.req.Header.Get("Cookie") != "" {
		t.Errorf("Cookie header at the next handler: %q, want none", next.req.Header.Get("Cookie"))
	}
}

// TestLoginLoopCounterClearedOnceSessionHolds: the loop counter set at the
// callback is expired by the first request the new session serves.
func TestLoginLoopCounterClearedOnceSessionHolds(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	b := e.browser()
	cb := b.mustLogin("/private")
	loop := e.h.cookies.Name() + "_lg"
	if c := cb.setCookie(loop); c == nil || c.MaxAge <= 0 {
		t.Fatalf("the callback did not set the loop counter: %v", cb.Cookies())
	}
	res := b.get("/private", nav)
	expectServed(t, res, "first request of the session")
	if c := res.setCookie(loop); c == nil || c.MaxAge >= 0 {
		t.Errorf("the first request of the session did not expire the loop counter: %v", res.Cookies())
	}
	if _, ok := b.cookie(loop); ok {
		t.Error("the browser still holds the loop counter")
	}
	if res := b.get("/private", nav); res.setCookie(loop) != nil {
		t.Error("later requests set the loop counter again")
	}
}

// TestProtectedResponsesArePrivate: a response of the next handler without
// its own Cache-Control gets `Cache-Control: private`, however it writes
// (WriteHeader, Write, ReadFrom, Flush); its own Cache-Control is kept;
// allow_shared_cache turns it off.
func TestProtectedResponsesArePrivate(t *testing.T) {
	writers := map[string]func(w http.ResponseWriter){
		"WriteHeader": func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) },
		"Write":       func(w http.ResponseWriter) { _, _ = w.Write([]byte("page")) },
		"ReadFrom":    func(w http.ResponseWriter) { _, _ = io.Copy(w, strings.NewReader("page")) },
		"Flush":       func(w http.ResponseWriter) { _ = http.NewResponseController(w).Flush() },
		"own Cache-Control": func(w http.ResponseWriter) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			w.WriteHeader(http.StatusOK)
		},
	}
	for _, allow := range []bool{false, true} {
		m := newUnitHandler(t, func(m *OIDCAuth) { withOverrides(m); m.AllowSharedCache = allow })
		for name, write := range writers {
			r := apiRequest(http.MethodGet, "/app")
			addSession(t, m, r, unitSession(time.Now()))
			rec := httptest.NewRecorder()
			err := m.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				write(w)
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			want := "private"
			switch {
			case name == "own Cache-Control":
				want = "public, max-age=60"
			case allow:
				want = ""
			}
			if got := rec.Result().Header.Get("Cache-Control"); got != want {
				t.Errorf("allow_shared_cache %v, %s: Cache-Control %q, want %q", allow, name, got, want)
			}
		}
	}
}
