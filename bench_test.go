package oidcauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// benchHandler is a handler whose provider is already discovered and
// whose JWKS holds one RSA key, so no benchmark touches the network.
type benchHandler struct {
	m      *OIDCAuth
	signer jose.Signer
}

func newBenchHandler(b *testing.B) *benchHandler {
	b.Helper()
	m := &OIDCAuth{
		Issuer:       "https://idp.example.com",
		ClientID:     "bench-app",
		ClientSecret: "bench-secret",
		CookieSecret: strings.Repeat("s", 32),
	}
	if err := m.configure(); err != nil {
		b.Fatal(err)
	}
	m.CookieName = defaultCookieName(m.Issuer, m.ClientID)
	var err error
	if m.cookies, err = cookie.New([]byte(m.CookieSecret), m.Issuer, m.ClientID, m.CookieName); err != nil {
		b.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		b.Fatal(err)
	}
	// Endpoints configured, so no discovery; the JWKS is fetched once,
	// from memory, before the first timed verification.
	overrides := endpoints{Authorization: m.Issuer + "/authorize", Token: m.Issuer + "/token", JWKS: m.Issuer + "/keys"}
	m.provider = &provider{Provider: oidc.NewProvider(oidc.Config{
		Issuer: m.Issuer, Overrides: overrides, Transport: staticTransport{overrides.JWKS: jwks},
	})}
	b.Cleanup(func() { _ = m.provider.Destruct() })
	m.logger = zap.NewNop()
	m.now = time.Now
	m.app = newAppState("bench", newTestStore(b, "bench", b.TempDir(), nil))
	m.wire()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &benchHandler{m: m, signer: signer}
}

// accessToken signs a Scalekit-shaped access token for sub.
func (h *benchHandler) accessToken(b *testing.B, sub string) string {
	now := time.Now()
	claims := map[string]any{
		"iss": h.m.Issuer, "aud": []string{h.m.ClientID}, "sub": sub, "sid": "ses_" + sub,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": randomString(8),
		"oid": "org_1", "roles": []string{"admin"}, "permissions": []string{"read", "write"},
	}
	payload, _ := json.Marshal(claims)
	jws, err := h.signer.Sign(payload)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

func (h *benchHandler) session(b *testing.B) *session {
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
// and sets the placeholders.
func BenchmarkRequestWithSession(b *testing.B) {
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
