package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func ath(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// sign makes a proof: claims signed by signKey, with embedKey's public
// JWK in the header (the same key unless a test swaps it).
func sign(t *testing.T, signKey, embedKey *ecdsa.PrivateKey, typ string, claims map[string]any) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: embedKey.Public(), Algorithm: string(jose.ES256)}
	opts := (&jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"jwk": jwk}}).WithType(jose.ContentType(typ))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signKey}, opts)
	if err != nil {
		t.Fatal(err)
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

func TestVerify(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	win := Window{Past: 2 * time.Minute, Future: 30 * time.Second}
	req := Request{Method: "POST", URL: "https://mcp.example.com/mcp?x=1", AccessToken: "tok-123"}
	base := func() map[string]any {
		return map[string]any{"jti": "j-1", "htm": "POST", "htu": "https://mcp.example.com/mcp", "iat": now.Unix(), "ath": ath("tok-123")}
	}
	with := func(k string, v any) map[string]any {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hmac, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithType("dpop+jwt"))
	hs, _ := hmac.Sign([]byte(`{"jti":"j","htm":"POST","htu":"https://mcp.example.com/mcp"}`))
	hsProof, _ := hs.CompactSerialize()

	for _, tt := range []struct {
		name  string
		proof string
		ok    bool
	}{
		{"valid", sign(t, key, key, "dpop+jwt", base()), true},
		{"htu in another spelling", sign(t, key, key, "dpop+jwt", with("htu", "HTTPS://MCP.Example.com:443/%6Dcp#frag")), true},
		{"iat a little in the future", sign(t, key, key, "dpop+jwt", with("iat", now.Unix()+20)), true},
		{"typ JWT", sign(t, key, key, "JWT", base()), false},
		{"signed by another key", sign(t, other, key, "dpop+jwt", base()), false},
		{"HMAC", hsProof, false},
		{"htm GET", sign(t, key, key, "dpop+jwt", with("htm", "GET")), false},
		{"htm lower case", sign(t, key, key, "dpop+jwt", with("htm", "post")), false},
		{"htu other path", sign(t, key, key, "dpop+jwt", with("htu", "https://mcp.example.com/other")), false},
		{"htu other host", sign(t, key, key, "dpop+jwt", with("htu", "https://evil.example.com/mcp")), false},
		{"htu http", sign(t, key, key, "dpop+jwt", with("htu", "http://mcp.example.com/mcp")), false},
		{"htu missing", sign(t, key, key, "dpop+jwt", with("htu", nil)), false},
		{"iat old", sign(t, key, key, "dpop+jwt", with("iat", now.Unix()-300)), false},
		{"iat far future", sign(t, key, key, "dpop+jwt", with("iat", now.Unix()+300)), false},
		{"iat missing", sign(t, key, key, "dpop+jwt", with("iat", nil)), false},
		{"iat a string", sign(t, key, key, "dpop+jwt", with("iat", "1800000000")), false},
		{"ath of another token", sign(t, key, key, "dpop+jwt", with("ath", ath("tok-456"))), false},
		{"ath missing", sign(t, key, key, "dpop+jwt", with("ath", nil)), false},
		{"jti missing", sign(t, key, key, "dpop+jwt", with("jti", nil)), false},
		{"not a JWS", "abc.def.ghi", false},
		{"empty", "", false},
		{"too large", strings.Repeat("a", MaxProofLen+1), false},
	} {
		p, err := Verify(tt.proof, req, now, win)
		if tt.ok != (err == nil) {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if err == nil {
			tp, _ := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
			if p.JKT != base64.RawURLEncoding.EncodeToString(tp) || p.JTI != "j-1" {
				t.Errorf("%s: proof %+v", tt.name, p)
			}
		}
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://A.example.com":              "https://a.example.com/",
		"https://a.example.com:443/x?y#z":    "https://a.example.com/x",
		"http://a.example.com:80/x":          "http://a.example.com/x",
		"http://127.0.0.1:8080/mcp":          "http://127.0.0.1:8080/mcp",
		"https://a.example.com/%7euser/%2fx": "https://a.example.com/~user/%2Fx",
		"http://[::1]:80/x":                  "http://[::1]/x",
		"https://a.example.com:8443/a%20b":   "https://a.example.com:8443/a%20b",
	} {
		got, err := NormalizeURL(in)
		if err != nil || got != want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/relative", "ftp://a.example.com/", "https://user@a.example.com/", "::"} {
		if _, err := NormalizeURL(bad); err == nil {
			t.Errorf("NormalizeURL(%q) accepted", bad)
		}
	}
}
