package oidcauth

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// IdP-initiated login (Scalekit's idp_initiated_login JWT) and OIDC
// third-party initiated login at initiate_login_path.

func TestSameSitePath(t *testing.T) {
	plain := httptest.NewRequest(http.MethodGet, "http://app.test/auth/initiate", nil)
	secure := httptest.NewRequest(http.MethodGet, "https://app.test/auth/initiate", nil)
	secure.TLS = &tls.ConnectionState{}
	withPort := httptest.NewRequest(http.MethodGet, "http://app.test:8080/auth/initiate", nil)

	for _, c := range []struct {
		name string
		r    *http.Request
		raw  string
		want string // "" = refused
	}{
		{"path", plain, "/deep/page", "/deep/page"},
		{"path with query", plain, "/deep/page?a=1&b=2", "/deep/page?a=1&b=2"},
		{"same origin URL", plain, "http://app.test/deep/page?a=1", "/deep/page?a=1"},
		{"same origin, no path", plain, "http://app.test", "/"},
		{"same origin, fragment dropped", plain, "http://app.test/deep#frag", "/deep"},
		{"same origin https", secure, "https://app.test/deep", "/deep"},
		{"same origin with port", withPort, "http://app.test:8080/deep", "/deep"},
		{"https target on http site", plain, "https://app.test/deep", ""},
		{"http target on https site", secure, "http://app.test/deep", ""},
		{"other port", withPort, "http://app.test:8081/deep", ""},
		{"port added", plain, "http://app.test:80/deep", ""},
		{"port dropped", withPort, "http://app.test/deep", ""},
		{"other host", plain, "http://evil.test/deep", ""},
		{"suffix host", plain, "http://app.test.evil.test/deep", ""},
		{"userinfo", plain, "http://user@app.test/deep", ""},
		{"userinfo naming the site", plain, "http://app.test@evil.test/deep", ""},
		{"scheme-relative", plain, "//evil.test/deep", ""},
		{"scheme-relative same host", plain, "//app.test/deep", ""},
		{"backslash", plain, `/\evil.test`, ""},
		{"double slash path on this site", plain, "http://app.test//evil.test/x", ""},
		{"encoded double slash path on this site", plain, "http://app.test/%2F%2Fevil.test", ""},
		{"encoded backslash path on this site", plain, "http://app.test/%5Cevil.test", ""},
		{"javascript", plain, "javascript:alert(1)", ""},
		{"data", plain, "data:text/html,x", ""},
		{"relative path", plain, "deep/page", ""},
		{"empty", plain, "", ""},
		{"control character", plain, "http://app.test/deep\n", ""},
		{"too long", plain, "/" + strings.Repeat("a", maxReturnToLen), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := sameSitePath(c.r, c.raw)
			if c.want == "" {
				if ok {
					t.Errorf("sameSitePath(%q) = %q, want refused", c.raw, got)
				}
				return
			}
			if !ok || got != c.want {
				t.Errorf("sameSitePath(%q) = %q, %v; want %q", c.raw, got, ok, c.want)
			}
		})
	}
}

// initiationClaims are the claims of a good idp_initiated_login token.
func initiationClaims(e *itEnv) map[string]any {
	now := e.clock.Now()
	return map[string]any{
		"iss":             e.op.Issuer,
		"iat":             now.Unix(),
		"exp":             now.Add(5 * time.Minute).Unix(),
		"organization_id": "org_1",
		"connection_id":   "conn_1",
		"login_hint":      "alice@example.com",
		"relay_state":     "/deep/relay?q=1",
	}
}

func verifyInitiationOf(e *itEnv, raw string) (map[string]any, error) {
	r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/auth/initiate", nil)
	return e.h.client.VerifyInitiation(r.Context(), raw)
}

func TestVerifyInitiation(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	key := e.op.ActiveKey()
	good := initiationClaims(e)

	claims, err := verifyInitiationOf(e, key.Sign(good, "JWT"))
	if err != nil {
		t.Fatalf("a good token: %v", err)
	}
	for _, name := range []string{"organization_id", "connection_id", "login_hint", "relay_state"} {
		if claims[name] != good[name] {
			t.Errorf("claim %s = %v, want %v", name, claims[name], good[name])
		}
	}

	with := func(change func(c map[string]any)) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		change(c)
		return c
	}
	now := e.clock.Now()
	accepted := map[string]string{
		"no iss (checked only when present)": key.Sign(with(func(c map[string]any) { delete(c, "iss") }), "JWT"),
		"nbf now":                            key.Sign(with(func(c map[string]any) { c["nbf"] = now.Unix() }), "JWT"),
		"an audience":                        key.Sign(with(func(c map[string]any) { c["aud"] = "env_123" }), "JWT"),
	}
	for name, tok := range accepted {
		if _, err := verifyInitiationOf(e, tok); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}

	other := oidctest.NewRSAKey("key-1", 1) // the IdP's kid, another key
	stranger := oidctest.NewRSAKey("stranger", 2)
	ec := oidctest.NewECKey("key-ec")
	refused := map[string]string{
		"expired":                            key.Sign(with(func(c map[string]any) { c["exp"] = now.Add(-time.Second).Unix() }), "JWT"),
		"no exp":                             key.Sign(with(func(c map[string]any) { delete(c, "exp") }), "JWT"),
		"nbf far ahead":                      key.Sign(with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }), "JWT"),
		"foreign iss":                        key.Sign(with(func(c map[string]any) { c["iss"] = "https://other-idp.example" }), "JWT"),
		"iss with a trailing slash":          key.Sign(with(func(c map[string]any) { c["iss"] = e.op.Issuer + "/" }), "JWT"),
		"iss not a string":                   key.Sign(with(func(c map[string]any) { c["iss"] = 42 }), "JWT"),
		"another key, same kid":              other.Sign(good, "JWT"),
		"a key not in the JWKS":              stranger.Sign(good, "JWT"),
		"an algorithm not announced (ES256)": ec.Sign(good, "JWT"),
		"alg none":                           oidctest.SignNone(good, "key-1"),
		"HS256 with the client secret":       oidctest.SignHS256(good, []byte(e.op.ClientSecret), "key-1"),
		"HS256 with the public key":          oidctest.SignHS256(good, oidctest.PublicKeyPEM(&oidctest.RSAKey(0).PublicKey), "key-1"),
		"not a JWT":                          "not.a.jwt",
		"empty":                              "",
		"signature cut":                      strings.TrimRight(key.Sign(good, "JWT"), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
	}
	for name, tok := range refused {
		t.Run(name, func(t *testing.T) {
			if c, err := verifyInitiationOf(e, tok); err == nil {
				t.Errorf("accepted: %v", c)
			}
		})
	}
}

func TestVerifyInitiationIdPDown(t *testing.T) {
	m := newUnitHandler(t, nil) // its issuer does not answer
	r := navRequest(http.MethodGet, "/auth/initiate?idp_initiated_login=a.b.c")
	if _, err := m.client.VerifyInitiation(r.Context(), "a.b.c"); !errors.Is(err, errIdPUnavailable) {
		t.Errorf("err = %v, want errIdPUnavailable", err)
	}
	rec, next := serve(t, m, r)
	if rec.Code != http.StatusServiceUnavailable || next.called {
		t.Errorf("status %d, want 503 while the IdP is down", rec.Code)
	}
	if len(rec.Result().Cookies()) != 0 {
		t.Errorf("cookies set: %v", rec.Header()["Set-Cookie"])
	}
}

// initiate sends a navigation to the initiate path and, when it is sent to
// the IdP, completes the login; it returns the initiation answer and the
// callback's.
func initiate(t *testing.T, e *itEnv, b *itBrowser, query string) (start, callback *itResult) {
	t.Helper()
	start = b.get("/auth/initiate?"+query, nav)
	if start.StatusCode != http.StatusFound {
		return start, nil
	}
	code := e.op.Authorize(start.location())
	u, _ := url.Parse(start.location())
	return start, b.get(itCallbackURL(code, u.Query().Get("state")), nav)
}

func TestIdPInitiatedLoginFlow(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(m *OIDCAuth) {
		m.AuthParams = map[string]string{"organization_id": "org_default", "prompt": "consent"}
	})
	b := e.browser()
	tok := e.op.ActiveKey().Sign(initiationClaims(e), "JWT")
	start, cb := initiate(t, e, b, "idp_initiated_login="+url.QueryEscape(tok))
	e.expectLoginRedirect(start, "IdP-initiated login")
	q, _ := url.Parse(start.location())
	for name, want := range map[string]string{
		"organization_id": "org_default", // auth_param wins over the token's hint
		"connection_id":   "conn_1",
		"login_hint":      "alice@example.com",
		"prompt":          "consent",
	} {
		if got := q.Query().Get(name); got != want {
			t.Errorf("authorize %s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"relay_state", "idp_initiated_login"} {
		if q.Query().Has(name) {
			t.Errorf("authorize request carries %s", name)
		}
	}
	if start.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", start.Header.Get("Cache-Control"))
	}
	if cb.StatusCode != http.StatusFound || cb.location() != "/deep/relay?q=1" {
		t.Fatalf("callback: %d to %q, want 302 to the relay_state path", cb.StatusCode, cb.location())
	}
	expectServed(t, b.get("/deep/relay?q=1", nav), "after an IdP-initiated login")

	// The same token again starts another ordinary login (it is a link,
	// not a credential): a fresh state each time.
	again, _ := initiate(t, e, e.browser(), "idp_initiated_login="+url.QueryEscape(tok))
	e.expectLoginRedirect(again, "the same token again")
	if again.location() == start.location() {
		t.Error("two initiations got the same authorize request")
	}

	// By POST (form) too.
	body := url.Values{"idp_initiated_login": {tok}}.Encode()
	req := httptest.NewRequest(http.MethodPost, "http://"+itHost+"/auth/initiate", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	e.expectLoginRedirect(e.browser().do(req, nav), "POSTed idp_initiated_login")
}

func TestIdPInitiatedLoginRelayState(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	for relay, want := range map[any]string{
		"/ok/path":               "/ok/path",
		"https://evil.example/x": "/",
		"//evil.example/x":       "/",
		`/\evil.example`:         "/",
		"":                       "/",
		42:                       "/",
	} {
		c := initiationClaims(e)
		c["relay_state"] = relay
		b := e.browser()
		_, cb := initiate(t, e, b, "idp_initiated_login="+url.QueryEscape(e.op.ActiveKey().Sign(c, "JWT")))
		if cb == nil || cb.StatusCode != http.StatusFound || cb.location() != want {
			t.Errorf("relay_state %v: callback %+v, want 302 to %q", relay, cb, want)
		}
	}
}

func TestInitiateRefusals(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	c := initiationClaims(e)
	c["exp"] = e.clock.Now().Add(-time.Minute).Unix()
	expired := e.op.ActiveKey().Sign(c, "JWT")
	foreign := oidctest.NewRSAKey("key-1", 3).Sign(initiationClaims(e), "JWT")
	for name, query := range map[string]string{
		"expired token":              "idp_initiated_login=" + url.QueryEscape(expired),
		"token of another key":       "idp_initiated_login=" + url.QueryEscape(foreign),
		"garbage token":              "idp_initiated_login=xyz",
		"no parameters":              "",
		"foreign iss":                url.Values{"iss": {"https://other-idp.example"}, "target_link_uri": {"/x"}}.Encode(),
		"iss with a trailing slash":  url.Values{"iss": {e.op.Issuer + "/"}}.Encode(),
		"target on another host":     url.Values{"iss": {e.op.Issuer}, "target_link_uri": {"http://evil.test/x"}}.Encode(),
		"target on another port":     url.Values{"iss": {e.op.Issuer}, "target_link_uri": {"http://" + itHost + ":8443/x"}}.Encode(),
		"target over another scheme": url.Values{"iss": {e.op.Issuer}, "target_link_uri": {"https://" + itHost + "/x"}}.Encode(),
		"target scheme-relative":     url.Values{"iss": {e.op.Issuer}, "target_link_uri": {"//evil.test/x"}}.Encode(),
	} {
		t.Run(name, func(t *testing.T) {
			res := e.browser().get("/auth/initiate?"+query, nav)
			if res.StatusCode != http.StatusBadRequest || res.reachedNext {
				t.Fatalf("status %d, want 400; location %q", res.StatusCode, res.location())
			}
			if len(res.Cookies()) != 0 {
				t.Errorf("a refused initiation set cookies: %v", res.Header["Set-Cookie"])
			}
		})
	}
	t.Run("method", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPut, "http://"+itHost+"/auth/initiate", nil)
		res := e.browser().do(req, nav)
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, POST" {
			t.Errorf("PUT: status %d Allow %q", res.StatusCode, res.Header.Get("Allow"))
		}
	})
}

func TestThirdPartyInitiatedLoginFlow(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(m *OIDCAuth) { m.InitiateLoginPath = "/sso/start" })
	b := e.browser()
	q := url.Values{"iss": {e.op.Issuer}, "login_hint": {"alice"}, "target_link_uri": {"http://" + itHost + "/deep/page?x=1"}}
	start := b.get("/sso/start?"+q.Encode(), nav)
	e.expectLoginRedirect(start, "third-party initiated login")
	u, _ := url.Parse(start.location())
	if got := u.Query().Get("login_hint"); got != "alice" {
		t.Errorf("login_hint = %q", got)
	}
	if u.Query().Has("target_link_uri") || u.Query().Has("iss") {
		t.Errorf("initiation parameters reached the authorize request: %s", u)
	}
	cb := b.get(itCallbackURL(e.op.Authorize(start.location()), u.Query().Get("state")), nav)
	if cb.StatusCode != http.StatusFound || cb.location() != "/deep/page?x=1" {
		t.Fatalf("callback: %d to %q, want /deep/page?x=1", cb.StatusCode, cb.location())
	}

	// A path as target_link_uri, no login_hint, and an over-long hint.
	for query, want := range map[string][2]string{
		url.Values{"iss": {e.op.Issuer}, "target_link_uri": {"/p"}}.Encode():                                           {"/p", ""},
		url.Values{"iss": {e.op.Issuer}}.Encode():                                                                      {"/", ""},
		url.Values{"iss": {e.op.Issuer}, "login_hint": {strings.Repeat("h", 513)}, "target_link_uri": {"/h"}}.Encode(): {"/h", ""},
	} {
		b := e.browser()
		start := b.get("/sso/start?"+query, nav)
		e.expectLoginRedirect(start, query)
		u, _ := url.Parse(start.location())
		if got := u.Query().Get("login_hint"); got != want[1] {
			t.Errorf("%s: login_hint = %q, want %q", query, truncateForLog(got), want[1])
		}
		cb := b.get(itCallbackURL(e.op.Authorize(start.location()), u.Query().Get("state")), nav)
		if cb.location() != want[0] {
			t.Errorf("%s: lands on %q, want %q", query, cb.location(), want[0])
		}
	}

	// The default path is an ordinary protected path once moved.
	e.expectLoginRedirect(e.browser().get("/auth/initiate?"+q.Encode(), nav), "default initiate path after the move")
}
