package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Clock is a test clock shared by a Provider and the code under test. It
// starts at the wall clock, truncated to the second, and moves only when
// Advance is called. It is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to the current time.
func NewClock() *Clock { return &Clock{t: time.Now().Truncate(time.Second)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Key is a signing key of a Provider: a private key, its kid and the JWS
// algorithm it signs with.
type Key struct {
	KID     string
	Alg     jose.SignatureAlgorithm
	Private crypto.Signer
}

var (
	rsaKeysOnce sync.Once
	rsaKeys     []*rsa.PrivateKey
)

// RSAKey returns one of four 2048-bit RSA keys made once per test binary
// (making them under -race is slow); i picks one, modulo four. Keys with
// different i modulo four differ.
func RSAKey(i int) *rsa.PrivateKey {
	rsaKeysOnce.Do(func() {
		var wg sync.WaitGroup
		rsaKeys = make([]*rsa.PrivateKey, 4)
		for j := range rsaKeys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				rsaKeys[j] = k
			}()
		}
		wg.Wait()
	})
	return rsaKeys[i%len(rsaKeys)]
}

// NewRSAKey returns an RS256 Key with the given kid over RSAKey(i).
func NewRSAKey(kid string, i int) *Key {
	return &Key{KID: kid, Alg: jose.RS256, Private: RSAKey(i)}
}

// NewECKey returns an ES256 Key with the given kid over a fresh P-256 key.
func NewECKey(kid string) *Key {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Key{KID: kid, Alg: jose.ES256, Private: k}
}

// Public returns the key's public half as a JWKS entry (use "sig").
func (k *Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.KID, Algorithm: string(k.Alg), Use: "sig"}
}

// Sign returns a compact JWS of claims signed with the key, with its kid
// in the header and typ as the header's typ (left out when empty).
func (k *Key) Sign(claims map[string]any, typ string) string {
	return SignJWS(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.Private, KeyID: k.KID}}, claims, typ)
}

// SignJWS returns a compact JWS of claims signed with key, with typ as the
// header's typ (left out when empty). It panics on an unusable key.
func SignJWS(key jose.SigningKey, claims map[string]any, typ string) string {
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(key, opts)
	if err != nil {
		panic(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return out
}

// SignNone returns an unsigned JWT (`alg: none`) of claims, with kid in
// the header when it is not empty.
func SignNone(claims map[string]any, kid string) string {
	hdr := map[string]any{"alg": "none", "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	h, _ := json.Marshal(hdr)
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// SignHS256 signs claims with a symmetric key, as an attacker who knows
// the client secret (or the IdP's public key) would.
func SignHS256(claims map[string]any, secret []byte, kid string) string {
	return SignJWS(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: kid}}, claims, "JWT")
}

// PublicKeyPEM returns the PEM encoding of an RSA public key: the bytes an
// HS256/RS256 confusion attack uses as the HMAC key.
func PublicKeyPEM(k *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// AccessTokenHash returns the at_hash of an access token for RS256 and
// ES256 (the left half of its SHA-256, base64url).
func AccessTokenHash(access string) string {
	sum := sha256.Sum256([]byte(access))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// BackchannelLogoutEvent is the event a logout token carries (OpenID
// Connect Back-Channel Logout 1.0, section 2.4).
const BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutClaims returns the claims of a back-channel logout token from iss
// to the client aud for sub and sid (left out when empty), with the given
// jti, issued at now and expiring two minutes later. Sign them with typ
// "logout+jwt".
func LogoutClaims(iss, aud, sub, sid, jti string, now time.Time) map[string]any {
	c := map[string]any{
		"iss":    iss,
		"aud":    aud,
		"iat":    now.Unix(),
		"exp":    now.Add(2 * time.Minute).Unix(),
		"jti":    jti,
		"sub":    sub,
		"events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
	}
	if sid != "" {
		c["sid"] = sid
	}
	return c
}
