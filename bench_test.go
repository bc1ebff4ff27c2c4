package oidcauth

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
)

// benchHandler is a handler whose provider is already discovered and
// whose JWKS holds one RSA key, so no benchmark touches the network.
type benchHandler struct {
	m   *OIDCAuth
	key *oidctest.Key
}

func newBenchHandler(b testing.TB) *benchHandler {
	b.Helper()
	m := &OIDCAuth{
		Issuer:       "https://idp.example.com",
		ClientID:     "bench-app",
		ClientSecret: "bench-secret",
		CookieSecret: strings.Repeat("s", 32),
	}
	key := oidctest.NewRSAKey("k1", 0)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.Public()}})
	if err != nil {
		b.Fatal(err)
	}
	// Endpoints configured, so no discovery; the JWKS is fetched once,
	// from memory, before the first timed verification.
	overrides := endpoints{Authorization: m.Issuer + "/authorize", Token: m.Issuer + "/token", JWKS: m.Issuer + "/keys"}
	p := &provider{Provider: oidc.NewProvider(oidc.Config{
		Issuer: m.Issuer, Overrides: overrides, Transport: staticTransport{overrides.JWKS: jwks},
	})}
	b.Cleanup(func() { _ = p.Destruct() })
	provisionForTest(b, m, p, b.TempDir(), nil)
	return &benchHandler{m: m, key: key}
}

// accessToken signs a Scalekit-shaped access token for sub.
func (h *benchHandler) accessToken(b testing.TB, sub string) string {
	now := time.Now()
	claims := map[string]any{
		"iss": h.m.Issuer, "aud": []string{h.m.ClientID}, "sub": sub, "sid": "ses_" + sub,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": randomString(8),
		"oid": "org_1", "roles": []string{"admin"}, "permissions": []string{"read", "write"},
	}
	return h.key.Sign(claims, "")
}

func (h *benchHandler) session(b testing.TB) *session {
	now := time.Now()
	idClaims, _ := json.Marshal(map[string]any{"sub": "usr_1", "email": "alice@example.com", "name": "Alice Example", "sid": "ses_usr_1"})
	return &session{
		ID: randomString(16), Subject: "usr_1", SID: "ses_usr_1", Created: now.Unix(),
		AccessToken: h.accessToken(b, "usr_1"), RefreshToken: randomString(32),
		Expiry: now.Add(time.Hour).Unix(), RefreshAt: now.Add(59 * time.Minute).Unix(), Claims: idClaims,
	}
}

// BenchmarkRequestWithSession is the hot path: an authenticated request
// whose access token was verified before. It decrypts the session cookie,
// checks lifetime and revocation, finds the verified token in the cache
// and sets the placeholders. "bare" carries only the cookie, "browser" also
// the headers a browser sends when it opens a page.
func BenchmarkRequestWithSession(b *testing.B) {
	b.Run("bare", func(b *testing.B) { benchRequestWithSession(b, nil) })
	b.Run("browser", func(b *testing.B) { benchRequestWithSession(b, browserHeaders) })
}

// browserHeaders are what Chromium sends when it opens a page, less the
// cookies (as bench/run.sh BENCH_HEADERS=browser sends them).
var browserHeaders = http.Header{
	"Sec-Ch-Ua":                 {`"Chromium";v="131", "Not_A Brand";v="24"`},
	"Sec-Ch-Ua-Mobile":          {"?0"},
	"Sec-Ch-Ua-Platform":        {`"Linux"`},
	"Upgrade-Insecure-Requests": {"1"},
	"User-Agent":                {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
	"Accept":                    {"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"},
	"Sec-Fetch-Site":            {"same-origin"},
	"Sec-Fetch-Mode":            {"navigate"},
	"Sec-Fetch-User":            {"?1"},
	"Sec-Fetch-Dest":            {"document"},
	"Accept-Encoding":           {"gzip, deflate, br, zstd"},
	"Accept-Language":           {"en-US,en;q=0.9"},
}

func benchRequestWithSession(b *testing.B, extra http.Header) {
	h := newBenchHandler(b)
	s := h.session(b)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/index.html", nil)
	if err := h.m.cookies.WriteSession(rec, req, s, 3600); err != nil {
		b.Fatal(err)
	}
	cookieHeader := ""
	for _, c := range rec.Result().Cookies() {
		cookieHeader = c.Name + "=" + c.Value
	}
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	repl := caddy.NewReplacer()
	req = httptest.NewRequest(http.MethodGet, "/index.html", nil)
	for k, v := range extra {
		req.Header[k] = v
	}
	req.Header.Set("Cookie", cookieHeader)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	if err := h.m.ServeHTTP(w, req, next); err != nil || w.Code != http.StatusOK {
		b.Fatalf("warm-up request: %v, status %d", err, w.Code)
	}
	if v, _ := repl.GetString("http.auth.user.email"); v != "alice@example.com" {
		b.Fatalf("placeholder email = %q", v)
	}
	// The handler removes its own cookies before next: every request
	// brings them again, as in a server.
	cookies := []string{cookieHeader}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Header["Cookie"] = cookies
		if err := h.m.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
	if w.Code != http.StatusOK {
		b.Fatalf("status %d", w.Code)
	}
}

// BenchmarkReadRequestCookie is a control, not the module: what net/http
// spends reading a request line and its headers (http.ReadRequest, as its
// server does for every request) without a Cookie header and with this
// module's session cookie, before any handler runs. It reports the cookie
// header's size as cookie-B.
func BenchmarkReadRequestCookie(b *testing.B) {
	h := newBenchHandler(b)
	rec := httptest.NewRecorder()
	if err := h.m.cookies.WriteSession(rec, httptest.NewRequest(http.MethodGet, "/", nil), h.session(b), 3600); err != nil {
		b.Fatal(err)
	}
	cookieHeader := ""
	for _, c := range rec.Result().Cookies() {
		cookieHeader = c.Name + "=" + c.Value
	}
	for _, tc := range []struct{ name, cookie string }{{"none", ""}, {"session", cookieHeader}} {
		b.Run(tc.name, func(b *testing.B) {
			raw := "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
			if tc.cookie != "" {
				raw += "Cookie: " + tc.cookie + "\r\n"
			}
			raw += "\r\n"
			src := strings.NewReader(raw)
			br := bufio.NewReader(src)
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(raw)
				br.Reset(src)
				if _, err := http.ReadRequest(br); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(tc.cookie)), "cookie-B")
		})
	}
}

// BenchmarkVerifyAccessTokenFirstTime is the work done once per access
// token and instance: RS256 signature, claims and the identity.
func BenchmarkVerifyAccessTokenFirstTime(b *testing.B) {
	h := newBenchHandler(b)
	s := h.session(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v, err := h.m.tokens.verifyAccessToken(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		_ = v.identityFor(s)
		h.m.app.verified.mu.Lock()
		delete(h.m.app.verified.entries, s.AccessToken)
		h.m.app.verified.mu.Unlock()
	}
}

// TestRequestWithSessionAllocations: the hot path of a session seen
// before allocates only the principal and the response wrapper. The
// session cookie is not parsed by net/http, and the identity's
// placeholder provider is made once per identity, not per request.
func TestRequestWithSessionAllocations(t *testing.T) {
	h := newBenchHandler(t)
	s := h.session(t)
	rec := httptest.NewRecorder()
	if err := h.m.cookies.WriteSession(rec, httptest.NewRequest(http.MethodGet, "/", nil), s, 3600); err != nil {
		t.Fatal(err)
	}
	// Only the session cookie, as the benchmark harness's browser sends:
	// removing it from the request allocates nothing then.
	cookieHeader := ""
	for _, c := range rec.Result().Cookies() {
		cookieHeader = c.Name + "=" + c.Value
	}
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	repl := caddy.NewReplacer()
	req := httptest.NewRequest(http.MethodGet, "/index.html", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	cookies := []string{cookieHeader}
	serve := func() {
		req.Header["Cookie"] = cookies
		if err := h.m.ServeHTTP(w, req, next); err != nil {
			t.Fatal(err)
		}
	}
	serve()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	// The replacer is shared by the runs, so its list of providers grows
	// now and then: a fraction of an allocation per run.
	if allocs := testing.AllocsPerRun(200, serve); allocs > 2 {
		t.Errorf("%v allocations per request with a session, want at most 2", allocs)
	}
	if got, ok := req.Header["Cookie"]; ok {
		t.Errorf("Cookie upstream = %q, want none", got)
	}
}
