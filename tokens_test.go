package oidcauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// TestIDTokenChecks: each ID token defect makes the callback fail with 400
// and no session.
func TestIDTokenChecks(t *testing.T) {
	t.Parallel()
	claims := func(f func(e *itEnv, c map[string]any)) func(e *itEnv, s *oidctest.Script) {
		return func(e *itEnv, s *oidctest.Script) {
			s.IDClaims = func(grant string, c map[string]any) { f(e, c) }
		}
	}
	sign := func(f func(e *itEnv, c map[string]any) string) func(e *itEnv, s *oidctest.Script) {
		return func(e *itEnv, s *oidctest.Script) {
			s.SignID = func(c map[string]any) string { return f(e, c) }
		}
	}
	tests := []struct {
		name   string
		script func(e *itEnv, s *oidctest.Script)
	}{
		{"bad signature (other key, same kid)", sign(func(e *itEnv, c map[string]any) string {
			return oidctest.NewRSAKey("key-1", 1).Sign(c, "JWT")
		})},
		{"tampered payload", sign(func(e *itEnv, c map[string]any) string {
			good := e.op.ActiveKey().Sign(c, "JWT")
			c["sub"] = "admin"
			forged := e.op.ActiveKey().Sign(c, "JWT")
			g, f := strings.Split(good, "."), strings.Split(forged, ".")
			return g[0] + "." + f[1] + "." + g[2]
		})},
		{"alg none", sign(func(e *itEnv, c map[string]any) string { return oidctest.SignNone(c, "key-1") })},
		{"alg none without kid", sign(func(e *itEnv, c map[string]any) string { return oidctest.SignNone(c, "") })},
		{"HS256 with the client secret", sign(func(e *itEnv, c map[string]any) string {
			return oidctest.SignHS256(c, []byte(e.op.ClientSecret), "key-1")
		})},
		{"HS256 with the public key bytes", sign(func(e *itEnv, c map[string]any) string {
			return oidctest.SignHS256(c, oidctest.PublicKeyPEM(&oidctest.RSAKey(0).PublicKey), "key-1")
		})},
		{"unknown kid", sign(func(e *itEnv, c map[string]any) string {
			return oidctest.NewRSAKey("no-such-key", 2).Sign(c, "JWT")
		})},
		{"wrong iss", claims(func(e *itEnv, c map[string]any) { c["iss"] = "https://evil.example" })},
		{"iss with trailing slash", claims(func(e *itEnv, c map[string]any) { c["iss"] = e.op.Issuer + "/" })},
		{"wrong aud", claims(func(e *itEnv, c map[string]any) { c["aud"] = "other-client" })},
		{"several aud without azp", claims(func(e *itEnv, c map[string]any) {
			c["aud"] = []string{e.op.ClientID, "other-client"}
		})},
		{"azp of another client", claims(func(e *itEnv, c map[string]any) {
			c["aud"] = []string{e.op.ClientID, "other-client"}
			c["azp"] = "other-client"
		})},
		{"azp of another client, single aud", claims(func(e *itEnv, c map[string]any) { c["azp"] = "other-client" })},
		{"wrong nonce", claims(func(e *itEnv, c map[string]any) { c["nonce"] = "not-the-login-nonce" })},
		{"missing nonce", claims(func(e *itEnv, c map[string]any) { delete(c, "nonce") })},
		{"missing iat", claims(func(e *itEnv, c map[string]any) { delete(c, "iat") })},
		{"iat far in the future", claims(func(e *itEnv, c map[string]any) {
			c["iat"] = e.clock.Now().Add(time.Hour).Unix()
			c["exp"] = e.clock.Now().Add(2 * time.Hour).Unix()
		})},
		{"missing sub", claims(func(e *itEnv, c map[string]any) { delete(c, "sub") })},
		{"empty sub", claims(func(e *itEnv, c map[string]any) { c["sub"] = "" })},
		{"missing sub, opaque access token", func(e *itEnv, s *oidctest.Script) {
			s.Opaque = true
			s.IDClaims = func(grant string, c map[string]any) { delete(c, "sub") }
		}},
		{"expired exp", claims(func(e *itEnv, c map[string]any) {
			c["iat"] = e.clock.Now().Add(-2 * time.Hour).Unix()
			c["exp"] = e.clock.Now().Add(-time.Hour).Unix()
		})},
		{"missing exp", claims(func(e *itEnv, c map[string]any) { delete(c, "exp") })},
		{"at_hash mismatch", func(e *itEnv, s *oidctest.Script) { s.ATHash = oidctest.AccessTokenHash("another access token") }},
		{"ES256 not in the discovered algorithms", func(e *itEnv, s *oidctest.Script) {
			k := oidctest.NewECKey("ec-1")
			s.ExtraKeys = append(s.ExtraKeys, k)
			e.op.SignWith(k)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(func(s *oidctest.Script) { tc.script(e, s) })
			b := e.browser()
			res := b.login("/private")
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("callback: status %d location %q, want 400", res.StatusCode, res.location())
			}
			e.expectNoSession(res, "callback")
			expectAPI401(t, b.get("/private", api), "request after the refused login")
		})
	}
}

// TestIDTokenAccepted: variants a conforming IdP may send.
func TestIDTokenAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script func(e *itEnv, s *oidctest.Script)
	}{
		{"ES256 when discovered", func(e *itEnv, s *oidctest.Script) {
			s.Discovery = map[string]any{"id_token_signing_alg_values_supported": []string{"RS256", "ES256"}}
			k := oidctest.NewECKey("ec-1")
			s.ExtraKeys = append(s.ExtraKeys, k)
			e.op.SignWith(k)
		}},
		{"several aud with our azp", func(e *itEnv, s *oidctest.Script) {
			s.IDClaims = func(grant string, c map[string]any) {
				c["aud"] = []string{e.op.ClientID, "other-client"}
				c["azp"] = e.op.ClientID
			}
			s.AccessClaims = func(grant string, c map[string]any) { c["aud"] = []string{e.op.ClientID, "api"} }
		}},
		{"no at_hash", func(e *itEnv, s *oidctest.Script) {
			s.IDClaims = func(grant string, c map[string]any) { delete(c, "at_hash") }
		}},
		{"iat a little in the future (clock skew)", func(e *itEnv, s *oidctest.Script) {
			s.IDClaims = func(grant string, c map[string]any) { c["iat"] = e.clock.Now().Add(time.Minute).Unix() }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(func(s *oidctest.Script) { tc.script(e, s) })
			b := e.browser()
			b.mustLogin("/private")
			expectServed(t, b.get("/private", api), "request after login")
		})
	}
}

// accessDefect changes a JWT access token so that it must be refused.
type accessDefect struct {
	name   string
	claims func(e *itEnv, c map[string]any)
	sign   func(e *itEnv, c map[string]any) string
}

var accessDefects = []accessDefect{
	{name: "wrong aud", claims: func(e *itEnv, c map[string]any) { c["aud"] = []string{"other-api"} }},
	{name: "wrong iss", claims: func(e *itEnv, c map[string]any) { c["iss"] = "https://evil.example" }},
	{name: "expired", claims: func(e *itEnv, c map[string]any) {
		c["iat"] = e.clock.Now().Add(-2 * time.Hour).Unix()
		c["exp"] = e.clock.Now().Add(-time.Hour).Unix()
	}},
	{name: "missing iat", claims: func(e *itEnv, c map[string]any) { delete(c, "iat") }},
	{name: "bad signature", sign: func(e *itEnv, c map[string]any) string {
		return oidctest.NewRSAKey(e.op.ActiveKey().KID, 3).Sign(c, "at+jwt") // called with the OP lock held
	}},
	{name: "alg none", sign: func(e *itEnv, c map[string]any) string { return oidctest.SignNone(c, "key-1") }},
}

func (d accessDefect) apply(e *itEnv, s *oidctest.Script) {
	if d.claims != nil {
		s.AccessClaims = func(grant string, c map[string]any) { d.claims(e, c) }
	}
	if d.sign != nil {
		s.SignAccess = func(c map[string]any) string { return d.sign(e, c) }
	}
}

// TestAccessTokenChecks: a JWT access token with a defect is refused at
// login, when a refresh brings it, and when a session cookie carries it.
func TestAccessTokenChecks(t *testing.T) {
	t.Parallel()
	for _, d := range accessDefects {
		t.Run(d.name+"/at login", func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(func(s *oidctest.Script) { d.apply(e, s) })
			b := e.browser()
			res := b.login("/private")
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("callback: status %d location %q, want 400", res.StatusCode, res.location())
			}
			e.expectNoSession(res, "callback")
		})

		t.Run(d.name+"/from a refresh", func(t *testing.T) {
			t.Parallel()
			e, b := refreshEnv(t, nil)
			e.op.Set(func(s *oidctest.Script) {
				s.AccessClaims = func(grant string, c map[string]any) {
					if grant == "refresh_token" && d.claims != nil {
						d.claims(e, c)
					}
				}
				if d.sign != nil {
					s.SignAccess = func(c map[string]any) string { return d.sign(e, c) }
				}
			})
			apiClient := b.clone()
			e.clock.Advance(61 * time.Second)
			e.expectLoginRedirect(b.get("/private", nav), "navigation")
			expectAPI401(t, apiClient.get("/private", api), "API call")
		})

		t.Run(d.name+"/in a session cookie", func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			b := e.browser()
			b.mustLogin("/private") // discovery and JWKS in place
			now := e.clock.Now()
			c := map[string]any{
				"iss": e.op.Issuer, "aud": []string{e.op.ClientID}, "sub": "user-1",
				"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
			}
			if d.claims != nil {
				d.claims(e, c)
			}
			tok := e.op.ActiveKey().Sign(c, "at+jwt")
			if d.sign != nil {
				tok = d.sign(e, c)
			}
			plantSession(t, e, b, tok, now.Add(10*time.Minute))
			apiClient := b.clone()
			e.expectLoginRedirect(b.get("/private", nav), "navigation")
			expectAPI401(t, apiClient.get("/private", api), "API call")
		})
	}

	t.Run("control: a good token in a session cookie", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t)
		b := e.browser()
		b.mustLogin("/private")
		now := e.clock.Now()
		tok := e.op.ActiveKey().Sign(map[string]any{
			"iss": e.op.Issuer, "aud": []string{e.op.ClientID}, "sub": "user-1",
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		}, "at+jwt")
		plantSession(t, e, b, tok, now.Add(10*time.Minute))
		expectServed(t, b.get("/private", nav), "planted good session")
	})
}

// plantSession gives the browser a session cookie, sealed with the
// handler's key, that carries the access token tok: what the cookie of an
// earlier login would hold. No refresh token, and no refresh due.
func plantSession(t *testing.T, e *itEnv, b *itBrowser, tok string, exp time.Time) {
	t.Helper()
	now := e.clock.Now()
	s := &session{
		ID:          "planted-" + fmt.Sprint(now.UnixNano()),
		Subject:     "user-1",
		Created:     now.Unix(),
		AccessToken: tok,
		Expiry:      exp.Unix(),
		RefreshAt:   exp.Unix(),
	}
	req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/", nil)
	rec := httptest.NewRecorder()
	if err := e.h.cookies.WriteSession(rec, req, s, 3600); err != nil {
		t.Fatal(err)
	}
	b.store(rec.Result())
}

func TestOpaqueAccessToken(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.Set(func(s *oidctest.Script) {
		s.Opaque = true
		s.AccessTTL = 5 * time.Minute
		s.NoRefreshToken = true
	})
	b := e.browser()
	b.mustLogin("/private")
	apiClient := b.clone()
	expectServed(t, b.get("/private", api), "opaque token just issued")
	e.clock.Advance(4 * time.Minute)
	expectServed(t, b.get("/private", api), "opaque token before its expires_in")
	e.clock.Advance(65 * time.Second)
	e.expectLoginRedirect(b.get("/private", nav), "opaque token after its expires_in")
	expectAPI401(t, apiClient.get("/private", api), "opaque token after its expires_in (API)")
}

// postLogout posts a logout token to the back-channel logout path.
func (e *itEnv) postLogout(token string) *itResult {
	body := url.Values{"logout_token": {token}}.Encode()
	req := httptest.NewRequest(http.MethodPost, "http://"+itHost+"/auth/backchannel-logout", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return serveIT(e.h, req)
}
