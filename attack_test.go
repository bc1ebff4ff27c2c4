package oidcauth

// Attacks on the handler, in process, against the scriptable IdP of
// idp_test.go: forged and replayed login responses, token and key
// tricks, a misbehaving token endpoint, cookie tampering, open redirects,
// forged identity headers, path and method tricks, and logs that must
// never hold a secret. Each test fails if the protection it names is
// removed; none may see a 500 or a panic.

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// atkNo5xx fails on a server error: every attack must be answered 4xx
// (or a 502/503 that says the IdP failed, where the test allows it).
func atkNo5xx(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.StatusCode >= 500 {
		t.Fatalf("%s: status %d; body %q", what, res.StatusCode, truncateForLog(res.body))
	}
}

// atkSessionCookie returns the value of the session cookie that a response
// sets (not an expiry), or "".
func atkSessionCookie(e *itEnv, res *itResult) string {
	if c := res.setCookie(e.sessionCookieName()); c != nil && c.MaxAge >= 0 && c.Value != "" {
		return c.Value
	}
	return ""
}

// atkPendingLogin starts a login in b and lets the IdP approve it, but
// does not come back: the code and state an attacker holds after signing
// in to his own account.
func atkPendingLogin(e *itEnv, b *itBrowser) (code, state string) {
	e.t.Helper()
	loc, q := b.startLogin("/private")
	return e.op.Authorize(loc), q.Get("state")
}

// TestAttackCallbackParameters: repeated, oversized and malformed login
// response parameters are refused before any token request.
func TestAttackCallbackParameters(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	tests := []struct {
		name  string
		query func(code, state string) string
		want  int
	}{
		{"two codes", func(code, state string) string {
			return url.Values{"code": {code, code}, "state": {state}}.Encode()
		}, http.StatusBadRequest},
		{"two codes, the second forged", func(code, state string) string {
			return url.Values{"code": {code, "forged"}, "state": {state}}.Encode()
		}, http.StatusBadRequest},
		{"two iss", func(code, state string) string {
			return url.Values{"code": {code}, "state": {state}, "iss": {e.op.Issuer, "https://evil.example"}}.Encode()
		}, http.StatusBadRequest},
		{"error twice", func(code, state string) string {
			return url.Values{"error": {"access_denied", "x"}, "state": {state}}.Encode()
		}, http.StatusBadRequest},
		{"code of 100 KB", func(code, state string) string {
			return url.Values{"code": {strings.Repeat("c", 100<<10)}, "state": {state}}.Encode()
		}, http.StatusRequestURITooLong},
		{"state of 10 KB", func(code, state string) string {
			return url.Values{"code": {code}, "state": {state + strings.Repeat("s", 10<<10)}}.Encode()
		}, http.StatusRequestURITooLong},
		{"state of 1 KB", func(code, state string) string {
			return url.Values{"code": {code}, "state": {state + strings.Repeat("s", 1<<10)}}.Encode()
		}, http.StatusBadRequest},
		{"thousands of parameters", func(code, state string) string {
			return "code=" + code + "&state=" + state + strings.Repeat("&x=1", 3000)
		}, http.StatusRequestURITooLong},
		{"bad escape", func(code, state string) string { return "code=%zz&state=" + state }, http.StatusBadRequest},
		{"semicolon separator", func(code, state string) string { return "code=" + code + ";state=" + state }, http.StatusBadRequest},
		{"state and code swapped", func(code, state string) string {
			return url.Values{"code": {state}, "state": {code}}.Encode()
		}, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser()
			code, state := atkPendingLogin(e, b)
			before := e.op.Grants("authorization_code")
			res := b.get("/auth/callback?"+tc.query(code, state), nav)
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d; body %q", res.StatusCode, tc.want, truncateForLog(res.body))
			}
			e.expectNoSession(res, tc.name)
			if n := e.op.Grants("authorization_code") - before; n != 0 {
				t.Fatalf("%d code exchanges for a refused login response", n)
			}
		})
	}
	t.Run("POST", func(t *testing.T) {
		b := e.browser()
		code, state := atkPendingLogin(e, b)
		req := httptest.NewRequest(http.MethodPost, "http://"+itHost+"/auth/callback", strings.NewReader(url.Values{"code": {code}, "state": {state}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res := b.do(req, nav)
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status %d, want 405", res.StatusCode)
		}
		e.expectNoSession(res, "POST callback")
	})
}

// TestAttackLoginCSRF: an attacker who signed in to his own account sends
// the victim to the callback with his code and his state. The victim's
// browser has no state cookie for that state (or one of its own login),
// so nothing is exchanged and no session is made.
func TestAttackLoginCSRF(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("mallory", "mallory@evil.example", "")
	code, state := atkPendingLogin(e, e.browser())
	e.op.SetUser("user-1", "user1@example.com", "")

	victims := map[string]*itBrowser{"no login in progress": e.browser()}
	pending := e.browser()
	pending.startLogin("/inbox")
	victims["own login in progress"] = pending
	for name, victim := range victims {
		t.Run(name, func(t *testing.T) {
			before := e.op.Grants("authorization_code")
			res := victim.get(itCallbackURL(code, state), nav)
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d location %q, want 400", res.StatusCode, res.location())
			}
			e.expectNoSession(res, "forged callback")
			if n := e.op.Grants("authorization_code") - before; n != 0 {
				t.Fatalf("the attacker's code was exchanged %d times", n)
			}
			expectAPI401(t, victim.get("/private", api), "victim after the forged callback")
		})
	}
}

// TestAttackCodeInjectionPKCE: a code stolen from (or issued to) another
// login, brought to the victim's callback with the victim's own valid
// state: the handler sends the victim's code_verifier, which does not
// match the challenge the code was issued for, so the IdP refuses it.
func TestAttackCodeInjectionPKCE(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("mallory", "mallory@evil.example", "")
	stolen, _ := atkPendingLogin(e, e.browser())
	e.op.SetUser("user-1", "user1@example.com", "")

	victim := e.browser()
	_, q := victim.startLogin("/private")
	res := victim.get(itCallbackURL(stolen, q.Get("state")), nav)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d location %q, want 400", res.StatusCode, res.location())
	}
	e.expectNoSession(res, "injected code")
	_, verifiers, _, _ := e.op.Observed()
	if len(verifiers) != 1 || verifiers[0] == "" {
		t.Fatalf("code_verifiers sent: %q, want the victim's one", verifiers)
	}
	expectAPI401(t, victim.get("/private", api), "victim after the injected code")
}

// TestAttackIssuerMixUp: RFC 9207. The site trusts IdP A; a response that
// names (or comes from) IdP B is refused before any token request, so
// neither IdP's token endpoint sees the code or the client secret.
func TestAttackIssuerMixUp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		announced bool // A announces authorization_response_iss_parameter_supported
		iss       func(a, b *oidctest.Provider) []string
		want      int
		tokenAtA  bool // the code may reach A (which refuses it)
	}{
		{"B's code, iss B", false, func(a, b *oidctest.Provider) []string { return []string{"iss", b.Issuer} }, http.StatusBadRequest, false},
		{"B's code, iss B, A announces iss", true, func(a, b *oidctest.Provider) []string { return []string{"iss", b.Issuer} }, http.StatusBadRequest, false},
		{"B's code, no iss, A announces iss", true, func(a, b *oidctest.Provider) []string { return nil }, http.StatusBadRequest, false},
		{"B's code, iss B with a trailing slash", true, func(a, b *oidctest.Provider) []string { return []string{"iss", b.Issuer + "/"} }, http.StatusBadRequest, false},
		{"B's code, iss A's with other case", true, func(a, b *oidctest.Provider) []string { return []string{"iss", strings.ToUpper(a.Issuer)} }, http.StatusBadRequest, false},
		{"B's code, B lies iss A", true, func(a, b *oidctest.Provider) []string { return []string{"iss", a.Issuer} }, http.StatusBadRequest, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			if tc.announced {
				e.op.Set(func(s *oidctest.Script) {
					s.Discovery = map[string]any{"authorization_response_iss_parameter_supported": true}
				})
			}
			opB := oidctest.New(t, e.clock)
			opB.ClientID, opB.ClientSecret = e.op.ClientID, e.op.ClientSecret // the same client at both

			b := e.browser()
			loc, q := b.startLogin("/private")
			codeB := opB.Authorize(strings.Replace(loc, e.op.URL, opB.URL, 1))
			res := b.get(itCallbackURL(codeB, q.Get("state"), tc.iss(e.op, opB)...), nav)
			if res.StatusCode != tc.want {
				t.Fatalf("status %d location %q, want %d", res.StatusCode, res.location(), tc.want)
			}
			e.expectNoSession(res, "mixed-up response")
			if n := opB.Grants("authorization_code"); n != 0 {
				t.Fatalf("IdP B's token endpoint received %d requests (code and client secret)", n)
			}
			if n := e.op.Grants("authorization_code"); n != 0 && !tc.tokenAtA {
				t.Fatalf("IdP A's token endpoint received %d requests for a refused response", n)
			}
		})
	}

	t.Run("state of another handler", func(t *testing.T) {
		// Two apps on one host, each with its own IdP: a login started at
		// one cannot be completed at the other.
		t.Parallel()
		a := newITEnv(t)
		other := newITEnv(t)
		ba := a.browser()
		loc, q := ba.startLogin("/private")
		code := a.op.Authorize(loc)
		bo := other.browser()
		bo.cookies = ba.clone().cookies
		res := bo.get(itCallbackURL(code, q.Get("state"), "iss", a.op.Issuer), nav)
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", res.StatusCode)
		}
		other.expectNoSession(res, "callback at the other app")
		if a.op.Grants("authorization_code")+other.op.Grants("authorization_code") != 0 {
			t.Fatal("a token endpoint was called")
		}
	})
}

// atkJWE makes a compact JWE (five parts) of claims, encrypted to pub.
func atkJWE(t *testing.T, pub *rsa.PublicKey, claims map[string]any) string {
	t.Helper()
	enc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: pub}, (&jose.EncrypterOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := enc.Encrypt(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, ".") != 4 {
		t.Fatalf("JWE has %d parts", strings.Count(out, ".")+1)
	}
	return out
}

// atkNested signs, with the IdP's key, a JWS whose payload is another JWT
// (cty JWT), as in a nested (signed then signed/encrypted) token.
func atkNested(k *oidctest.Key, inner string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.Private, KeyID: k.KID}},
		(&jose.SignerOptions{}).WithContentType("JWT").WithType("JWT"))
	if err != nil {
		panic(err)
	}
	jws, err := s.Sign([]byte(inner))
	if err != nil {
		panic(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestAttackTokenFormats: HS256 made with the IdP's public key or the
// client secret, JWE (five parts) and nested JWTs are refused as ID
// tokens, as access tokens in a session and as logout tokens.
func TestAttackTokenFormats(t *testing.T) {
	t.Parallel()
	forms := []struct {
		name string
		make func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string
	}{
		{"HS256 with the public key", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			return oidctest.SignHS256(c, oidctest.PublicKeyPEM(&oidctest.RSAKey(0).PublicKey), "key-1")
		}},
		{"HS256 with the client secret", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			return oidctest.SignHS256(c, []byte(e.op.ClientSecret), "key-1")
		}},
		{"HS256 with the JWK's modulus", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			return oidctest.SignHS256(c, oidctest.RSAKey(0).PublicKey.N.Bytes(), "key-1")
		}},
		{"JWE", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			return atkJWE(t, &oidctest.RSAKey(0).PublicKey, c)
		}},
		{"nested JWT", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			return atkNested(k, k.Sign(c, "JWT"))
		}},
		{"JWS JSON serialization", func(t *testing.T, e *itEnv, k *oidctest.Key, c map[string]any) string {
			p := strings.Split(k.Sign(c, "JWT"), ".")
			b, _ := json.Marshal(map[string]string{"protected": p[0], "payload": p[1], "signature": p[2]})
			return string(b)
		}},
	}
	for _, f := range forms {
		t.Run(f.name+"/ID token", func(t *testing.T) {
			if f.name == "JWS JSON serialization" {
			}
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(func(s *oidctest.Script) {
				s.SignID = func(c map[string]any) string { return f.make(t, e, e.op.ActiveKey(), c) } // the OP's lock is held
			})
			b := e.browser()
			res := b.login("/private")
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("callback: status %d location %q, want 400", res.StatusCode, res.location())
			}
			e.expectNoSession(res, "callback")
		})
		t.Run(f.name+"/access token in a session", func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			b := e.browser()
			b.mustLogin("/private")
			now := e.clock.Now()
			tok := f.make(t, e, e.op.ActiveKey(), map[string]any{
				"iss": e.op.Issuer, "aud": []string{e.op.ClientID}, "sub": "user-1",
				"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
			})
			if !oidc.IsJWT(tok) {
				// Not even taken for a JWT: an opaque token, which the
				// handler cannot check; only a session it sealed holds one.
				t.Skipf("%s is not a compact JWS; opaque tokens are trusted from the sealed session only", f.name)
			}
			plantSession(t, e, b, tok, now.Add(10*time.Minute))
			expectAPI401(t, b.get("/private", api), "planted session")
		})
		t.Run(f.name+"/logout token", func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.SetUser("user-1", "user1@example.com", "sid-1")
			b := e.browser()
			b.mustLogin("/private")
			res := e.postLogout(f.make(t, e, e.op.ActiveKey(), e.logoutClaims(nil)))
			expectBackchannelRefused(t, res, "logout token")
			expectServed(t, b.get("/private", api), "session after the refused logout token")
		})
	}
}

// TestAttackJWKSOddKeys: keys in the JWKS that do not parse, are private,
// symmetric or for encryption are skipped, the IdP's signing key still
// works, and none of the skipped keys verifies a token.
func TestAttackJWKSOddKeys(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	symmetric := []byte("a-symmetric-key-in-the-jwks-0123456789")
	encKey := oidctest.NewRSAKey("enc-1", 2)
	privKey := oidctest.NewRSAKey("priv-1", 3)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good, _ := json.Marshal(e.op.ActiveKey().Public())
		enc, _ := json.Marshal(jose.JSONWebKey{Key: encKey.Private.Public(), KeyID: "enc-1", Use: "enc", Algorithm: "RSA-OAEP"})
		priv, _ := json.Marshal(jose.JSONWebKey{Key: privKey.Private, KeyID: "priv-1", Algorithm: "RS256", Use: "sig"})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"keys":[
			"not an object", 42, null, {},
			{"kty":"RSA","kid":"key-1","n":"!!!","e":"AQAB"},
			{"kty":"EC","kid":"key-1","crv":"P-999","x":"AA","y":"AA"},
			{"kty":"oct","kid":"key-1","k":%q},
			{"kty":"UNKNOWN","kid":"key-1"},
			%s, %s, %s]}`, base64.RawURLEncoding.EncodeToString(symmetric), enc, priv, good)
	}))
	t.Cleanup(jwks.Close)
	e.op.Set(func(s *oidctest.Script) { s.Discovery = map[string]any{"jwks_uri": jwks.URL} })

	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", api), "session signed with the good key")

	now := e.clock.Now()
	claims := map[string]any{
		"iss": e.op.Issuer, "aud": []string{e.op.ClientID}, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	for name, tok := range map[string]string{
		"HS256 with the JWKS's oct key": oidctest.SignHS256(claims, symmetric, "key-1"),
		"signed by the enc key":         encKey.Sign(claims, "at+jwt"),
		"signed by the private JWK":     privKey.Sign(claims, "at+jwt"),
	} {
		c := e.browser()
		plantSession(t, e, c, tok, now.Add(10*time.Minute))
		expectAPI401(t, c.get("/private", api), name)
	}
}

// TestAttackRefreshChangesIdentity: a refresh whose ID token names
// another issuer, audience or authorized party ends the session instead
// of changing who it belongs to.
func TestAttackRefreshChangesIdentity(t *testing.T) {
	t.Parallel()
	for name, change := range map[string]func(e *itEnv, c map[string]any){
		"iss":             func(e *itEnv, c map[string]any) { c["iss"] = "https://evil.example" },
		"aud":             func(e *itEnv, c map[string]any) { c["aud"] = "other-client" },
		"aud and azp":     func(e *itEnv, c map[string]any) { c["aud"] = []string{e.op.ClientID, "x"}; c["azp"] = "x" },
		"exp in the past": func(e *itEnv, c map[string]any) { c["exp"] = e.clock.Now().Add(-time.Hour).Unix() },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var env *itEnv
			e, b := refreshEnv(t, func(s *oidctest.Script) {
				s.IDClaims = func(grant string, c map[string]any) {
					if grant == "refresh_token" {
						change(env, c)
					}
				}
			})
			env = e
			e.clock.Advance(61 * time.Second)
			res := b.get("/private", api)
			expectAPI401(t, res, "request whose refresh brought a changed ID token")
			e.expectNoSession(res, "refused refresh")
			if e.op.Grants("refresh_token") != 1 {
				t.Fatalf("refresh grants: %d, want 1", e.op.Grants("refresh_token"))
			}
		})
	}
}

// TestAttackTokenEndpointMisbehaves: a token endpoint that hangs, answers
// garbage or an endless body gets a 502/503, never a session, never a
// 500, and is never read without bound.
func TestAttackTokenEndpointMisbehaves(t *testing.T) {
	t.Parallel()
	hook := func(f func(w http.ResponseWriter, r *http.Request)) func(s *oidctest.Script) {
		return func(s *oidctest.Script) {
			s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool { f(w, r); return true }
		}
	}
	bodies := map[string]func(w http.ResponseWriter, r *http.Request){
		"HTML page": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html>maintenance</html>")
		},
		"truncated JSON": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"abc","id_tok`)
		},
		"access_token a number": func(w http.ResponseWriter, r *http.Request) {
			oidctest.WriteJSON(w, http.StatusOK, map[string]any{"access_token": 5, "token_type": "Bearer"})
		},
		"id_token a number": func(w http.ResponseWriter, r *http.Request) {
			oidctest.WriteJSON(w, http.StatusOK, map[string]any{"access_token": "abc", "token_type": "Bearer", "id_token": 5})
		},
		"empty 200": func(w http.ResponseWriter, r *http.Request) {},
		"400 with HTML": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, "<html>"+strings.Repeat("x", 1<<20)+"</html>")
		},
		"hangs up": func(w http.ResponseWriter, r *http.Request) { oidctest.HangUp(w) },
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			e.op.Set(hook(body))
			res := e.browser().login("/private")
			if res.StatusCode != http.StatusBadGateway && res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 502 or 400; body %q", res.StatusCode, truncateForLog(res.body))
			}
			e.expectNoSession(res, name)
		})
	}

	t.Run("endless body", func(t *testing.T) {
		t.Parallel()
		var written atomic.Int64
		e := newITEnv(t)
		e.op.Set(hook(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"`)
			chunk := []byte(strings.Repeat("a", 64<<10))
			for written.Load() < 64<<20 {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}))
		res := e.browser().login("/private")
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", res.StatusCode)
		}
		e.expectNoSession(res, "endless body")
		time.Sleep(100 * time.Millisecond)
		if n := written.Load(); n >= 64<<20 {
			t.Fatalf("the handler read the whole 64 MB token response")
		}
	})

	t.Run("hangs at login", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		e := newITEnv(t)
		t.Cleanup(func() { close(release) })
		e.op.Set(hook(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		b := e.browser()
		loc, q := b.startLogin("/private")
		code := e.op.Authorize(loc)
		// The browser gives up after 500 ms; the handler's own bound on
		// IdP calls (idpTimeout) is 10 s.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+itCallbackURL(code, q.Get("state")), nil).WithContext(ctx)
		start := time.Now()
		res := b.do(req, nav)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("callback took %v", d)
		}
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", res.StatusCode)
		}
		e.expectNoSession(res, "hanging token endpoint")
	})

	t.Run("hangs at refresh", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits for the 10 s IdP timeout")
		}
		t.Parallel()
		release := make(chan struct{})
		e, b := refreshEnv(t, nil)
		t.Cleanup(func() { close(release) })
		e.op.Set(func(s *oidctest.Script) {
			s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return true
			}
		})
		e.clock.Advance(61 * time.Second) // the access token has expired
		start := time.Now()
		res := b.clone().get("/private", api)
		d := time.Since(start)
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d after %v, want 503", res.StatusCode, d)
		}
		if d < idpTimeout-time.Second || d > idpTimeout+5*time.Second {
			t.Fatalf("answered after %v, want about idpTimeout (%v)", d, idpTimeout)
		}
		if res.reachedNext {
			t.Fatal("reached the next handler with an expired token")
		}
	})
}

// TestAttackDiscoveryBodyBounded: a discovery document that never ends is
// not read without bound (the JWKS and token responses are capped at
// 1 MB).
func TestAttackDiscoveryBodyBounded(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"issuer":"`)
		chunk := []byte(strings.Repeat("a", 64<<10))
		for written.Load() < 64<<20 {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	m := newUnitHandler(t, func(m *OIDCAuth) { m.Issuer = srv.URL })
	rec, _ := serve(t, m, navRequest(http.MethodGet, "/private"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if n := written.Load(); n >= 64<<20 {
		t.Fatalf("the handler read the whole 64 MB discovery document")
	}
}

// atkFlip changes one character of a base64url value into another
// base64url character.
func atkFlip(v string, i int) string {
	b := []byte(v)
	c := b[i] ^ 0x01
	if !isBase64URL(c) {
		c = 'A'
		if b[i] == 'A' {
			c = 'B'
		}
	}
	b[i] = c
	return string(b)
}

// atkSameBytes reports whether two base64url strings decode to the same
// bytes (the last character has unused low bits).
func atkSameBytes(a, b string) bool {
	x, err1 := base64.RawURLEncoding.DecodeString(a)
	y, err2 := base64.RawURLEncoding.DecodeString(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// TestAttackCookieBitFlips: a session cookie changed in any one character
// is answered exactly like no cookie at all (status, headers that matter,
// body), so the answer tells nothing about where a change was made.
// The same holds for the state cookie at the callback.
func TestAttackCookieBitFlips(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	b := e.browser()
	b.mustLogin("/private")
	sess, ok := b.cookie(e.sessionCookieName())
	if !ok || strings.Contains(sess.value, ".") {
		t.Fatalf("want one session cookie without chunks; have %v %q", ok, truncateForLog(sess.value))
	}
	send := func(value string) *itResult {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
		req.Header.Set("Accept", "application/json")
		if value != "" {
			req.AddCookie(&http.Cookie{Name: e.sessionCookieName(), Value: value})
		}
		return serveIT(e.h, req)
	}
	base := send("")
	expectAPI401(t, base, "no cookie")
	expectServed(t, send(sess.value), "the unchanged cookie")
	// Strict decoding: even a change in the unused bits of the last
	// character is another value, answered like no cookie.
	for i := range len(sess.value) {
		v := atkFlip(sess.value, i)
		if v == sess.value {
			continue
		}
		res := send(v)
		if res.StatusCode != base.StatusCode || res.body != base.body ||
			res.Header.Get("WWW-Authenticate") != base.Header.Get("WWW-Authenticate") ||
			len(res.Header.Values("Set-Cookie")) != len(base.Header.Values("Set-Cookie")) {
			t.Fatalf("flip at %d: %d %q, want the answer to no cookie: %d %q", i, res.StatusCode, res.body, base.StatusCode, base.body)
		}
	}

	t.Run("state cookie", func(t *testing.T) {
		sb := e.browser()
		code, state := atkPendingLogin(e, sb)
		var name, value string
		for _, c := range sb.cookies {
			if strings.Contains(c.name, "_s_") {
				name, value = c.name, c.value
			}
		}
		if name == "" {
			t.Fatal("no state cookie")
		}
		var first *itResult
		for i := 0; i < len(value); i += 7 {
			v := atkFlip(value, i)
			if atkSameBytes(v, value) {
				continue
			}
			req := httptest.NewRequest(http.MethodGet, "http://"+itHost+itCallbackURL(code, state), nil)
			req.AddCookie(&http.Cookie{Name: name, Value: v})
			res := serveIT(e.h, req)
			e.expectNoSession(res, "flipped state cookie")
			if first == nil {
				first = res
			}
			if res.StatusCode != http.StatusBadRequest || res.body != first.body {
				t.Fatalf("flip at %d: %d %q, want 400 %q", i, res.StatusCode, res.body, first.body)
			}
		}
		if e.op.Grants("authorization_code") != 1 { // the login of the outer test only
			t.Fatalf("a flipped state cookie led to a code exchange")
		}
	})
}

// TestAttackCookieJar: garbage, huge, duplicated, extra and missing
// cookies; a session moved to another app; a session planted before login.
func TestAttackCookieJar(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	owner := e.browser()
	owner.mustLogin("/private")
	sess, _ := owner.cookie(e.sessionCookieName())
	name := e.sessionCookieName()

	raw := func(header string, kind string) *itResult {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
		req.Header.Set("Cookie", header)
		return e.browser().do(req, kind)
	}
	junk := func(prefix string, total int) string {
		var parts []string
		for i, n := 0, 0; n < total; i++ {
			p := fmt.Sprintf("%s%d=%s", prefix, i, strings.Repeat("Z", 50))
			parts = append(parts, p)
			n += len(p) + 2
		}
		return strings.Join(parts, "; ")
	}

	t.Run("64 KB of other cookies", func(t *testing.T) {
		res := raw(junk("other", 64<<10)+"; "+name+"="+sess.value, api)
		expectServed(t, res, "valid session among 64 KB of cookies")
		e.expectLoginRedirect(raw(junk("other", 64<<10), nav), "no session among 64 KB of cookies")
	})
	t.Run("64 KB of fake state cookies", func(t *testing.T) {
		res := raw(junk(name+"_s_", 64<<10), nav)
		e.expectLoginRedirect(res, "login with 64 KB of fake state cookies")
		expired := 0
		for _, c := range res.Cookies() {
			if strings.HasPrefix(c.Name, name+"_s_") && c.MaxAge < 0 {
				expired++
			}
		}
		if expired == 0 {
			t.Error("fake state cookies were not expired")
		}
	})
	t.Run("64 KB session cookie", func(t *testing.T) {
		atkNo5xx(t, raw(name+"="+strings.Repeat("A", 64<<10), nav), "huge session cookie")
		expectAPI401(t, raw(name+"=8."+strings.Repeat("A", 8<<10)+strings.Repeat("; "+name+"_1="+strings.Repeat("B", 8<<10), 7), api), "huge chunks")
	})
	t.Run("duplicate names", func(t *testing.T) {
		for _, h := range []string{
			name + "=" + sess.value + "; " + name + "=garbage",
			name + "=garbage; " + name + "=" + sess.value,
			name + "=" + sess.value + "; " + name + "=" + sess.value,
			name + "=" + sess.value + "; " + name + "_1=x; " + name + "_1=y",
		} {
			res := raw(h, api)
			atkNo5xx(t, res, "duplicate cookie names")
			if res.reachedNext && res.user != "user-1" {
				t.Fatalf("served as %q", res.user)
			}
		}
	})
	t.Run("extra chunks", func(t *testing.T) {
		res := raw(name+"="+sess.value+"; "+name+"_1=AAAA; "+name+"_7=BBBB; "+name+"_99=CCCC", api)
		expectServed(t, res, "single-chunk session with stray chunk cookies")
	})
	t.Run("chunk count lies", func(t *testing.T) {
		half := len(sess.value) / 2
		for _, h := range []string{
			name + "=2." + sess.value[:half],                                                 // second chunk missing
			name + "=3." + sess.value[:half] + "; " + name + "_1=" + sess.value[half:],       // third chunk missing
			name + "=2." + sess.value[:half] + "; " + name + "_1=" + sess.value[half:] + "A", // chunk altered
			name + "=1." + sess.value,
			name + "=02." + sess.value[:half] + "; " + name + "_1=" + sess.value[half:],
		} {
			res := raw(h, api)
			atkNo5xx(t, res, "chunk count")
			if res.reachedNext && !strings.HasPrefix(h, name+"=02.") {
				t.Fatalf("served with cookies %q", truncateForLog(h))
			}
		}
	})
	t.Run("the session of another app with the same cookie name and secret", func(t *testing.T) {
		// The operator gave both apps the same cookie_name and
		// cookie_secret: keys derived per client still keep them apart.
		other := newITEnv(t, func(h *OIDCAuth) { h.CookieName = "shared" })
		mine := newITEnv(t, func(h *OIDCAuth) { h.CookieName = "shared" })
		ob := other.browser()
		ob.mustLogin("/private")
		moved := mine.browser()
		moved.cookies = ob.clone().cookies
		expectAPI401(t, moved.get("/private", api), "session of another app")
		// And the state cookie of a login at the other app.
		pending := other.browser()
		code, state := atkPendingLogin(other, pending)
		moved.cookies = pending.clone().cookies
		res := moved.get(itCallbackURL(code, state), nav)
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("callback with another app's state cookie: status %d", res.StatusCode)
		}
		mine.expectNoSession(res, "another app's state cookie")
	})
	t.Run("session fixation", func(t *testing.T) {
		// The attacker signs in to his own account and plants its session
		// cookie (three chunks) in the victim's browser; the victim then
		// signs in: the login replaces it, and the attacker's copy is
		// still only the attacker's.
		f := newITEnv(t)
		f.op.SetUser("mallory", "m@evil.example", "")
		f.op.Set(func(s *oidctest.Script) {
			s.IDClaims = func(grant string, c map[string]any) {
				if c["sub"] == "mallory" {
					c["padding"] = randomString(6000) // a large, incompressible session: three chunks
				}
			}
		})
		attacker := f.browser()
		attacker.mustLogin("/private")
		planted := attacker.clone()
		if _, ok := planted.cookie(f.sessionCookieName() + "_2"); !ok {
			t.Fatal("the attacker's session is not in three chunks")
		}
		f.op.SetUser("user-1", "user1@example.com", "")
		victim := f.browser()
		victim.cookies = attacker.clone().cookies
		res := victim.get("/auth/login?return_to=/private", nav)
		code := f.op.Authorize(res.location())
		q, _ := url.Parse(res.location())
		res = victim.get(itCallbackURL(code, q.Query().Get("state")), nav)
		expectRedirectTo(t, res, "/private", "victim's login")
		newValue := atkSessionCookie(f, res)
		old, _ := planted.cookie(f.sessionCookieName())
		if newValue == "" || newValue == old.value {
			t.Fatal("the login did not replace the planted session cookie")
		}
		for _, n := range []string{f.sessionCookieName() + "_1", f.sessionCookieName() + "_2"} {
			if c := res.setCookie(n); c == nil || c.MaxAge >= 0 {
				t.Errorf("chunk %s of the planted session not expired", n)
			}
		}
		if got := victim.get("/private", api); !got.reachedNext || got.user != "user-1" {
			t.Fatalf("victim after login: status %d user %q", got.StatusCode, got.user)
		}
		if got := planted.get("/private", api); !got.reachedNext || got.user != "mallory" {
			t.Fatalf("the attacker's copy: status %d user %q, want still mallory's", got.StatusCode, got.user)
		}
	})
}

// atkReturnToBypasses are return_to values that browsers read as another
// origin or a script, one per known trick.
var atkReturnToBypasses = []string{
	"//evil.example", "//evil.example/x", `/\evil.example`, `\/evil.example`, `/\/evil.example`,
	"/%09/evil.example", "/\t/evil.example", "/%2F%2Fevil.example", "/%2f/evil.example", "/%5Cevil.example",
	"/%5C%5Cevil.example", "https:evil.example", "https://evil.example", "http:/evil.example",
	"javascript:alert(1)", "JaVaScRiPt:alert(1)", "/javascript:alert(1)", "data:text/html,x",
	"@evil.example", "/@evil.example", "evil.example", "app.test.evil.example", ".evil.example",
	"https://app.test.evil.example/", "https://app.test@evil.example/", "//app.test@evil.example",
	"/\r\n/evil.example", "/%0d%0a/evil.example", "/..//evil.example", "/.//evil.example",
	"/a/../..//evil.example", "///evil.example", "////evil.example", " //evil.example", "\t//evil.example",
	"/%E3%80%82evil.example", "//evil%E3%80%82example", "/%00/evil.example",
}

// atkSameSite reports whether a Location stays on app.test when a browser
// follows it (after dropping tabs and newlines and reading '\' as '/').
func atkSameSite(loc string) bool {
	clean := strings.NewReplacer("\t", "", "\n", "", "\r", "", `\`, "/").Replace(strings.TrimSpace(loc))
	u, err := url.Parse(clean)
	if err != nil {
		return false
	}
	base, _ := url.Parse("http://" + itHost + "/some/page")
	res := base.ResolveReference(u)
	return res.Scheme == "http" && res.Host == itHost
}

// TestAttackOpenRedirects: neither login_path's return_to, nor the page
// first asked for, nor anything sent to logout_path can send the browser
// to another origin.
func TestAttackOpenRedirects(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.PostLogoutRedirectURI = "/goodbye" })
	for _, rt := range atkReturnToBypasses {
		t.Run("return_to "+rt, func(t *testing.T) {
			b := e.browser()
			res := b.get("/auth/login?return_to="+url.QueryEscape(rt), nav)
			atkNo5xx(t, res, "login")
			if res.StatusCode == http.StatusBadRequest {
				return
			}
			if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.location(), e.op.URL+"/authorize?") {
				t.Fatalf("status %d location %q", res.StatusCode, res.location())
			}
			code := e.op.Authorize(res.location())
			u, _ := url.Parse(res.location())
			res = b.get(itCallbackURL(code, u.Query().Get("state")), nav)
			if res.StatusCode != http.StatusFound || !atkSameSite(res.location()) {
				t.Fatalf("after login: status %d location %q leaves the site", res.StatusCode, res.location())
			}
		})
	}
	t.Run("page first asked for", func(t *testing.T) {
		for _, p := range []string{"//evil.example/x", "///evil.example", "/%2F%2Fevil.example", "//evil.example/%2e%2e"} {
			b := e.browser()
			req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/", nil)
			req.URL.Path, req.URL.RawPath, req.RequestURI = p, "", p
			if u, err := url.Parse(p); err == nil && u.Host == "" {
				req.URL.Path = u.Path
			}
			res := b.do(req, nav)
			if res.StatusCode != http.StatusFound {
				t.Fatalf("%s: status %d", p, res.StatusCode)
			}
			code := e.op.Authorize(res.location())
			u, _ := url.Parse(res.location())
			res = b.get(itCallbackURL(code, u.Query().Get("state")), nav)
			if res.StatusCode != http.StatusFound || !atkSameSite(res.location()) {
				t.Fatalf("%s: after login, location %q leaves the site", p, res.location())
			}
		}
	})
	t.Run("logout parameters", func(t *testing.T) {
		b := e.browser()
		b.mustLogin("/private")
		for _, q := range []string{
			"post_logout_redirect_uri=https://evil.example/", "return_to=//evil.example", "redirect_uri=https://evil.example",
			"next=https://evil.example", "redirect=//evil.example", "state=x&id_token_hint=forged", "client_id=evil",
		} {
			res := b.clone().get("/auth/logout?"+q, nav)
			if res.StatusCode != http.StatusFound {
				t.Fatalf("%s: status %d", q, res.StatusCode)
			}
			u, err := url.Parse(res.location())
			if err != nil || u.Scheme+"://"+u.Host+u.Path != e.op.URL+"/logout" {
				t.Fatalf("%s: logout goes to %q", q, res.location())
			}
			lq := u.Query()
			if lq.Get("post_logout_redirect_uri") != "http://"+itHost+"/goodbye" || lq.Get("client_id") != e.op.ClientID {
				t.Fatalf("%s: end-session parameters %v", q, lq)
			}
			if strings.Contains(res.location(), "evil") || lq.Get("id_token_hint") == "forged" {
				t.Fatalf("%s: a request parameter reached the end-session URL: %q", q, res.location())
			}
		}
	})
}

// atkForgedHeaders are identity headers a client may try to forge: every
// documented prefix, in several cases, with '_' for '-', repeated.
var atkForgedHeaders = map[string][]string{
	"X-Auth-User": {"mallory"}, "X-AUTH-EMAIL": {"m@evil.example"}, "x-auth-request-user": {"mallory"},
	"X_Auth_User": {"mallory"}, "x_auth_user_id": {"mallory"}, "X-Auth-User-Id": {"mallory", "second"},
	"X-Oidc-Sub": {"mallory"}, "X_OIDC_ACCESS_TOKEN": {"forged"}, "X-Forwarded-User": {"mallory"},
	"X_Forwarded_Email": {"m@evil.example"}, "X-Forwarded-Groups": {"admin"}, "X-Forwarded-Preferred-Username": {"mallory"},
	"Remote-User": {"mallory"}, "remote_user": {"mallory"}, "X-Remote-User": {"mallory"}, "X-User": {"mallory"},
	"X-User-Email": {"m@evil.example"}, "X-Userinfo": {"e30"}, "X-Email": {"m@evil.example"}, "X_EMAIL": {"m@evil.example"},
}

// atkServeHeaders runs req through the handler and returns the headers the
// next handler received (nil if it was not reached).
func atkServeHeaders(t *testing.T, h *OIDCAuth, b *itBrowser, req *http.Request) (http.Header, *httptest.ResponseRecorder) {
	t.Helper()
	for k, v := range atkForgedHeaders {
		req.Header[k] = append([]string(nil), v...)
	}
	if b != nil {
		for _, c := range b.cookies {
			if itPathMatches(c.path, req.URL.Path) {
				req.AddCookie(&http.Cookie{Name: c.name, Value: c.value})
			}
		}
	}
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	var seen http.Header
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = r.Header.Clone()
		w.WriteHeader(http.StatusOK)
		return nil
	}))
	if err != nil {
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode >= 500 {
			t.Fatalf("handler error %v", err)
		}
	}
	return seen, rec
}

func atkCheckNoForged(t *testing.T, seen http.Header, what string) {
	t.Helper()
	if seen == nil {
		t.Fatalf("%s: the next handler was not reached", what)
	}
	for k, vs := range seen {
		for _, v := range vs {
			if v == "mallory" || v == "m@evil.example" || v == "admin" || v == "forged" || v == "e30" || v == "second" {
				t.Errorf("%s: forged header %s: %s reached the next handler", what, k, v)
			}
		}
	}
}

// TestAttackForgedIdentityHeaders: client-sent identity headers never
// reach the next handler, whatever authenticated the request.
func TestAttackForgedIdentityHeaders(t *testing.T) {
	t.Parallel()
	e, b := refreshEnv(t, nil)
	get := func(kind string) *http.Request {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
		if kind == nav {
			req.Header.Set("Accept", "text/html")
			req.Header.Set("Sec-Fetch-Mode", "navigate")
		} else {
			req.Header.Set("Accept", "application/json")
		}
		return req
	}
	seen, _ := atkServeHeaders(t, e.h, b, get(nav))
	atkCheckNoForged(t, seen, "session, navigation")
	seen, _ = atkServeHeaders(t, e.h, b, get(api))
	atkCheckNoForged(t, seen, "session, API call")
	post := httptest.NewRequest(http.MethodPost, "http://"+itHost+"/private", strings.NewReader("a=1"))
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	seen, _ = atkServeHeaders(t, e.h, b, post)
	atkCheckNoForged(t, seen, "session, POST")

	e.clock.Advance(61 * time.Second)
	seen, rec := atkServeHeaders(t, e.h, b, get(api))
	atkCheckNoForged(t, seen, "session refreshed on this request")
	if e.op.Grants("refresh_token") != 1 || len(rec.Result().Cookies()) == 0 {
		t.Fatalf("no refresh happened (grants %d)", e.op.Grants("refresh_token"))
	}

	t.Run("bearer token and pass_access_token", func(t *testing.T) {
		t.Parallel()
		be := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{}; h.PassAccessToken = true })
		be.browser().mustLogin("/private") // discovery and keys
		now := be.clock.Now()
		tok := be.op.ActiveKey().Sign(map[string]any{
			"iss": be.op.Issuer, "aud": []string{be.op.ClientID}, "sub": "api-client",
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		}, "at+jwt")
		req := get(api)
		req.Header.Set("Authorization", "Bearer "+tok)
		seen, _ := atkServeHeaders(t, be.h, nil, req)
		atkCheckNoForged(t, seen, "bearer token")
		if seen.Get("Authorization") != "Bearer "+tok {
			t.Errorf("Authorization upstream = %q", truncateForLog(seen.Get("Authorization")))
		}
	})
}

// TestAttackPathAndMethodTricks: variants of the auth paths are protected
// paths (they never serve content without a session), and no method or
// request shape gets protected content without a session.
func TestAttackPathAndMethodTricks(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	paths := []string{
		"/auth/callback/", "//auth/callback", "/auth/callback;x", "/AUTH/CALLBACK", "/auth/callback%00",
		"/auth/callback/../private", "/auth/login/", "/auth/login/../../private", "/auth//login", "/auth/logout/x",
		"/auth/backchannel-logout/", "/auth/session/", "/auth/session;x", "/Auth/Session", "/auth/%2e%2e/private",
		"/./private", "/private/.", "/auth/callback%2F..%2Fprivate",
	}
	for _, p := range paths {
		for _, kind := range []string{nav, api} {
			req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/", nil)
			req.URL.Path, req.URL.RawPath, req.RequestURI = p, "", p
			if u, err := url.Parse(p); err == nil {
				req.URL.Path, req.URL.RawPath = u.Path, u.RawPath
			}
			res := e.browser().do(req, kind)
			atkNo5xx(t, res, p)
			if res.reachedNext || res.StatusCode == http.StatusOK {
				t.Errorf("%s (%s): status %d, reached next %v", p, kind, res.StatusCode, res.reachedNext)
			}
		}
	}
	// An encoded auth path is the auth path itself: handled, never served.
	res := e.browser().get("/auth/%63allback?code=x&state=y", nav)
	if res.reachedNext || res.StatusCode != http.StatusBadRequest {
		t.Errorf("/auth/%%63allback: status %d, reached next %v", res.StatusCode, res.reachedNext)
	}

	shapes := map[string]func() *http.Request{
		"HEAD": func() *http.Request { return httptest.NewRequest(http.MethodHead, "http://"+itHost+"/private", nil) },
		"OPTIONS preflight": func() *http.Request {
			r := httptest.NewRequest(http.MethodOptions, "http://"+itHost+"/private", nil)
			r.Header.Set("Origin", "https://evil.example")
			r.Header.Set("Access-Control-Request-Method", "DELETE")
			r.Header.Set("Sec-Fetch-Mode", "cors")
			return r
		},
		"OPTIONS *": func() *http.Request {
			r := httptest.NewRequest(http.MethodOptions, "http://"+itHost+"/", nil)
			r.RequestURI, r.URL.Path = "*", "*"
			return r
		},
		"If-None-Match": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
			r.Header.Set("If-None-Match", `"abc", *`)
			r.Header.Set("If-Modified-Since", time.Now().UTC().Format(http.TimeFormat))
			return r
		},
		"Range": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
			r.Header.Set("Range", "bytes=0-10")
			r.Header.Set("If-Range", `"abc"`)
			return r
		},
		"WebSocket": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Sec-WebSocket-Version", "13")
			r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			r.Header.Set("Origin", "https://evil.example")
			return r
		},
		"WebSocket from a browser": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
			r.Header.Set("Connection", "keep-alive, Upgrade")
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Sec-WebSocket-Version", "13")
			r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			r.Header.Set("Sec-Fetch-Mode", "websocket")
			r.Header.Set("Sec-Fetch-Dest", "websocket")
			return r
		},
		"h2c upgrade": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/private", nil)
			r.Header.Set("Connection", "Upgrade, HTTP2-Settings")
			r.Header.Set("Upgrade", "h2c")
			r.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
			return r
		},
		"TRACE": func() *http.Request { return httptest.NewRequest(http.MethodTrace, "http://"+itHost+"/private", nil) },
		"PROPFIND": func() *http.Request {
			return httptest.NewRequest("PROPFIND", "http://"+itHost+"/private", strings.NewReader("<x/>"))
		},
		"DELETE": func() *http.Request { return httptest.NewRequest(http.MethodDelete, "http://"+itHost+"/private", nil) },
	}
	for name, mk := range shapes {
		for _, kind := range []string{"", nav} {
			res := e.browser().do(mk(), kind)
			atkNo5xx(t, res, name)
			if res.reachedNext || (res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusFound) {
				t.Errorf("%s (%q): status %d, reached next %v; want 401 or 302", name, kind, res.StatusCode, res.reachedNext)
			}
			if strings.Contains(res.body, "protected content") {
				t.Errorf("%s: protected content in the body", name)
			}
		}
	}
}

// TestAttackBackchannelBodies: logout tokens only count in a form body
// of bounded size; a validly signed token in the URL is refused.
func TestAttackBackchannelBodies(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.SetUser("user-1", "user1@example.com", "sid-1")
	b := e.browser()
	b.mustLogin("/private")
	post := func(target, ctype string, body io.Reader) *itResult {
		req := httptest.NewRequest(http.MethodPost, "http://"+itHost+target, body)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return serveIT(e.h, req)
	}
	valid := e.logoutToken(nil)
	expectBackchannelRefused(t, post("/auth/backchannel-logout?logout_token="+url.QueryEscape(valid), "application/x-www-form-urlencoded", strings.NewReader("")), "token in the query")
	expectBackchannelRefused(t, post("/auth/backchannel-logout?logout_token="+url.QueryEscape(valid), "", nil), "token in the query, no body")
	expectBackchannelRefused(t, post("/auth/backchannel-logout", "text/plain", strings.NewReader("logout_token="+url.QueryEscape(valid))), "text/plain")
	expectBackchannelRefused(t, post("/auth/backchannel-logout", "application/x-www-form-urlencoded; charset=\"", strings.NewReader("logout_token="+url.QueryEscape(valid))), "broken media type")
	expectBackchannelRefused(t, post("/auth/backchannel-logout", "application/x-www-form-urlencoded", strings.NewReader("logout_token="+url.QueryEscape(valid)+"&logout_token=")), "token twice")
	expectServed(t, b.get("/private", api), "session after the refused bodies")

	// A 20 MB body without a length is not read past the limit.
	var read atomic.Int64
	endless := io.MultiReader(strings.NewReader("logout_token="), readerFunc(func(p []byte) (int, error) {
		if read.Load() > 20<<20 {
			return 0, io.EOF
		}
		for i := range p {
			p[i] = 'a'
		}
		read.Add(int64(len(p)))
		return len(p), nil
	}))
	res := post("/auth/backchannel-logout", "application/x-www-form-urlencoded", endless)
	expectBackchannelRefused(t, res, "20 MB body")
	if n := read.Load(); n > 1<<20 {
		t.Fatalf("read %d bytes of a body limited to %d", n, maxLogoutBody)
	}
	expectServed(t, b.get("/private", api), "session after the refused bodies")
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestAttackLogoutRacesRefresh: an RP logout made while a refresh of the
// same session is under way is not undone by the refresh: the request
// that refreshed gets no session, and no copy of the cookies works after.
func TestAttackLogoutRacesRefresh(t *testing.T) {
	t.Parallel()
	hold, started, release := oidctest.Hold("refresh_token")
	e, b := refreshEnv(t, func(s *oidctest.Script) { s.Token = hold })
	refresher, logout, later := b.clone(), b.clone(), b.clone()
	e.clock.Advance(61 * time.Second)
	done := make(chan *itResult)
	go func() { done <- refresher.get("/private", api) }()
	<-started
	res := logout.get("/auth/logout", nav)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("logout: status %d", res.StatusCode)
	}
	release()
	raced := <-done
	expectAPI401(t, raced, "request whose refresh overlapped the logout")
	e.expectNoSession(raced, "request whose refresh overlapped the logout")
	expectAPI401(t, later.get("/private", api), "copy of the cookies after the logout")
	expectAPI401(t, refresher.get("/private", api), "the refreshing browser after the logout")
	if n := e.op.Grants("refresh_token"); n != 1 {
		t.Fatalf("refresh grants %d, want 1", n)
	}
}

// TestAttackSecretsNeverLogged: a full life cycle, with every failure the
// handler logs, at Debug level: no token, code, client secret, cookie
// secret or cookie value appears in any log message or field.
func TestAttackSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	e := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{} })
	e.h.logger = zap.New(core)
	e.h.wire()
	e.op.SetUser("user-1", "user1@example.com", "sid-1")
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = time.Minute })

	var mu sync.Mutex
	secrets := map[string]string{"client secret": e.op.ClientSecret, "cookie secret": itCookieSecret}
	add := func(what, v string) {
		mu.Lock()
		defer mu.Unlock()
		if len(v) >= 8 {
			secrets[what+" "+fmt.Sprint(len(secrets))] = v
		}
	}
	harvest := func(b *itBrowser, res *itResult) {
		idToken, access, refresh := e.op.Issued()
		add("access token", access)
		add("refresh token", refresh)
		add("ID token", idToken)
		if b != nil {
			for _, c := range b.cookies {
				add("cookie "+c.name, c.value)
			}
		}
		if res != nil {
			for _, c := range res.Cookies() {
				add("set-cookie "+c.Name, c.Value)
			}
		}
	}
	login := func(b *itBrowser) *itResult {
		loc, q := b.startLogin("/private")
		code := e.op.Authorize(loc)
		add("code", code)
		add("state", q.Get("state"))
		add("nonce", q.Get("nonce"))
		res := b.get(itCallbackURL(code, q.Get("state")), nav)
		harvest(b, res)
		return res
	}

	// Login, use, refresh, logout with the ID token hint.
	b := e.browser()
	expectRedirectTo(t, login(b), "/private", "login")
	expectServed(t, b.get("/private", api), "session")
	e.clock.Advance(61 * time.Second)
	expectServed(t, b.get("/private", api), "refreshed session")
	harvest(b, nil)
	res := b.get("/auth/logout", nav)
	harvest(b, res)

	// A refused refresh.
	b2 := e.browser()
	login(b2)
	e.op.Set(func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			if grant != "refresh_token" {
				return false
			}
			oidctest.TokenError(w, http.StatusBadRequest, "invalid_grant", "refresh token revoked")
			return true
		}
	})
	e.clock.Advance(61 * time.Second)
	expectAPI401(t, b2.get("/private", api), "refused refresh")

	// Bad tokens at login: a forged ID token, then a token endpoint error
	// that echoes the request.
	e.op.Set(func(s *oidctest.Script) {
		s.Token = nil
		s.SignID = func(c map[string]any) string {
			tok := oidctest.NewRSAKey("key-1", 1).Sign(c, "JWT")
			add("forged ID token", tok)
			return tok
		}
	})
	if res := login(e.browser()); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("forged ID token: status %d", res.StatusCode)
	}
	e.op.Set(func(s *oidctest.Script) {
		s.SignID = nil
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			_ = r.ParseForm()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `{"echo":%q}`, r.PostForm.Encode())
			return true
		}
	})
	if res := login(e.browser()); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("token endpoint 500: status %d", res.StatusCode)
	}
	e.op.Set(func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			w.Header().Set("Content-Type", "text/plain")
			_ = r.ParseForm()
			io.WriteString(w, "not json "+r.PostForm.Get("code"))
			return true
		}
	})
	if res := login(e.browser()); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("garbage token response: status %d", res.StatusCode)
	}
	e.op.Set(func(s *oidctest.Script) { s.Token = nil })

	// An error callback, a bad state, a forged session cookie.
	eb := e.browser()
	_, q := eb.startLogin("/private")
	add("state", q.Get("state"))
	eb.get("/auth/callback?error=access_denied&error_description=denied&state="+q.Get("state"), nav)
	eb.get("/auth/callback?code=some-code-value-here&state="+q.Get("state")+"x", nav)
	forged := e.browser()
	forged.cookies["/\x00"+e.sessionCookieName()] = itCookie{name: e.sessionCookieName(), value: "AQ" + strings.Repeat("x", 120), path: "/"}
	forged.get("/private", api)
	add("forged cookie", "AQ"+strings.Repeat("x", 120))

	// A refused and an accepted back-channel logout; a refused bearer token.
	bad := oidctest.NewRSAKey("key-1", 2).Sign(e.logoutClaims(nil), "logout+jwt")
	add("bad logout token", bad)
	e.postLogout(bad)
	good := e.logoutToken(nil)
	add("logout token", good)
	if res := e.postLogout(good); res.StatusCode != http.StatusOK {
		t.Fatalf("logout token: status %d", res.StatusCode)
	}
	bearer := oidctest.NewRSAKey("key-1", 3).Sign(map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "x", "iat": 1, "exp": 2}, "at+jwt")
	add("bearer token", bearer)
	req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	e.browser().do(req, api)

	entries := logs.All()
	if len(entries) < 8 {
		t.Fatalf("only %d log entries: the logger was not used", len(entries))
	}
	for _, entry := range entries {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range entry.Context {
			f.AddTo(enc)
		}
		text := entry.Message + " " + fmt.Sprint(enc.Fields)
		for what, v := range secrets {
			parts := []string{v}
			if strings.Count(v, ".") == 2 { // a JWT: its signature alone is a secret
				parts = append(parts, v[strings.LastIndexByte(v, '.')+1:])
			}
			for _, p := range parts {
				if len(p) >= 8 && strings.Contains(text, p) {
					t.Errorf("log entry %q holds the %s", truncateForLog(text), what)
				}
			}
		}
	}
}
