package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// testIdP serves one RSA key as a JWKS; the Client it returns has every
// endpoint configured, so nothing is discovered.
func testIdP(t *testing.T, now time.Time) (*Client, func(claims map[string]any, typ string) string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(srv.Close)
	clock := func() time.Time { return now }
	p := NewProvider(Config{Issuer: srv.URL, Now: clock, Overrides: Endpoints{
		Authorization: srv.URL + "/authorize", Token: srv.URL + "/token", JWKS: srv.URL + "/jwks",
	}})
	t.Cleanup(func() { _ = p.Destruct() })
	c := &Client{Provider: p, ID: "app", Secret: "secret", Now: clock}
	sign := func(claims map[string]any, typ string) string {
		opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, opts)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(claims)
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := jws.CompactSerialize()
		return raw
	}
	return c, sign
}

// TestClientChecks: what go-oidc leaves to the caller, per kind of token.
func TestClientChecks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c, sign := testIdP(t, now)
	iss := c.Provider.Issuer()
	base := func(extra map[string]any) map[string]any {
		m := map[string]any{"iss": iss, "aud": "app", "sub": "user-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	event := map[string]any{BackchannelEvent: map[string]any{}}
	logout := func(t *testing.T, raw string) error {
		_, err := c.VerifyLogoutToken(context.Background(), raw)
		return err
	}
	bearer := func(t *testing.T, raw string) error {
		_, sub, err := c.VerifyBearer(context.Background(), raw, func(aud []string) bool { return containsString(aud, "app") })
		if err == nil && sub != "user-1" {
			t.Errorf("sub %q", sub)
		}
		return err
	}
	initiation := func(t *testing.T, raw string) error {
		_, err := c.VerifyInitiation(context.Background(), raw)
		return err
	}
	access := func(t *testing.T, raw string) error {
		at, err := c.VerifyAccessToken(context.Background(), raw, "user-1")
		if err == nil && !at.ForClient {
			t.Error("an access token for the client is not marked ForClient")
		}
		return err
	}
	for _, tt := range []struct {
		name   string
		check  func(*testing.T, string) error
		claims map[string]any
		typ    string
		errHas string // empty: accepted
	}{
		{"logout token", logout, base(map[string]any{"jti": "j1", "events": event}), "logout+jwt", ""},
		{"logout token without jti", logout, base(map[string]any{"events": event}), "logout+jwt", "no jti"},
		{"logout token with a nonce", logout, base(map[string]any{"jti": "j2", "events": event, "nonce": "n"}), "logout+jwt", "has a nonce"},
		{"logout token with nonce null", logout, base(map[string]any{"jti": "j3", "events": event, "nonce": json.RawMessage("null")}), "logout+jwt", "has a nonce"},
		{"logout token too old", logout, base(map[string]any{"jti": "j4", "events": event, "iat": now.Add(-11 * time.Minute).Unix()}), "logout+jwt", "too old"},
		{"logout token without the event", logout, base(map[string]any{"jti": "j5"}), "logout+jwt", "back-channel logout event"},
		{"logout token of another typ", logout, base(map[string]any{"jti": "j6", "events": event}), "at+jwt", "not a logout token"},
		{"logout token for another client", logout, base(map[string]any{"jti": "j7", "events": event, "aud": "other"}), "logout+jwt", "audience"},
		{"bearer token", bearer, base(map[string]any{"client_id": "app"}), "at+jwt", ""},
		{"bearer ID token", bearer, base(map[string]any{"nonce": "n"}), "JWT", "not an access token"},
		{"bearer token without iat", bearer, base(map[string]any{"iat": nil}), "at+jwt", "no iat"},
		{"bearer token without sub", bearer, base(map[string]any{"sub": nil}), "at+jwt", "no sub"},
		{"bearer token for another audience", bearer, base(map[string]any{"aud": "other"}), "at+jwt", "not accepted"},
		{"initiation token", initiation, base(map[string]any{"aud": "anyone"}), "JWT", ""},
		{"initiation token without exp", initiation, base(map[string]any{"exp": nil}), "JWT", "expired"},
		{"initiation token of another issuer", initiation, base(map[string]any{"iss": "https://evil.example"}), "JWT", "issued by"},
		{"access token", access, base(nil), "at+jwt", ""},
		{"access token of another user", access, base(map[string]any{"sub": "user-2"}), "at+jwt", "sub differs"},
		{"access token with iat in the future", access, base(map[string]any{"iat": now.Add(time.Hour).Unix()}), "at+jwt", "in the future"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check(t, sign(tt.claims, tt.typ))
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Fatalf("err %v, want one saying %q", err, tt.errHas)
			}
		})
	}
}

// TestClientKeysUnavailable: a token the key set cannot check because the
// JWKS is out of reach is neither accepted nor refused: its error wraps
// ErrUnavailable.
func TestClientKeysUnavailable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c, sign := testIdP(t, now)
	raw := sign(map[string]any{"iss": c.Provider.Issuer(), "aud": "app", "sub": "u", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, "at+jwt")
	down := NewProvider(Config{Issuer: c.Provider.Issuer(), Now: c.Now, Overrides: Endpoints{
		Authorization: "http://127.0.0.1:1/a", Token: "http://127.0.0.1:1/t", JWKS: "http://127.0.0.1:1/jwks",
	}})
	t.Cleanup(func() { _ = down.Destruct() })
	c.Provider = down
	if _, err := c.VerifyAccessToken(context.Background(), raw, "u"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
	if st := down.Tracker().State(); !st.Down() || st.LastFailure.Endpoint != "jwks" {
		t.Errorf("tracker %+v, want the jwks endpoint failing", st)
	}
}
