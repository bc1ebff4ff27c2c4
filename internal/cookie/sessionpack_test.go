package cookie

import (
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// signedToken returns a JWT access token like oidc-provider's (RS256,
// at+jwt), with the usual claims.
func signedToken(t *testing.T, key any, alg jose.SignatureAlgorithm) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "5a0716561a4926a9"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(map[string]any{
		"jti": randomString(32), "sub": "usr_alice", "iat": 1796434019, "exp": 1796520419,
		"scope": "openid profile email offline_access", "client_id": testClientID,
		"iss": testIssuer, "aud": []string{testClientID}, "oid": "org_1",
		"roles": []string{"admin"}, "permissions": []string{"read", "write"},
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func packTestSession(at string) *Session {
	return &Session{
		ID: randomString(16), Subject: "usr_alice", SID: "sid-1", Created: 1796434019,
		AccessToken: at, RefreshToken: randomString(32), Expiry: 1796520419, RefreshAt: 1796520389,
		Claims: json.RawMessage(`{"email":"alice@example.com","email_verified":true,"name":"Alice Example","oid":"org_1"}`),
	}
}

// deflateV1 writes a session payload as the previous version did (deflate
// of the JSON, no dictionary, the access token as a string).
func deflateV1(t *testing.T, s *Session) []byte {
	t.Helper()
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteByte(sessionDeflated)
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = fw.Write(js)
	_ = fw.Close()
	return buf.Bytes()
}

// A JWT access token is packed as its decoded parts and comes back byte
// for byte; the sealed session is much smaller than the previous format.
func TestSessionPackedJWT(t *testing.T) {
	c := newTestCodec(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		at   string
	}{
		{"RS256", signedToken(t, rsaKey, jose.RS256)},
		{"ES256", signedToken(t, ecKey, jose.ES256)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := packTestSession(tc.at)
			packed, err := c.packer.pack(s)
			if err != nil {
				t.Fatal(err)
			}
			if packed[0] != sessionPacked {
				t.Fatalf("first byte %#x", packed[0])
			}
			if _, _, _, split := splitJWT(tc.at); !split {
				t.Fatal("a compact JWS was not split")
			}
			got, err := c.decodeSession(c.Seal(PurposeSession, packed))
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken != tc.at || got.RefreshToken != s.RefreshToken || got.ID != s.ID ||
				got.SID != "sid-1" || got.Expiry != s.Expiry || string(got.Claims) != string(s.Claims) {
				t.Fatalf("round trip changed the session:\n%+v\n%+v", got, s)
			}
			old := deflateV1(t, s)
			t.Logf("%s: packed %d bytes, previous format %d bytes", tc.name, len(packed), len(old))
			if tc.name == "RS256" && len(packed) > len(old)*85/100 {
				t.Errorf("packed session is %d bytes, not 15%% below the previous format's %d", len(packed), len(old))
			}
		})
	}
}

// Access tokens that are not a compact JWS whose parts re-encode exactly
// are kept as strings: opaque tokens, JWE, line breaks (which base64
// decoding skips), padding, a fourth part.
func TestSessionPackedOtherTokens(t *testing.T) {
	c := newTestCodec(t)
	b64 := base64.RawURLEncoding.EncodeToString
	hdr, pl, sig := b64([]byte(`{"alg":"RS256"}`)), b64([]byte(`{"sub":"x"}`)), b64([]byte("signature-bytes!"))
	for name, at := range map[string]string{
		"opaque":        "q16JibIw2WTOFDSfihsO66JOA6HqoxK7pitPCecnJDB",
		"JWE":           hdr + "." + pl + "." + sig + "." + sig + "." + sig,
		"line break":    hdr + ".\n" + pl + "." + sig,
		"padded":        base64.URLEncoding.EncodeToString([]byte(`{"alg":"RS256"}x`)) + "." + pl + "." + sig,
		"empty part":    hdr + ".." + sig,
		"not base64url": hdr + "." + pl + ".sig+/",
	} {
		if _, _, _, split := splitJWT(at); split {
			t.Errorf("%s: split", name)
		}
		s := packTestSession(at)
		packed, err := c.packer.pack(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.decodeSession(c.Seal(PurposeSession, packed))
		if err != nil || got.AccessToken != at {
			t.Errorf("%s: got %q, %v", name, got.AccessToken, err)
		}
	}
}

// Sessions written by earlier versions (plain JSON, deflated JSON) still
// open; malformed packed payloads and deflate bombs do not.
func TestSessionPackedFormats(t *testing.T) {
	c := newTestCodec(t)
	s := packTestSession(strings.Repeat("eyJhbGciOiJSUzI1NiJ9.", 40))
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for name, payload := range map[string][]byte{"deflated": deflateV1(t, s), "plain JSON": js} {
		got, err := c.decodeSession(c.Seal(PurposeSession, payload))
		if err != nil || got.AccessToken != s.AccessToken || got.Subject != "usr_alice" {
			t.Errorf("%s: decodeSession = %+v, %v", name, got, err)
		}
	}

	deflate := func(dict []byte, parts ...[]byte) []byte {
		var buf bytes.Buffer
		fw, _ := flate.NewWriterDict(&buf, flate.BestCompression, dict)
		for _, p := range parts {
			_, _ = fw.Write(p)
		}
		_ = fw.Close()
		return buf.Bytes()
	}
	packed := func(sig []byte, body ...[]byte) []byte {
		out := binary.AppendUvarint([]byte{sessionPacked}, uint64(len(sig)))
		return append(append(out, sig...), deflate(c.packer.dict, body...)...)
	}
	part := func(b string) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	good := `{"i":"id","s":"usr","c":1,"e":2,"f":2}`
	withAT := `{"i":"id","s":"usr","c":1,"a":"tok","e":2,"f":2}`
	if got, err := c.decodeSession(c.Seal(PurposeSession, packed([]byte("sig"), part("{}"), part("{}"), []byte(good)))); err != nil ||
		got.AccessToken != "e30.e30.c2ln" {
		t.Fatalf("hand-packed session: %+v, %v", got, err)
	}
	for name, payload := range map[string][]byte{
		"empty":                      {},
		"unknown format":             {0x07, 1, 2, 3},
		"signature and token string": packed([]byte("sig"), part("{}"), part("{}"), []byte(withAT)),
		"signature, empty header":    packed([]byte("sig"), part(""), part("{}"), []byte(good)),
		"parts without signature":    packed(nil, part("{}"), part(""), []byte(withAT)),
		"part longer than the body":  packed([]byte("sig"), binary.AppendUvarint(nil, 1<<20), []byte(good)),
		"signature past the end":     append(binary.AppendUvarint([]byte{sessionPacked}, 500), 1, 2, 3),
		"huge signature":             packed(bytes.Repeat([]byte{1}, maxSignature+1), part("{}"), part("{}"), []byte(good)),
		"bomb":                       packed(nil, part(""), part(""), bytes.Repeat([]byte{' '}, maxSessionInflate+10)),
		"deflated bomb":              append([]byte{sessionDeflated}, deflate(nil, bytes.Repeat([]byte{' '}, maxSessionInflate+10))...),
	} {
		if got, err := c.decodeSession(c.Seal(PurposeSession, payload)); err == nil {
			t.Errorf("%s: accepted as %+v", name, got)
		}
	}
}
