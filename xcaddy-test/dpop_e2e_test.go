//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// dpopProof signs a DPoP proof (RFC 9449) with key; token empty: no ath
// (a proof for the token endpoint).
func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, htu, token string) string {
	t.Helper()
	opts := (&jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: key.Public()}}}).WithType("dpop+jwt")
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"jti": randomJTI(t), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func randomJTI(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestDPoPE2E: the real IdP issues a DPoP-bound token (cnf.jkt) to a client
// that proves its key at the token endpoint; Caddy accepts it with a valid
// proof under the DPoP scheme, and answers 401 with a DPoP challenge to a
// replayed proof, a proof by another key, a proof for another URL, no proof,
// and the bound token sent as a plain bearer token. `dpop required` refuses
// unbound tokens.
func TestDPoPE2E(t *testing.T) {
	t.Parallel()
	port, portReq := freePort(t), freePort(t)
	app, appReq := origin(port), origin(portReq)
	c := mcpClient(port)
	i := startIdP(t, idpOptions{profile: "resource-server", clients: []idpClient{c}})
	site := func(port int, extra ...string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	respond "dpop {http.auth.user.id}"
}
`, port, oidcBlock(i.Issuer, "mcp-client", "mcp-secret", append([]string{"bearer " + origin(port)}, extra...)...))
	}
	startSites(t, app+"/.well-known/oauth-protected-resource", site(port, "dpop"), site(portReq, "dpop required"))
	b := newBrowser(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	tok, typ := resourceToken(t, b, i.Issuer, "mcp-client", "mcp-secret", app, "mcp:read",
		url.Values{"DPoP": {dpopProof(t, key, "POST", i.Issuer+"/oauth/token", "")}})
	cnf, _ := jwtClaims(t, tok)["cnf"].(map[string]any)
	if !strings.EqualFold(typ, "DPoP") || cnf["jkt"] == nil {
		t.Fatalf("the IdP issued token_type %q with cnf %v, want a DPoP-bound token", typ, cnf)
	}
	call := func(scheme, target string, proofs ...string) *page {
		h := apiCall.Clone()
		h.Set("Authorization", scheme+" "+tok)
		for _, p := range proofs {
			h.Add("DPoP", p)
		}
		return b.do(http.MethodPost, target, h, strings.NewReader(`{}`))
	}
	refused := func(what string, p *page, code string) {
		t.Helper()
		www := p.Header.Get("WWW-Authenticate")
		if p.Status != http.StatusUnauthorized || !strings.HasPrefix(www, "DPoP ") || !strings.Contains(www, `error="`+code+`"`) {
			t.Errorf("%s: want 401 with a DPoP challenge error=%q, got %q %s", what, code, www, p)
		}
	}

	proof := dpopProof(t, key, "POST", app+"/mcp", tok)
	if p := call("DPoP", app+"/mcp", proof); p.Status != http.StatusOK || p.Body != "dpop mcp-client" {
		t.Fatalf("valid proof: %s (WWW-Authenticate %q)", p, p.Header.Get("WWW-Authenticate"))
	}
	refused("replayed proof", call("DPoP", app+"/mcp", proof), "invalid_dpop_proof")
	refused("proof by another key", call("DPoP", app+"/mcp", dpopProof(t, other, "POST", app+"/mcp", tok)), "invalid_dpop_proof")
	refused("proof for another URL", call("DPoP", app+"/mcp", dpopProof(t, key, "POST", app+"/other", tok)), "invalid_dpop_proof")
	refused("no proof", call("DPoP", app+"/mcp"), "invalid_dpop_proof")
	refused("bound token as a bearer token", call("Bearer", app+"/mcp"), "invalid_token")

	// dpop required: an unbound token of the same IdP is refused; a bound one passes.
	plain, _ := resourceToken(t, b, i.Issuer, "mcp-client", "mcp-secret", appReq, "mcp:read", nil)
	h := apiCall.Clone()
	h.Set("Authorization", "Bearer "+plain)
	refused("unbound token where dpop is required", b.do(http.MethodGet, appReq+"/mcp", h, nil), "invalid_token")
	tok, _ = resourceToken(t, b, i.Issuer, "mcp-client", "mcp-secret", appReq, "mcp:read",
		url.Values{"DPoP": {dpopProof(t, key, "POST", i.Issuer+"/oauth/token", "")}})
	if p := call("DPoP", appReq+"/mcp", dpopProof(t, key, "POST", appReq+"/mcp", tok)); p.Status != http.StatusOK {
		t.Errorf("bound token where dpop is required: %s", p)
	}
	p := b.do(http.MethodGet, appReq+"/.well-known/oauth-protected-resource", apiCall, nil)
	if !strings.Contains(p.Body, `"dpop_bound_access_tokens_required":true`) {
		t.Errorf("metadata with dpop required: %s", p.Body)
	}
}
