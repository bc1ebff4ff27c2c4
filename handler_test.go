package oidcauth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/cookie/cookietest"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// unreachableIssuer is a closed port: discovery fails at once.
const unreachableIssuer = "http://127.0.0.1:1"

// newUnitHandler sets a handler up as Provision does, without a Caddy
// context: its IdP is unreachable unless configure overrides endpoints.
func newUnitHandler(t *testing.T, configure func(*OIDCAuth)) *OIDCAuth {
	t.Helper()
	m := &OIDCAuth{
		Issuer:       unreachableIssuer,
		ClientID:     "unit-app",
		ClientSecret: "unit-secret",
		CookieSecret: testCookieSecret,
	}
	if configure != nil {
		configure(m)
	}
	p := newProvider(m.Issuer, endpoints{
		Authorization: m.AuthorizationEndpoint,
		Token:         m.TokenEndpoint,
		JWKS:          m.JWKSURI,
		EndSession:    m.EndSessionEndpoint,
	}, nil, nil)
	provisionForTest(t, m, p, t.TempDir(), nil)
	return m
}

// provisionForTest does what Provision does, without a Caddy context:
// the settings, the cookie codec, the provider p, a store in dir (with
// storeClock; nil: the wall clock), a silent logger and the handler's
// parts.
func provisionForTest(tb testing.TB, m *OIDCAuth, p *provider, dir string, storeClock func() time.Time) {
	tb.Helper()
	if err := m.configure(); err != nil {
		tb.Fatalf("configure: %v", err)
	}
	if m.CookieName == "" {
		m.CookieName = defaultCookieName(m.Issuer, m.ClientID)
	}
	var err error
	if m.cookies, err = cookie.New([]byte(m.CookieSecret), m.Issuer, m.ClientID, m.CookieName); err != nil {
		tb.Fatal(err)
	}
	m.provider = p
	m.logger = zap.NewNop()
	id := store.AppID(m.Issuer, m.ClientID)
	m.app = newAppState(id, newTestStore(tb, id, dir, storeClock))
	tb.Cleanup(func() { _ = m.app.Destruct() })
	if m.now == nil {
		m.now = time.Now
	}
	m.wire()
}

// withOverrides makes discovery unnecessary, so a login can start without
// an IdP; the token endpoint is unreachable.
func withOverrides(m *OIDCAuth) {
	m.AuthorizationEndpoint = "https://idp.example.com/authorize"
	m.TokenEndpoint = "http://127.0.0.1:1/token"
	m.JWKSURI = "https://idp.example.com/jwks"
	m.EndSessionEndpoint = "https://idp.example.com/logout?x=1"
}

func newRequest(method, target string, headers ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
}

func apiRequest(method, target string) *http.Request {
	return newRequest(method, target, "Accept", "application/json")
}

func navRequest(method, target string) *http.Request {
	return newRequest(method, target, "Accept", "text/html,application/xhtml+xml,*/*;q=0.8", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
}

type nextHandler struct {
	called bool
	req    *http.Request
}

func (n *nextHandler) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		n.called, n.req = true, r
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
}

// serve runs the handler like Caddy would: a returned handler error
// becomes its status code.
func serve(t *testing.T, m *OIDCAuth, r *http.Request) (*httptest.ResponseRecorder, *nextHandler) {
	t.Helper()
	rec := httptest.NewRecorder()
	next := new(nextHandler)
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("%s %s panicked: %v", r.Method, r.URL, p)
			}
		}()
		err = m.ServeHTTP(rec, r, next.handler())
	}()
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			rec.Code = he.StatusCode
		} else {
			rec.Code = http.StatusInternalServerError
		}
		t.Logf("handler error: %v", err)
	}
	return rec, next
}

func addSession(t *testing.T, m *OIDCAuth, r *http.Request, s *session) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := m.cookies.WriteSession(rec, r, s, 3600); err != nil {
		t.Fatal(err)
	}
	for _, c := range rec.Result().Cookies() {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
}

func unitSession(now time.Time) *session {
	return &session{
		ID:          randomString(16),
		Subject:     "user-42",
		SID:         "idp-session-1",
		Created:     now.Add(-time.Minute).Unix(),
		AccessToken: "opaque-" + randomString(16),
		Expiry:      now.Add(time.Hour).Unix(),
		RefreshAt:   now.Add(50 * time.Minute).Unix(),
		Claims:      json.RawMessage(`{"email":"user42@example.com","email_verified":true,"name":"User 42","groups":["staff","dev"]}`),
	}
}

func sessionCookieSet(m *OIDCAuth, rec *httptest.ResponseRecorder, r *http.Request) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == m.cookies.SessionCookieName(r) && c.MaxAge >= 0 && c.Value != "" {
			return c
		}
	}
	return nil
}

func jsonBody(t *testing.T, rec *httptest.ResponseRecorder) map[string]string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want JSON", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body is not a JSON object: %q", rec.Body.String())
	}
	return body
}

func TestAPIRequestWithoutSession(t *testing.T) {
	m := newUnitHandler(t, nil)
	for _, r := range []*http.Request{
		apiRequest(http.MethodGet, "/api/items"),
		newRequest(http.MethodGet, "/api/items", "Accept", "*/*"),
		newRequest(http.MethodPost, "/api/items", "Sec-Fetch-Mode", "cors", "Accept", "text/html"),
		newRequest(http.MethodGet, "/api/items", "X-Requested-With", "XMLHttpRequest", "Accept", "text/html"),
	} {
		t.Run(r.Method+" "+r.Header.Get("Accept")+" "+r.Header.Get("Sec-Fetch-Mode"), func(t *testing.T) {
			rec, next := serve(t, m, r)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401; body %q", rec.Code, rec.Body)
			}
			if next.called {
				t.Error("next handler called")
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="example.com"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if rec.Header().Get("Location") != "" {
				t.Error("an API call got a redirect")
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", rec.Header().Get("Cache-Control"))
			}
			body := jsonBody(t, rec)
			if body["error"] != "unauthorized" || body["login_url"] != "/auth/login" {
				t.Errorf("body = %v", body)
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Errorf("cookies set: %v", rec.Header()["Set-Cookie"])
			}
		})
	}
}

func TestWWWAuthenticateRealmSanitized(t *testing.T) {
	m := newUnitHandler(t, nil)
	r := apiRequest(http.MethodGet, "/")
	r.Host = `evil"host\x` + "\x01"
	rec, _ := serve(t, m, r)
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="evilhostx"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
}

func TestNavigationWhileIdPDown(t *testing.T) {
	m := newUnitHandler(t, nil)
	for i := range 2 { // the second request hits the discovery backoff
		rec, next := serve(t, m, navRequest(http.MethodGet, "/page"))
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: status = %d, want 503", i, rec.Code)
		}
		if next.called {
			t.Error("next handler called")
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type = %q, want an HTML page", ct)
		}
		if rec.Header().Get("Location") != "" {
			t.Error("redirected while the IdP is down")
		}
		if !strings.Contains(rec.Body.String(), "identity provider is unavailable") {
			t.Errorf("body = %q", rec.Body)
		}
	}
	// The explicit login path too.
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/login?return_to=/x"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("login path: status = %d, want 503", rec.Code)
	}
}

func TestNavigationRedirectsToAuthorize(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.AuthParams = map[string]string{"prompt": "login", "organization_id": "org_1"}
	})
	r := navRequest(http.MethodGet, "/docs/page?q=1")
	r.TLS = &tls.ConnectionState{}
	rec, next := serve(t, m, r)
	if rec.Code != http.StatusFound || next.called {
		t.Fatalf("status = %d, next called %v", rec.Code, next.called)
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if loc.Scheme != "https" || loc.Host != "idp.example.com" || loc.Path != "/authorize" {
		t.Errorf("Location = %v", loc)
	}
	q := loc.Query()
	for k, want := range map[string]string{
		"response_type":         "code",
		"client_id":             "unit-app",
		"redirect_uri":          "https://example.com/auth/callback",
		"scope":                 "openid profile email offline_access",
		"code_challenge_method": "S256",
		"prompt":                "login",
		"organization_id":       "org_1",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 32 {
			t.Errorf("%s = %q, want a long random value", k, q.Get(k))
		}
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("redirect is cacheable")
	}
	// The state cookie remembers where the user was going.
	back := cookietest.RequestWith(rec, http.MethodGet, "/auth/callback", true)
	st := m.cookies.PeekState(back, q.Get("state"), time.Now())
	if st == nil {
		t.Fatalf("no state cookie for the state: %v", rec.Header()["Set-Cookie"])
	}
	if st.ReturnTo != "/docs/page?q=1" || st.Nonce != q.Get("nonce") {
		t.Errorf("state = %+v", st)
	}
}

func TestLoginPath(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	tests := []struct {
		name       string
		req        *http.Request
		wantStatus int
		wantReturn string
	}{
		{"no return_to", navRequest(http.MethodGet, "/auth/login"), http.StatusFound, "/"},
		{"return_to path", navRequest(http.MethodGet, "/auth/login?return_to="+url.QueryEscape("/a/b?c=d")), http.StatusFound, "/a/b?c=d"},
		{"return_to other site", navRequest(http.MethodGet, "/auth/login?return_to="+url.QueryEscape("https://evil.com/")), http.StatusBadRequest, ""},
		{"return_to scheme-relative", navRequest(http.MethodGet, "/auth/login?return_to="+url.QueryEscape("//evil.com")), http.StatusBadRequest, ""},
		{"return_to backslash", navRequest(http.MethodGet, "/auth/login?return_to="+url.QueryEscape(`/\evil.com`)), http.StatusBadRequest, ""},
		{"POST", navRequest(http.MethodPost, "/auth/login"), http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, next := serve(t, m, tt.req)
			if rec.Code != tt.wantStatus || next.called {
				t.Fatalf("status = %d, want %d (next called %v)", rec.Code, tt.wantStatus, next.called)
			}
			if tt.wantStatus != http.StatusFound {
				if len(rec.Result().Cookies()) != 0 {
					t.Errorf("cookies set on a refused login: %v", rec.Header()["Set-Cookie"])
				}
				return
			}
			loc, _ := url.Parse(rec.Header().Get("Location"))
			st := m.cookies.PeekState(cookietest.RequestWith(rec, http.MethodGet, "/", false), loc.Query().Get("state"), time.Now())
			if st == nil || st.ReturnTo != tt.wantReturn {
				t.Errorf("state = %+v, want return_to %q", st, tt.wantReturn)
			}
		})
	}
}

func TestCallbackRefusedWithoutIdP(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	longQuery := "/auth/callback?state=" + strings.Repeat("a", 9<<10)
	tests := []struct {
		name       string
		req        *http.Request
		wantStatus int
	}{
		{"no state", navRequest(http.MethodGet, "/auth/callback?code=abc"), http.StatusBadRequest},
		{"no parameters", navRequest(http.MethodGet, "/auth/callback"), http.StatusBadRequest},
		{"unknown state", navRequest(http.MethodGet, "/auth/callback?code=abc&state="+randomString(32)), http.StatusBadRequest},
		{"repeated state", navRequest(http.MethodGet, "/auth/callback?code=abc&state=a&state=b"), http.StatusBadRequest},
		{"repeated code", navRequest(http.MethodGet, "/auth/callback?code=a&code=b&state=x"), http.StatusBadRequest},
		{"malformed query", navRequest(http.MethodGet, "/auth/callback?code=%zz&state=x"), http.StatusBadRequest},
		{"query too long", navRequest(http.MethodGet, longQuery), http.StatusRequestURITooLong},
		{"POST", navRequest(http.MethodPost, "/auth/callback?code=abc&state=x"), http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, next := serve(t, m, tt.req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if next.called {
				t.Error("next handler called")
			}
			if c := sessionCookieSet(m, rec, tt.req); c != nil {
				t.Errorf("session cookie set: %v", c)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("callback answer is cacheable")
			}
		})
	}
}

// startLogin runs a login up to the IdP and returns the state and a
// function making callback requests that carry the state cookie.
func startLogin(t *testing.T, m *OIDCAuth, returnTo string) (string, func(query string) *http.Request) {
	t.Helper()
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/login?return_to="+url.QueryEscape(returnTo)))
	if rec.Code != http.StatusFound {
		t.Fatalf("login: status %d", rec.Code)
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	state := loc.Query().Get("state")
	return state, func(query string) *http.Request {
		r := navRequest(http.MethodGet, "/auth/callback?"+query)
		for _, c := range rec.Result().Cookies() {
			r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		return r
	}
}

func TestCallbackIdPError(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	query := "error=access_denied&error_description=" + url.QueryEscape("<script>alert(1)</script>")

	t.Run("without state", func(t *testing.T) {
		rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/callback?"+query))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status = %d, want 401", rec.Code)
		}
		body := rec.Body.String()
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
		}
		if strings.Contains(body, "<script>alert") {
			t.Errorf("error_description not escaped: %s", body)
		}
		if !strings.Contains(body, "&lt;script&gt;") || !strings.Contains(body, "access_denied") {
			t.Errorf("page does not show the escaped error: %s", body)
		}
		if !strings.Contains(body, `href="/auth/login"`) {
			t.Errorf("no retry link: %s", body)
		}
		if sessionCookieSet(m, rec, navRequest(http.MethodGet, "/")) != nil {
			t.Error("session cookie set")
		}
	})

	t.Run("with the login's state", func(t *testing.T) {
		state, callback := startLogin(t, m, "/reports?y=2024")
		r := callback(query + "&state=" + state)
		rec, _ := serve(t, m, r)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status = %d, want 401", rec.Code)
		}
		if got := retryReturnTo(t, rec.Body.String()); got != "/reports?y=2024" {
			t.Errorf("retry link returns to %q, want the page the login started from", got)
		}
		name := m.cookies.StateCookieName(r, state)
		if c := cookietest.SetCookies(rec)[name]; c == nil || c.MaxAge >= 0 {
			t.Errorf("state cookie not expired: %+v", c)
		}
	})

	t.Run("API caller gets JSON", func(t *testing.T) {
		rec, _ := serve(t, m, apiRequest(http.MethodGet, "/auth/callback?"+query))
		body := jsonBody(t, rec)
		if rec.Code != http.StatusUnauthorized || !strings.Contains(body["error_description"], "access_denied") {
			t.Errorf("status %d, body %v", rec.Code, body)
		}
	})
}

// retryReturnTo returns the return_to of the error page's retry link.
func retryReturnTo(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`id="retry" href="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no retry link in %s", body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || u.Path != "/auth/login" {
		t.Fatalf("retry link %q", m[1])
	}
	return u.Query().Get("return_to")
}

func TestCallbackWithState(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	tests := []struct {
		name       string
		query      func(state string) string
		wantStatus int
	}{
		{"iss of another issuer", func(s string) string {
			return "code=c&state=" + s + "&iss=" + url.QueryEscape("https://evil.example.com")
		}, http.StatusBadRequest},
		{"no code", func(s string) string { return "state=" + s }, http.StatusBadRequest},
		{"token endpoint unreachable", func(s string) string { return "code=c&state=" + s }, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, callback := startLogin(t, m, "/x")
			r := callback(tt.query(state))
			rec, _ := serve(t, m, r)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if sessionCookieSet(m, rec, r) != nil {
				t.Error("session cookie set")
			}
			if c := cookietest.SetCookies(rec)[m.cookies.StateCookieName(r, state)]; c == nil || c.MaxAge >= 0 {
				t.Errorf("state cookie not expired: %+v", c)
			}
			// The state is used up whatever the outcome: a copy of its
			// cookie does not work a second time.
			rec, _ = serve(t, m, callback(tt.query(state)))
			if rec.Code != http.StatusBadRequest {
				t.Errorf("replayed state: status %d, want 400", rec.Code)
			}
			if c := cookietest.SetCookies(rec)[m.cookies.StateCookieName(r, state)]; c != nil && c.MaxAge >= 0 {
				t.Errorf("state cookie renewed: %+v", c)
			}
		})
	}
}

func TestLogoutMethods(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	now := time.Now()
	tests := []struct {
		name       string
		req        *http.Request
		wantStatus int
	}{
		{"HEAD", navRequest(http.MethodHead, "/auth/logout"), http.StatusMethodNotAllowed},
		{"PUT", navRequest(http.MethodPut, "/auth/logout"), http.StatusMethodNotAllowed},
		{"Sec-Purpose prefetch", newRequest(http.MethodGet, "/auth/logout", "Sec-Purpose", "prefetch"), http.StatusNoContent},
		{"Sec-Purpose prefetch;prerender", newRequest(http.MethodGet, "/auth/logout", "Sec-Purpose", "prefetch;prerender"), http.StatusNoContent},
		{"Purpose prefetch", newRequest(http.MethodGet, "/auth/logout", "Purpose", "prefetch"), http.StatusNoContent},
		{"X-Moz prefetch", newRequest(http.MethodGet, "/auth/logout", "X-Moz", "prefetch"), http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := unitSession(now)
			addSession(t, m, tt.req, s)
			rec, _ := serve(t, m, tt.req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Errorf("cookies touched: %v", rec.Header()["Set-Cookie"])
			}
			if m.app.revoked(s) {
				t.Error("session revoked")
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestLogoutClearsAndRevokes(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.PostLogoutRedirectURI = "/signed-out"
	})
	now := time.Now()
	s := unitSession(now)
	r := navRequest(http.MethodGet, "/auth/logout")
	r.TLS = &tls.ConnectionState{}
	addSession(t, m, r, s)
	idt := httptest.NewRecorder()
	if err := m.cookies.WriteIDToken(idt, r, m.LogoutPath, "the.id.token", 3600); err != nil {
		t.Fatal(err)
	}
	for _, c := range idt.Result().Cookies() {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	stale := apiRequest(http.MethodGet, "/api")
	stale.TLS = r.TLS
	for _, c := range r.Cookies() {
		stale.AddCookie(c)
	}

	rec, _ := serve(t, m, r)
	if rec.Code != http.StatusFound {
		t.Fatalf("status = %d, want 302", rec.Code)
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if loc.Host != "idp.example.com" || loc.Path != "/logout" || q.Get("x") != "1" ||
		q.Get("id_token_hint") != "the.id.token" || q.Get("client_id") != "unit-app" ||
		q.Get("post_logout_redirect_uri") != "https://example.com/signed-out" {
		t.Errorf("Location = %v", loc)
	}
	set := cookietest.SetCookies(rec)
	for _, name := range []string{m.cookies.SessionCookieName(r), m.cookies.IDTokenCookieName(r, m.LogoutPath)} {
		if c := set[name]; c == nil || c.MaxAge >= 0 {
			t.Errorf("%s not cleared: %+v", name, c)
		}
	}
	if !m.app.revoked(s) {
		t.Error("session not revoked")
	}
	// A copy of the old cookie no longer works.
	rec, next := serve(t, m, stale)
	if rec.Code != http.StatusUnauthorized || next.called {
		t.Errorf("old cookie after logout: status %d, next called %v", rec.Code, next.called)
	}
}

func TestLogoutWhileIdPDown(t *testing.T) {
	m := newUnitHandler(t, nil)
	s := unitSession(time.Now())
	r := navRequest(http.MethodPost, "/auth/logout")
	addSession(t, m, r, s)
	rec, _ := serve(t, m, r)
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/" {
		t.Errorf("status %d, Location %q; want a local logout to /", rec.Code, rec.Header().Get("Location"))
	}
	if !m.app.revoked(s) {
		t.Error("session not revoked")
	}
	if c := cookietest.SetCookies(rec)[m.cookies.SessionCookieName(r)]; c == nil || c.MaxAge >= 0 {
		t.Errorf("session cookie not cleared: %+v", c)
	}
}

func TestBackchannelLogoutRefusals(t *testing.T) {
	m := newUnitHandler(t, nil)
	post := func(contentType, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/auth/backchannel-logout", strings.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		return r
	}
	tests := []struct {
		name       string
		req        *http.Request
		wantStatus int
	}{
		{"GET", httptest.NewRequest(http.MethodGet, "/auth/backchannel-logout", nil), http.StatusMethodNotAllowed},
		{"JSON body", post("application/json", `{"logout_token":"x"}`), http.StatusBadRequest},
		{"no content type", post("", "logout_token=x"), http.StatusBadRequest},
		{"multipart", post("multipart/form-data; boundary=x", "--x--"), http.StatusBadRequest},
		{"body over 64 KB", post("application/x-www-form-urlencoded", "logout_token="+strings.Repeat("a", 65<<10)), http.StatusBadRequest},
		{"no logout_token", post("application/x-www-form-urlencoded", "other=1"), http.StatusBadRequest},
		{"empty logout_token", post("application/x-www-form-urlencoded", "logout_token="), http.StatusBadRequest},
		{"two logout_tokens", post("application/x-www-form-urlencoded; charset=utf-8", "logout_token=a&logout_token=b"), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, next := serve(t, m, tt.req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if next.called {
				t.Error("next handler called")
			}
			body := jsonBody(t, rec)
			if body["error"] == "" {
				t.Errorf("no error code in %v", body)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("answer is cacheable")
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != "POST" {
				t.Errorf("Allow = %q", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestFrontchannelLogout(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) { m.FrontchannelLogoutPath = "/auth/frontchannel-logout" })
	now := time.Now()
	s := unitSession(now)
	other := unitSession(now)
	other.SID = "another-idp-session"
	m.tokens.recordSID(t.Context(), s.SID)
	m.tokens.recordSID(t.Context(), other.SID)

	for _, bad := range []string{
		"/auth/frontchannel-logout?sid=" + s.SID,
		"/auth/frontchannel-logout?iss=" + url.QueryEscape("https://evil.example.com") + "&sid=" + s.SID,
		"/auth/frontchannel-logout?iss=" + url.QueryEscape(unreachableIssuer),
	} {
		rec, _ := serve(t, m, navRequest(http.MethodGet, bad))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", bad, rec.Code)
		}
	}
	if m.app.revoked(s) {
		t.Fatal("session revoked by a refused request")
	}

	rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/frontchannel-logout?iss="+url.QueryEscape(unreachableIssuer)+"&sid="+s.SID))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", rec.Code)
	}
	if !m.app.revoked(s) {
		t.Error("session with the sid not revoked")
	}
	if m.app.revoked(other) {
		t.Error("session with another sid revoked")
	}
}

func TestBadSessionCookies(t *testing.T) {
	m := newUnitHandler(t, nil)
	now := time.Now()
	base := apiRequest(http.MethodGet, "/api")
	name := m.cookies.SessionCookieName(base)

	good := httptest.NewRecorder()
	s := unitSession(now)
	s.RefreshToken = cookietest.Value(10 << 10) // three chunks
	if err := m.cookies.WriteSession(good, base, s, 3600); err != nil {
		t.Fatal(err)
	}
	goodCookies := good.Result().Cookies()
	flipped := []byte(goodCookies[1].Value)
	orig := flipped[100]
	flipped[100] ^= 0x01
	if flipped[100] == '-' || flipped[100] == '_' || !isBase64URL(flipped[100]) {
		flipped[100] = 'A'
	}
	if flipped[100] == orig { // the fallback must still be a change
		flipped[100] = 'B'
	}

	other, err := cookie.New([]byte(testCookieSecret), m.Issuer, "other-app", m.CookieName)
	if err != nil {
		t.Fatal(err)
	}
	foreign := httptest.NewRecorder()
	if err := other.WriteSession(foreign, base, unitSession(now), 3600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		cookies []*http.Cookie
	}{
		{"garbage", []*http.Cookie{{Name: name, Value: "garbage"}}},
		{"empty", []*http.Cookie{{Name: name, Value: ""}}},
		{"huge", []*http.Cookie{{Name: name, Value: strings.Repeat("A", 64<<10)}}},
		{"huge chunked", append([]*http.Cookie{{Name: name, Value: "8." + strings.Repeat("A", 4000)}}, chunks(name, 7, strings.Repeat("B", 4000))...)},
		{"chunk count out of range", []*http.Cookie{{Name: name, Value: "1000000.AAAA"}}},
		{"negative chunk count", []*http.Cookie{{Name: name, Value: "-3.AAAA"}}},
		{"missing chunks", []*http.Cookie{goodCookies[0]}},
		{"bit flipped", []*http.Cookie{goodCookies[0], {Name: goodCookies[1].Name, Value: string(flipped)}, goodCookies[2]}},
		{"chunks swapped", []*http.Cookie{goodCookies[0], {Name: goodCookies[1].Name, Value: goodCookies[2].Value}, {Name: goodCookies[2].Name, Value: goodCookies[1].Value}}},
		{"another app's session", foreign.Result().Cookies()},
		{"binary", []*http.Cookie{{Name: name, Value: "\x00\xff\xfe"}}},
	}
	want, _ := serve(t, m, apiRequest(http.MethodGet, "/api"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := apiRequest(http.MethodGet, "/api")
			var parts []string
			for _, c := range tt.cookies {
				parts = append(parts, c.Name+"="+c.Value)
			}
			r.Header.Set("Cookie", strings.Join(parts, "; "))
			rec, next := serve(t, m, r)
			if next.called {
				t.Fatal("next handler called")
			}
			if rec.Code != want.Code || rec.Body.String() != want.Body.String() {
				t.Errorf("got %d %q, want the same answer as without a cookie: %d %q", rec.Code, rec.Body, want.Code, want.Body)
			}
		})
	}
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func chunks(name string, n int, value string) []*http.Cookie {
	var out []*http.Cookie
	for i := 1; i <= n; i++ {
		out = append(out, &http.Cookie{Name: name + "_" + strconv.Itoa(i), Value: value})
	}
	return out
}

func TestValidSession(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		name := "http"
		if tlsOn {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			m := newUnitHandler(t, func(m *OIDCAuth) {
				m.Require = []Rule{{Claim: "email", Values: []string{"*@example.com"}}, {Claim: "groups", Values: []string{"dev"}}}
			})
			r := navRequest(http.MethodGet, "/app")
			if tlsOn {
				r.TLS = &tls.ConnectionState{}
			}
			for _, h := range []string{"X-Auth-User", "X-Auth-Email", "Remote-User", "X-Forwarded-User", "X-Oidc-Sub"} {
				r.Header.Set(h, "admin")
			}
			r.Header["x_auth_user"] = []string{"admin"}
			r.Header.Set("Authorization", "Bearer keep-me")
			s := unitSession(time.Now())
			addSession(t, m, r, s)

			rec, next := serve(t, m, r)
			if !next.called || rec.Code != http.StatusTeapot {
				t.Fatalf("status %d, next called %v: %s", rec.Code, next.called, rec.Body)
			}
			repl := next.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			for k, want := range map[string]string{
				"{http.auth.user.id}":     "user-42",
				"{http.auth.user.email}":  "user42@example.com",
				"{http.auth.user.name}":   "User 42",
				"{http.auth.user.groups}": "staff,dev",
				"{http.auth.user.sid}":    "idp-session-1",
			} {
				if got := repl.ReplaceAll(k, "<unset>"); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			for name := range next.req.Header {
				if n := strings.ToLower(name); strings.Contains(n, "auth-user") || strings.Contains(n, "auth_user") ||
					strings.Contains(n, "remote-user") || strings.Contains(n, "forwarded-user") || strings.HasPrefix(n, "x-oidc") || n == "x-auth-email" {
					t.Errorf("client-sent identity header %s reached the next handler", name)
				}
			}
			if next.req.Header.Get("Authorization") != "Bearer keep-me" {
				t.Error("Authorization header removed")
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Errorf("cookies set on a plain authenticated request: %v", rec.Header()["Set-Cookie"])
			}
		})
	}
}

func TestSessionEnded(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		config func(*OIDCAuth)
		prep   func(m *OIDCAuth, s *session)
	}{
		{"revoked session", nil, func(m *OIDCAuth, s *session) {
			_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSession, Value: s.ID, Until: time.Now().Add(time.Hour).Unix()})
		}},
		{"revoked IdP session", nil, func(m *OIDCAuth, s *session) {
			_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSID, Value: s.SID, Until: time.Now().Add(time.Hour).Unix()})
		}},
		{"revoked user", nil, func(m *OIDCAuth, s *session) {
			_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSubject, Value: s.Subject, At: time.Now().Unix(), Until: time.Now().Add(time.Hour).Unix()})
		}},
		{"past session_lifetime", func(m *OIDCAuth) { m.SessionLifetime = caddy.Duration(time.Hour) }, func(_ *OIDCAuth, s *session) {
			s.Created = time.Now().Add(-time.Hour - time.Second).Unix()
		}},
		{"past the default session_lifetime", nil, func(_ *OIDCAuth, s *session) {
			s.Created = time.Now().Add(-25 * time.Hour).Unix()
		}},
		{"access token expired, no refresh token", nil, func(_ *OIDCAuth, s *session) {
			s.Expiry = time.Now().Add(-time.Second).Unix()
			s.RefreshAt = s.Expiry - 30
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newUnitHandler(t, tt.config)
			s := unitSession(time.Now())
			tt.prep(m, s)
			r := apiRequest(http.MethodGet, "/api")
			addSession(t, m, r, s)
			rec, next := serve(t, m, r)
			if rec.Code != http.StatusUnauthorized || next.called {
				t.Fatalf("status %d, next called %v; want 401", rec.Code, next.called)
			}
			if c := cookietest.SetCookies(rec)[m.cookies.SessionCookieName(r)]; c == nil || c.MaxAge >= 0 {
				t.Errorf("cookie of the ended session not cleared: %+v", c)
			}
		})
	}

	t.Run("revocation of another session", func(t *testing.T) {
		m := newUnitHandler(t, nil)
		s := unitSession(time.Now())
		_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSession, Value: "someone-else", Until: time.Now().Add(time.Hour).Unix()})
		_ = m.app.store.Revoke(ctx, store.Revocation{Kind: store.RevokeSubject, Value: s.Subject, At: time.Now().Add(-time.Hour).Unix(), Until: time.Now().Add(time.Hour).Unix()})
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		if rec, next := serve(t, m, r); !next.called {
			t.Errorf("status %d; a session begun after its user's revocation was refused", rec.Code)
		}
	})
}

func TestRefreshWhileIdPDown(t *testing.T) {
	m := newUnitHandler(t, nil)
	now := time.Now()

	t.Run("token still valid: request goes on", func(t *testing.T) {
		s := unitSession(now)
		s.RefreshToken = "rt-1"
		s.RefreshAt = now.Add(-time.Second).Unix()
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		rec, next := serve(t, m, r)
		if !next.called {
			t.Errorf("status %d: refresh failure ended a session whose token still works", rec.Code)
		}
	})
	t.Run("token expired: 503, session kept", func(t *testing.T) {
		s := unitSession(now)
		s.RefreshToken = "rt-2"
		s.Expiry = now.Add(-time.Second).Unix()
		s.RefreshAt = s.Expiry - 30
		r := navRequest(http.MethodGet, "/page")
		addSession(t, m, r, s)
		rec, next := serve(t, m, r)
		if rec.Code != http.StatusServiceUnavailable || next.called {
			t.Errorf("status %d, next called %v; want 503", rec.Code, next.called)
		}
		if c := cookietest.SetCookies(rec)[m.cookies.SessionCookieName(r)]; c != nil {
			t.Errorf("session cookie changed: %+v", c)
		}
	})
}

func TestRequireForbidden(t *testing.T) {
	m := newUnitHandler(t, func(m *OIDCAuth) {
		m.Require = []Rule{
			{Claim: "email", Values: []string{"*@example.com"}},
			{Claim: "groups", Values: []string{"admins"}},
		}
	})
	for _, r := range []*http.Request{navRequest(http.MethodGet, "/admin"), apiRequest(http.MethodGet, "/api/admin")} {
		s := unitSession(time.Now())
		addSession(t, m, r, s)
		rec, next := serve(t, m, r)
		if rec.Code != http.StatusForbidden || next.called {
			t.Errorf("%s: status %d, next called %v; want 403", r.URL, rec.Code, next.called)
		}
		if rec.Header().Get("Location") != "" {
			t.Error("403 with a redirect")
		}
		if c := cookietest.SetCookies(rec)[m.cookies.SessionCookieName(r)]; c != nil {
			t.Errorf("session cookie touched: %+v", c)
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") && !strings.Contains(rec.Body.String(), `href="/auth/logout"`) {
			t.Errorf("403 page without a sign-out link: %s", rec.Body)
		}
	}
}

func TestIsAPIRequest(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    bool
	}{
		{"browser navigation", []string{"Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html,*/*"}, false},
		{"navigate mode alone", []string{"Sec-Fetch-Mode", "navigate"}, false},
		{"navigate with JSON Accept", []string{"Sec-Fetch-Mode", "navigate", "Accept", "application/json"}, false},
		{"fetch cors", []string{"Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty", "Accept", "text/html"}, true},
		{"fetch same-origin", []string{"Sec-Fetch-Mode", "same-origin", "Accept", "*/*"}, true},
		{"no-cors image", []string{"Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "image"}, true},
		{"dest document alone", []string{"Sec-Fetch-Dest", "document"}, false},
		{"dest iframe", []string{"Sec-Fetch-Dest", "iframe"}, false},
		{"dest empty", []string{"Sec-Fetch-Dest", "empty", "Accept", "text/html"}, true},
		{"Accept text/html", []string{"Accept", "text/html,application/xhtml+xml"}, false},
		{"Accept JSON", []string{"Accept", "application/json"}, true},
		{"Accept */*", []string{"Accept", "*/*"}, true},
		{"no headers", nil, true},
		{"X-Requested-With", []string{"X-Requested-With", "XMLHttpRequest", "Accept", "text/html"}, true},
		{"X-Requested-With on a navigation", []string{"X-Requested-With", "XMLHttpRequest", "Sec-Fetch-Mode", "navigate"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodGet, "/", tt.headers...)
			if got := isAPIRequest(r); got != tt.want {
				t.Errorf("isAPIRequest(%v) = %v, want %v", tt.headers, got, tt.want)
			}
		})
	}
}

func TestSafeReturnTo(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"/", true},
		{"/a?b=c", true},
		{"/a#x", true},
		{"/a/b/c?d=e&f=g#h", true},
		{"/?next=//evil.com", true}, // only the path counts
		{"/@evil.com", true},        // a path on this site
		{"/%09/evil.com", true},     // browsers keep %09 encoded: a path here
		{"/%2e%2e/x", true},         // a path; the browser resolves it on this site
		{"/" + strings.Repeat("a", maxReturnToLen-1), true},
		{"", false},
		{"//evil.com", false},
		{"///evil.com", false},
		{`/\evil.com`, false},
		{`/a\b`, false},          // any backslash
		{"/%5Cevil", false},      // decoded "/\evil": refused though browsers keep %5C encoded
		{"/%2F/evil.com", false}, // decoded "//evil.com"
		{"/%2fevil.com", false},  // decoded "//evil.com"
		{"https://evil.com", false},
		{"http://evil.com/", false},
		{"javascript:alert(1)", false},
		{"/\t/evil.com", false}, // browsers drop the tab: "//evil.com"
		{"/\n/evil.com", false},
		{"/a\r\nSet-Cookie: x=y", false},
		{"/a\x00", false},
		{"/a\x7f", false},
		{"@evil.com", false},
		{"evil", false},
		{"evil.com/path", false},
		{"./x", false},
		{" /x", false},
		{"/" + strings.Repeat("a", maxReturnToLen), false},
	}
	for _, tt := range tests {
		t.Run(strings.ToValidUTF8(tt.in[:min(len(tt.in), 40)], "?"), func(t *testing.T) {
			got, ok := safeReturnTo(tt.in)
			if ok != tt.want {
				t.Fatalf("safeReturnTo(%q) ok = %v, want %v", tt.in, ok, tt.want)
			}
			if ok && got != tt.in {
				t.Errorf("safeReturnTo(%q) = %q, want it unchanged", tt.in, got)
			}
			if !ok && got != "" {
				t.Errorf("refused value returned as %q", got)
			}
		})
	}
}

func FuzzSafeReturnTo(f *testing.F) {
	for _, s := range []string{
		"/", "/a?b=c", "/a#x", "//evil.com", `/\evil.com`, "/%5Cevil", "/%2F/evil",
		"https://evil.com", "javascript:alert(1)", "/\t/evil", "/%09/evil.com", "/a\r\nb",
		"@evil.com", "evil", "/..//evil.com", "/.//evil.com", "/a/../\\evil",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := safeReturnTo(raw)
		if !ok {
			if got != "" {
				t.Fatalf("refused %q but returned %q", raw, got)
			}
			return
		}
		if got != raw {
			t.Fatalf("safeReturnTo(%q) changed it to %q", raw, got)
		}
		if len(got) > maxReturnToLen || !strings.HasPrefix(got, "/") {
			t.Fatalf("accepted %q", got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
			t.Fatalf("accepted %q, which parses as %#v (%v)", got, u, err)
		}
		// Browsers drop tabs and newlines from URLs and read '\' as '/'.
		browser := strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(got)
		if len(browser) > 1 && (browser[1] == '/' || browser[1] == '\\') {
			t.Fatalf("accepted %q, which a browser reads as another origin", got)
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("accepted %q with a control character", got)
			}
		}
		// Resolved against this site, it stays on this site.
		base, _ := url.Parse("https://app.example.com/some/page")
		if res := base.ResolveReference(u); res.Host != "app.example.com" || res.Scheme != "https" {
			t.Fatalf("accepted %q, which resolves to %v", got, res)
		}
	})
}

func TestStripIdentityHeaders(t *testing.T) {
	for _, p := range identityHeaderPrefixes {
		if p[0] != 'x' && p[0] != 'r' {
			t.Errorf("prefix %q would pass stripIdentityHeaders's first-byte filter", p)
		}
	}
	h := http.Header{}
	strip := []string{
		"X-Auth-User", "X-AUTH-EMAIL", "x-auth-request-user", "X-Forwarded-User", "X-Forwarded-Email",
		"X-Forwarded-Preferred-Username", "X-Forwarded-Groups", "Remote-User", "X-Remote-User",
		"X-Oidc-Foo", "X-OIDC-Access-Token", "X-User", "X-Email",
	}
	for _, name := range strip {
		h.Set(name, "forged")
	}
	// Non-canonical keys, as some proxies and CGI pass them on.
	for _, name := range []string{"x_auth_user", "X_Forwarded_User", "remote_user", "x-oidc-bar"} {
		h[name] = []string{"forged"}
		strip = append(strip, name)
	}
	keep := []string{"Authorization", "Accept", "Cookie", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "X-Authorization", "User-Agent"}
	for _, name := range keep {
		h.Set(name, "kept")
	}
	stripIdentityHeaders(h)
	for _, name := range strip {
		if _, ok := h[name]; ok {
			t.Errorf("%s not removed", name)
		}
		if _, ok := h[http.CanonicalHeaderKey(name)]; ok {
			t.Errorf("%s not removed", http.CanonicalHeaderKey(name))
		}
	}
	for _, name := range keep {
		if h.Get(name) != "kept" {
			t.Errorf("%s removed", name)
		}
	}
}

// Some providers (Auth0, for one) have an issuer ending in '/'; discovery
// and token checks compare it exactly, so it must be kept as configured.
func TestIssuerWithTrailingSlash(t *testing.T) {
	op := oidctest.New(t, nil)
	issuer := op.URL + "/"
	op.Issuer = issuer

	m := newUnitHandler(t, func(m *OIDCAuth) { m.Issuer = issuer })
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/page"))
	if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), issuer+"authorize?") {
		t.Errorf("status %d, Location %q; want a redirect to the discovered authorize endpoint", rec.Code, rec.Header().Get("Location"))
	}
	if m.Issuer != issuer {
		t.Errorf("Issuer = %q, want %q as configured", m.Issuer, issuer)
	}
}

func TestOldKeySessionRewritten(t *testing.T) {
	const oldSecret = "fedcba9876543210fedcba9876543210"
	m := newUnitHandler(t, func(m *OIDCAuth) { m.PreviousCookieSecrets = []string{oldSecret} })
	var err error
	if m.cookies, err = cookie.New([]byte(m.CookieSecret), m.Issuer, m.ClientID, m.CookieName, []byte(oldSecret)); err != nil {
		t.Fatal(err)
	}
	oldCodec, err := cookie.New([]byte(oldSecret), m.Issuer, m.ClientID, m.CookieName)
	if err != nil {
		t.Fatal(err)
	}
	r := apiRequest(http.MethodGet, "/api")
	w := httptest.NewRecorder()
	if err := oldCodec.WriteSession(w, r, unitSession(time.Now()), 3600); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.Result().Cookies() {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	rec, next := serve(t, m, r)
	if !next.called {
		t.Fatalf("status %d: old-key session refused during a rotation", rec.Code)
	}
	c := sessionCookieSet(m, rec, r)
	if c == nil {
		t.Fatal("old-key session not rewritten")
	}
	current, err := cookie.New([]byte(m.CookieSecret), m.Issuer, m.ClientID, m.CookieName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := current.Open(cookie.PurposeSession, c.Value); err != nil {
		t.Errorf("rewritten session is not sealed with the current secret: %v", err)
	}
}

// A login that completes but does not hold (here: the browser keeps the
// loop cookie but never sends a session) is stopped with an error page on
// the third round trip, instead of circling through the IdP forever.
func TestLoginLoopGuard(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	loop := m.cookies.Name() + "_lg"

	// Without a completed login, logins start as often as asked: parallel
	// tabs each begin one.
	for i := range 5 {
		rec, _ := serve(t, m, navRequest(http.MethodGet, "/page"))
		if rec.Code != http.StatusFound {
			t.Fatalf("login %d without a recent completed one: status %d, want 302", i+1, rec.Code)
		}
	}

	// A completed login leaves the count at 0 (markLogin, as the callback does).
	rec := httptest.NewRecorder()
	m.cookies.MarkLogin(rec, navRequest(http.MethodGet, "/auth/callback"))
	count := ""
	for _, c := range rec.Result().Cookies() {
		if c.Name == loop {
			count = c.Value
		}
	}
	if count != "0" {
		t.Fatalf("after a completed login the loop count is %q, want 0", count)
	}
	for round := 1; round <= cookie.MaxLoginLoop; round++ {
		r := navRequest(http.MethodGet, "/page")
		r.AddCookie(&http.Cookie{Name: loop, Value: count})
		rec, next := serve(t, m, r)
		if next.called {
			t.Fatal("a request without a session reached next")
		}
		if round < cookie.MaxLoginLoop {
			if rec.Code != http.StatusFound {
				t.Fatalf("round %d: status %d, want 302 to the IdP", round, rec.Code)
			}
			for _, c := range rec.Result().Cookies() {
				if c.Name == loop {
					count = c.Value
				}
			}
			continue
		}
		if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "Sign-in keeps failing") {
			t.Fatalf("round %d: status %d body %q, want the loop page", round, rec.Code, rec.Body.String())
		}
		if loc := rec.Header().Get("Location"); loc != "" {
			t.Errorf("the loop page redirects to %q", loc)
		}
	}
}
