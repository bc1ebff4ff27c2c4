package oidcauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// dpopKey is a client's DPoP key in tests.
type dpopKey struct {
	t   *testing.T
	key *ecdsa.PrivateKey
}

func newDPoPKey(t *testing.T) *dpopKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopKey{t, k}
}

func (k *dpopKey) jkt() string {
	tp, err := (&jose.JSONWebKey{Key: k.key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		k.t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// proof signs a DPoP proof for method and url, bound to token.
func (k *dpopKey) proof(method, url, token, jti string, iat time.Time) string {
	jwk := jose.JSONWebKey{Key: k.key.Public()}
	opts := (&jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"jwk": jwk}}).WithType("dpop+jwt")
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key}, opts)
	if err != nil {
		k.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(token))
	b, _ := json.Marshal(map[string]any{"jti": jti, "htm": method, "htu": url, "iat": iat.Unix(), "ath": base64.RawURLEncoding.EncodeToString(sum[:])})
	jws, err := s.Sign(b)
	if err != nil {
		k.t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestDPoP: a token bound to a key (cnf.jkt) passes only under the DPoP
// scheme with a fresh, unused proof of that key for this request; every
// refusal is a 401 with a DPoP challenge.
func TestDPoP(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{} })
	now := e.clock.Now()
	key, other := newDPoPKey(t), newDPoPKey(t)
	token := func(jkt string) string {
		c := map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if jkt != "" {
			c["cnf"] = map[string]any{"jkt": jkt}
		}
		return e.op.ActiveKey().Sign(c, "at+jwt")
	}
	bound, plain := token(key.jkt()), token("")
	const target = "http://" + itHost + "/mcp"
	call := func(method, scheme, tok string, proofs ...string) *itResult {
		req := httptest.NewRequest(method, target+"?q=1", nil)
		req.Header.Set("Authorization", scheme+" "+tok)
		for _, p := range proofs {
			req.Header.Add("DPoP", p)
		}
		return e.browser().do(req, api)
	}
	refused := func(what string, res *itResult, code string) {
		t.Helper()
		www := res.Header.Get("WWW-Authenticate")
		if res.reachedNext || res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(www, "DPoP ") || !strings.Contains(www, `error="`+code+`"`) {
			t.Errorf("%s: status %d (next %v), WWW-Authenticate %q; want 401 DPoP %s", what, res.StatusCode, res.reachedNext, www, code)
		}
	}

	good := key.proof("POST", target, bound, "jti-1", now)
	expectServed(t, call("POST", "DPoP", bound, good), "valid proof")
	refused("replayed proof", call("POST", "DPoP", bound, good), "invalid_dpop_proof")
	refused("proof of another key", call("POST", "DPoP", bound, other.proof("POST", target, bound, "jti-2", now)), "invalid_dpop_proof")
	refused("no proof", call("POST", "DPoP", bound), "invalid_dpop_proof")
	refused("two proofs", call("POST", "DPoP", bound, key.proof("POST", target, bound, "jti-3", now), key.proof("POST", target, bound, "jti-4", now)), "invalid_dpop_proof")
	refused("proof for another method", call("POST", "DPoP", bound, key.proof("GET", target, bound, "jti-5", now)), "invalid_dpop_proof")
	refused("proof for another URL", call("POST", "DPoP", bound, key.proof("POST", "http://"+itHost+"/other", bound, "jti-6", now)), "invalid_dpop_proof")
	refused("proof for another token", call("POST", "DPoP", bound, key.proof("POST", target, plain, "jti-7", now)), "invalid_dpop_proof")
	refused("stale proof", call("POST", "DPoP", bound, key.proof("POST", target, bound, "jti-8", now.Add(-10*time.Minute))), "invalid_dpop_proof")
	refused("bound token as bearer", call("POST", "Bearer", bound), "invalid_token")
	refused("unbound token under DPoP", call("POST", "DPoP", plain, key.proof("POST", target, plain, "jti-9", now)), "invalid_token")
	expectServed(t, call("GET", "dpop", bound, key.proof("GET", "http://APP.test:80/mcp", bound, "jti-10", now)), "scheme in lower case, htu in another spelling")
	expectServed(t, call("GET", "Bearer", plain), "plain bearer token while dpop is not required")
}

// TestDPoPRequired: with `dpop required`, plain bearer tokens are refused
// and the metadata says so.
func TestDPoPRequired(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) {
		h.Bearer = &BearerConfig{}
		h.DPoP = &DPoPConfig{Required: true}
	})
	now := e.clock.Now()
	tok := e.op.ActiveKey().Sign(map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, "at+jwt")
	req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res := e.browser().do(req, api)
	if res.reachedNext || res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "DPoP ") {
		t.Errorf("plain bearer token with dpop required: status %d, WWW-Authenticate %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	// Without a token: both schemes are offered.
	res = e.browser().get("/mcp", api)
	if www := res.Header.Values("WWW-Authenticate"); res.StatusCode != http.StatusUnauthorized || len(www) != 2 ||
		!strings.HasPrefix(www[0], "Bearer ") || !strings.HasPrefix(www[1], "DPoP ") || !strings.Contains(www[1], `algs="ES256`) {
		t.Errorf("no token with dpop: status %d, WWW-Authenticate %q", res.StatusCode, www)
	}
	md := serveIT(e.h, httptest.NewRequest(http.MethodGet, "http://"+itHost+"/.well-known/oauth-protected-resource", nil))
	if !strings.Contains(md.body, `"dpop_bound_access_tokens_required":true`) || !strings.Contains(md.body, `"dpop_signing_alg_values_supported":["ES256"`) {
		t.Errorf("metadata: %s", md.body)
	}
	if err := (&OIDCAuth{DPoP: &DPoPConfig{}}).checkDPoPConfig(); err == nil || !strings.Contains(err.Error(), "dpop: needs bearer") {
		t.Errorf("dpop without bearer: %v", err)
	}
}

// TestDPoPBehindProxy: with protected_resource's resource set, a proof's
// htu names the public origin, not the one the request reached Caddy on.
func TestDPoPBehindProxy(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) {
		h.Bearer = &BearerConfig{}
		h.ProtectedResource = &ProtectedResourceConfig{Resource: "https://api.example.com/mcp"}
	})
	now := e.clock.Now()
	key := newDPoPKey(t)
	tok := e.op.ActiveKey().Sign(map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "cnf": map[string]any{"jkt": key.jkt()}}, "at+jwt")
	for htu, ok := range map[string]bool{"https://api.example.com/mcp": true, "http://" + itHost + "/mcp": false} {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/mcp", nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", key.proof("GET", htu, tok, "jti-"+htu, now))
		res := e.browser().do(req, api)
		if res.reachedNext != ok {
			t.Errorf("htu %s: status %d, served %v, want served %v", htu, res.StatusCode, res.reachedNext, ok)
		}
	}
}

// TestDPoPStoreDown: when the store cannot record a proof's jti, the
// request gets 503 (a replay could otherwise pass), never a 500.
func TestDPoPStoreDown(t *testing.T) {
	m := &OIDCAuth{logger: zap.NewNop()}
	_, ok, err := m.dpopRefusal(errors.New("dial tcp 127.0.0.1:6379: connection refused"))
	var he caddyhttp.HandlerError
	if ok || !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ok %v, err %#v; want a 503 handler error", ok, err)
	}
}
