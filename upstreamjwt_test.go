package oidcauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/assert"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func testECKeyPEM(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// withUpstreamJWT turns upstream_jwt on for a unit handler, with an
// operator's key (no storage needed).
func withUpstreamJWT(t testing.TB, u *UpstreamJWT) func(*OIDCAuth) {
	if u.SigningKey == "" {
		u.SigningKey = testECKeyPEM(t)
	}
	return func(m *OIDCAuth) { m.UpstreamJWT = u }
}

// startUpstreamJWT does what Provision does for upstream_jwt with an
// operator's key.
func startUpstreamJWT(t testing.TB, m *OIDCAuth) {
	t.Helper()
	ring, err := assert.NewStatic(m.ujwt.signing, m.ujwt.publish...)
	if err != nil {
		t.Fatal(err)
	}
	m.ujwt.ring, m.ujwt.cache = ring, assert.NewCache(maxCachedAssertions)
}

// fetchJWKS gets the handler's JWKS as an upstream would.
func fetchJWKS(t *testing.T, m *OIDCAuth) jose.JSONWebKeySet {
	t.Helper()
	rec, next := serve(t, m, newRequest(http.MethodGet, m.JWKSPath))
	if next.called || rec.Code != http.StatusOK {
		t.Fatalf("GET %s: status %d, next called %v", m.JWKSPath, rec.Code, next.called)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatalf("JWKS: %v: %s", err, rec.Body)
	}
	return set
}

// verifyAssertion checks tok as an upstream would: ES256 against the
// JWKS, aud, exp.
func verifyAssertion(t *testing.T, set jose.JSONWebKeySet, tok, aud string) map[string]any {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("assertion %q: %v", tok, err)
	}
	var std jwt.Claims
	var all map[string]any
	if err := parsed.Claims(set, &std, &all); err != nil {
		t.Fatalf("assertion signature: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: time.Now()}, 0); err != nil {
		t.Fatalf("assertion claims: %v", err)
	}
	return all
}

func TestUpstreamJWTPassed(t *testing.T) {
	for _, tc := range []struct {
		name, header, aud, wantAud string
		forged                     []string
	}{
		{"defaults", "", "", "http://example.com", []string{"X-Auth-Assertion", "x_auth_assertion", "x-AUTH-assertion"}},
		{"own header and audience", "X-Identity", "https://orders.internal", "https://orders.internal", []string{"X-Identity", "x_identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newUnitHandler(t, withUpstreamJWT(t, &UpstreamJWT{Header: tc.header, Audience: tc.aud}))
			startUpstreamJWT(t, m)
			header := m.UpstreamJWT.Header
			s := unitSession(time.Now())
			send := func() (*http.Request, string) {
				r := apiRequest(http.MethodGet, "/app")
				for _, h := range tc.forged {
					r.Header[h] = []string{"forged.assertion.value"}
				}
				addSession(t, m, r, s)
				rec, next := serve(t, m, r)
				if !next.called || rec.Code != http.StatusTeapot {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				var got []string
				for name, vals := range next.req.Header {
					if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), header) {
						got = append(got, vals...)
					}
				}
				if len(got) != 1 || got[0] == "forged.assertion.value" {
					t.Fatalf("the next handler got %s = %q, want only the handler's assertion", header, got)
				}
				return next.req, got[0]
			}
			req, tok := send()
			claims := verifyAssertion(t, fetchJWKS(t, m), tok, tc.wantAud)
			for k, want := range map[string]any{
				"iss": "http://example.com", "sub": "user-42", "email": "user42@example.com",
				"name": "User 42", "sid": "idp-session-1",
			} {
				if claims[k] != want {
					t.Errorf("claim %s = %v, want %v", k, claims[k], want)
				}
			}
			if _, ok := claims["groups"]; ok {
				t.Error("a claim that is not in claims was copied")
			}
			if life := claims["exp"].(float64) - claims["iat"].(float64); life != 60 {
				t.Errorf("lifetime %v s, want 60", life)
			}
			if claims["jti"] == "" || claims["jti"] == nil {
				t.Error("no jti")
			}
			repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			if got := repl.ReplaceAll("{http.auth.user.jwt}", ""); got != tok {
				t.Errorf("{http.auth.user.jwt} = %q, want the assertion", got)
			}
			// The next request of the session reuses it.
			if _, again := send(); again != tok {
				t.Error("the assertion was signed again within its lifetime")
			}
		})
	}
}

// TestUpstreamJWTClaims: claims picks what is copied; arrays stay arrays;
// a bearer request gets an assertion too.
func TestUpstreamJWTClaims(t *testing.T) {
	m := newUnitHandler(t, withUpstreamJWT(t, &UpstreamJWT{Claims: []string{"sub", "groups", "missing"}, Lifetime: caddy.Duration(30 * time.Second)}))
	startUpstreamJWT(t, m)
	r := apiRequest(http.MethodGet, "/app")
	addSession(t, m, r, unitSession(time.Now()))
	_, next := serve(t, m, r)
	claims := verifyAssertion(t, fetchJWKS(t, m), next.req.Header.Get("X-Auth-Assertion"), "http://example.com")
	if g, _ := claims["groups"].([]any); len(g) != 2 || g[0] != "staff" {
		t.Errorf("groups = %v, want the array", claims["groups"])
	}
	if _, ok := claims["email"]; ok {
		t.Error("email copied though not listed")
	}
	if _, ok := claims["missing"]; ok {
		t.Error("an absent claim appeared")
	}
	if claims["sid"] != "idp-session-1" {
		t.Errorf("sid is always set: %v", claims["sid"])
	}
	if life := claims["exp"].(float64) - claims["iat"].(float64); life != 30 {
		t.Errorf("lifetime %v s, want 30", life)
	}
}

// TestUpstreamJWTNotAfterSessionEnd: an assertion never outlives the
// session it speaks for.
func TestUpstreamJWTNotAfterSessionEnd(t *testing.T) {
	m := newUnitHandler(t, withUpstreamJWT(t, &UpstreamJWT{}))
	startUpstreamJWT(t, m)
	m.sessionLifetime = time.Hour
	r := apiRequest(http.MethodGet, "/app")
	s := unitSession(time.Now())
	s.Created = time.Now().Add(-time.Hour + 20*time.Second).Unix()
	addSession(t, m, r, s)
	_, next := serve(t, m, r)
	claims := verifyAssertion(t, fetchJWKS(t, m), next.req.Header.Get("X-Auth-Assertion"), "http://example.com")
	if exp := int64(claims["exp"].(float64)); exp > s.Created+3600 {
		t.Errorf("exp %d is after the session's end %d", exp, s.Created+3600)
	}
}

func TestJWKSEndpoint(t *testing.T) {
	m := newUnitHandler(t, withUpstreamJWT(t, &UpstreamJWT{}))
	startUpstreamJWT(t, m)
	if m.JWKSPath != "/auth/jwks.json" {
		t.Fatalf("jwks_path default %q", m.JWKSPath)
	}
	rec, _ := serve(t, m, newRequest(http.MethodGet, "/auth/jwks.json"))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/jwk-set+json" ||
		rec.Header().Get("Cache-Control") != "public, max-age=300" || rec.Header().Get("ETag") == "" {
		t.Fatalf("JWKS: %d %v", rec.Code, rec.Header())
	}
	if strings.Contains(rec.Body.String(), `"d"`) {
		t.Fatal("the JWKS holds a private key")
	}
	rec2, _ := serve(t, m, newRequest(http.MethodGet, "/auth/jwks.json", "If-None-Match", rec.Header().Get("ETag")))
	if rec2.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", rec2.Code)
	}
	if rec3, _ := serve(t, m, newRequest(http.MethodPost, "/auth/jwks.json")); rec3.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", rec3.Code)
	}

	// Without upstream_jwt the path is the site's own.
	off := newUnitHandler(t, nil)
	if rec, next := serve(t, off, apiRequest(http.MethodGet, "/auth/jwks.json")); next.called || rec.Code != http.StatusUnauthorized {
		t.Errorf("without upstream_jwt: status %d, want the usual 401", rec.Code)
	}
}

// TestUpstreamJWTGeneratedKeys: without signing_key the key pair is made
// once in Caddy's storage; a reload (a second Provision) signs with the
// same key, and the admin API publishes it.
func TestUpstreamJWTGeneratedKeys(t *testing.T) {
	e := newITEnv(t, func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{KeyRotation: caddy.Duration(24 * time.Hour)} })
	first, err := e.h.ujwt.ring.Signing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The pooled ring is dropped when its last user goes, as on a restart.
	if err := e.h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	again := e.provision(e.op.Issuer, func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{KeyRotation: caddy.Duration(24 * time.Hour)} })
	e.h = &OIDCAuth{} // already cleaned up
	second, err := again.ujwt.ring.Signing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != second.ID {
		t.Fatalf("after a restart another key signs: %s, want %s", second.ID, first.ID)
	}
	rec := httptest.NewRecorder()
	if err := serveAdminJWKS(rec, httptest.NewRequest(http.MethodGet, "/oidc_auth/jwks", nil)); err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Key(first.ID)) != 1 || len(set.Keys) < 2 {
		t.Errorf("admin JWKS lacks the signing key or the next one: %s", rec.Body)
	}
}

func TestUpstreamJWTConfigErrors(t *testing.T) {
	good := testECKeyPEM(t)
	pub := func() string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}()
	for _, tc := range []struct {
		name string
		set  func(*OIDCAuth)
		want string
	}{
		{"jwks_path alone", func(m *OIDCAuth) { m.JWKSPath = "/keys" }, "jwks_path: needs upstream_jwt"},
		{"jwks_path clash", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{}; m.JWKSPath = "/auth/login" }, "jwks_path: path \"/auth/login\" is already used"},
		{"header", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Header: "X Bad"} }, "upstream_jwt: header"},
		{"header cookie", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Header: "Cookie"} }, "upstream_jwt: header"},
		{"audience", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Audience: "a b"} }, "upstream_jwt: audience"},
		{"lifetime short", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Lifetime: caddy.Duration(time.Second)} }, "upstream_jwt: lifetime"},
		{"lifetime long", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Lifetime: caddy.Duration(2 * time.Hour)} }, "upstream_jwt: lifetime"},
		{"rotation", func(m *OIDCAuth) {
			m.UpstreamJWT = &UpstreamJWT{Lifetime: caddy.Duration(time.Minute), KeyRotation: caddy.Duration(90 * time.Second)}
		}, "upstream_jwt: key_rotation"},
		{"reserved claim", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Claims: []string{"sub", "exp"}} }, "upstream_jwt: claims: \"exp\""},
		{"empty claim", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{Claims: []string{""}} }, "upstream_jwt: claims"},
		{"key not PEM", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{SigningKey: "not a key"} }, "upstream_jwt: signing_key: no PEM"},
		{"public key signs", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{SigningKey: pub} }, "upstream_jwt: signing_key: a public key"},
		{"published bad", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{SigningKey: good, PublishedKeys: []string{"x"}} }, "upstream_jwt: signing_key: key 2"},
		{"published alone", func(m *OIDCAuth) { m.UpstreamJWT = &UpstreamJWT{PublishedKeys: []string{pub}} }, "published_keys: needs signing_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "s"}
			tc.set(m)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "s", UpstreamJWT: &UpstreamJWT{SigningKey: good, PublishedKeys: []string{pub}}}
	if err := m.Validate(); err != nil {
		t.Fatalf("a valid operator key: %v", err)
	}
}

func TestUpstreamJWTCaddyfile(t *testing.T) {
	m, err := parseOIDCAuth(`oidc_auth {
		issuer https://idp.example.com
		client_id a
		client_secret s
		upstream_jwt {
			header X-Identity
			audience https://orders.internal
			lifetime 2m
			claims sub email roles
			signing_key {file./etc/caddy/assert.pem} {file./etc/caddy/next.pem}
			key_rotation 24h
		}
		jwks_path /.well-known/jwks.json
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := UpstreamJWT{Header: "X-Identity", Audience: "https://orders.internal", Lifetime: caddy.Duration(2 * time.Minute),
		Claims: []string{"sub", "email", "roles"}, SigningKey: "{file./etc/caddy/assert.pem}", PublishedKeys: []string{"{file./etc/caddy/next.pem}"},
		KeyRotation: caddy.Duration(24 * time.Hour)}
	if got, _ := json.Marshal(m.UpstreamJWT); string(got) != string(must(json.Marshal(want))) || m.JWKSPath != "/.well-known/jwks.json" {
		t.Fatalf("parsed %s, jwks_path %q", got, m.JWKSPath)
	}
	if m, err := parseOIDCAuth("oidc_auth {\n upstream_jwt\n}"); err != nil || m.UpstreamJWT == nil {
		t.Fatalf("upstream_jwt without a block: %v", err)
	}
	for _, bad := range []string{
		"upstream_jwt {\n bogus 1\n}", "upstream_jwt {\n header\n}", "upstream_jwt {\n header a b\n}",
		"upstream_jwt {\n lifetime soon\n}", "upstream_jwt {\n claims\n}", "upstream_jwt {\n signing_key\n}",
		"upstream_jwt {\n header a\n header b\n}", "upstream_jwt x", "jwks_path",
	} {
		if _, err := parseOIDCAuth("oidc_auth {\n" + bad + "\n}"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// benchUpstreamJWT measures the hot path of an authenticated request, as
// BenchmarkRequestWithSession does, with upstream_jwt on.
func benchUpstreamJWT(b *testing.B, fresh bool) {
	h := newBenchHandler(b)
	h.m.UpstreamJWT = &UpstreamJWT{SigningKey: testECKeyPEM(b)}
	if err := h.m.configure(); err != nil {
		b.Fatal(err)
	}
	startUpstreamJWT(b, h.m)
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
	req = httptest.NewRequest(http.MethodGet, "/index.html", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	cookies := []string{cookieHeader}
	req.Header["Cookie"] = cookies
	if err := h.m.ServeHTTP(w, req, next); err != nil || req.Header.Get("X-Auth-Assertion") == "" {
		b.Fatalf("warm-up request: %v, assertion %q", err, req.Header.Get("X-Auth-Assertion"))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Header["Cookie"] = cookies
		if fresh {
			h.m.ujwt.cache = assert.NewCache(maxCachedAssertions)
		}
		if err := h.m.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestWithUpstreamJWT is the hot path with upstream_jwt on:
// the session's assertion comes from the cache. Compare with
// BenchmarkRequestWithSession (off).
func BenchmarkRequestWithUpstreamJWT(b *testing.B) { benchUpstreamJWT(b, false) }

// BenchmarkRequestWithUpstreamJWTSigning signs on every request (a cache
// miss each time): what the cache saves.
func BenchmarkRequestWithUpstreamJWTSigning(b *testing.B) { benchUpstreamJWT(b, true) }

// TestUpstreamJWTPerSite: one session on two sites of one handler gets
// each site's own issuer, also with a fixed audience.
func TestUpstreamJWTPerSite(t *testing.T) {
	m := newUnitHandler(t, withUpstreamJWT(t, &UpstreamJWT{Audience: "https://api.internal"}))
	startUpstreamJWT(t, m)
	s := unitSession(time.Now())
	set := fetchJWKS(t, m)
	for _, host := range []string{"a.example", "b.example"} {
		r := apiRequest(http.MethodGet, "/app")
		r.Host = host
		addSession(t, m, r, s)
		_, next := serve(t, m, r)
		claims := verifyAssertion(t, set, next.req.Header.Get("X-Auth-Assertion"), "https://api.internal")
		if claims["iss"] != "http://"+host {
			t.Errorf("on %s: iss %v", host, claims["iss"])
		}
	}
}

// TestAssertionHeaderStrippedWhenOff: without upstream_jwt a client's
// X-Auth-Assertion is removed all the same, so an upstream that checks
// assertions never sees one Caddy did not make.
func TestAssertionHeaderStrippedWhenOff(t *testing.T) {
	m := newUnitHandler(t, nil)
	r := apiRequest(http.MethodGet, "/app")
	r.Header.Set("X-Auth-Assertion", "forged")
	r.Header["x_auth_assertion"] = []string{"forged"}
	addSession(t, m, r, unitSession(time.Now()))
	_, next := serve(t, m, r)
	if !next.called {
		t.Fatal("next not called")
	}
	for name := range next.req.Header {
		if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "x-auth-assertion") {
			t.Errorf("%s reached the next handler", name)
		}
	}
	repl := next.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if got, ok := repl.GetString("http.auth.user.jwt"); !ok || got != "" {
		t.Errorf("{http.auth.user.jwt} without upstream_jwt = %q (known %v), want empty", got, ok)
	}
}
