// Package dpop checks DPoP proofs (RFC 9449) at a resource server: the
// proof JWT a client sends in the DPoP header to show that it holds the
// key a DPoP-bound access token is bound to.
//
// Verify makes the checks of RFC 9449 section 4.3 that need only the
// proof and the request; the caller compares the returned thumbprint with
// the token's cnf.jkt and keeps the jti to refuse replays (section 11.1).
// JWS parsing, signature checks and thumbprints are go-jose's.
package dpop

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Algs are the asymmetric signature algorithms accepted for proofs; never
// none or a MAC (section 4.3, steps 5 and 6).
var Algs = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512,
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

// AlgNames lists Algs for a challenge's algs parameter and the metadata.
func AlgNames() []string {
	out := make([]string, len(Algs))
	for i, a := range Algs {
		out[i] = string(a)
	}
	return out
}

// MaxProofLen bounds a proof; a real one is well under 2 KB (an RSA-4096
// key in its header included).
const MaxProofLen = 8 << 10

// Proof is a checked proof.
type Proof struct {
	JTI      string    // unique per proof; the caller refuses a second use
	IssuedAt time.Time // iat
	JKT      string    // the RFC 7638 SHA-256 thumbprint of the proof's key
}

// Request is what a proof must match.
type Request struct {
	Method      string // htm
	URL         string // htu: the request's absolute URL; query and fragment are ignored
	AccessToken string // ath: the token sent with the proof
}

// Window is how far a proof's iat may lie in the past (Past) or the
// future (Future, for clocks that differ a little).
type Window struct {
	Past, Future time.Duration
}

// Verify checks a proof for req at now.
func Verify(proof string, req Request, now time.Time, w Window) (*Proof, error) {
	if proof == "" || len(proof) > MaxProofLen {
		return nil, errors.New("proof missing or too large")
	}
	jws, err := jose.ParseSignedCompact(proof, Algs)
	if err != nil {
		return nil, fmt.Errorf("proof is not a JWS with an accepted algorithm: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("proof must have one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return nil, fmt.Errorf("proof typ %q, want dpop+jwt", typ)
	}
	key := h.JSONWebKey
	if key == nil || !key.Valid() || !key.IsPublic() {
		return nil, errors.New("proof header has no public jwk")
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, errors.New("proof signature does not verify with its jwk")
	}
	var c struct {
		JTI string          `json:"jti"`
		HTM string          `json:"htm"`
		HTU string          `json:"htu"`
		IAT json.RawMessage `json:"iat"`
		ATH string          `json:"ath"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("proof claims: %w", err)
	}
	if c.JTI == "" || len(c.JTI) > 256 {
		return nil, errors.New("proof jti missing or too long")
	}
	if c.HTM != req.Method {
		return nil, fmt.Errorf("proof htm %q does not match the method %s", c.HTM, req.Method)
	}
	want, err := NormalizeURL(req.URL)
	if err != nil {
		return nil, fmt.Errorf("request URL: %w", err)
	}
	got, err := NormalizeURL(c.HTU)
	if err != nil || got != want {
		return nil, fmt.Errorf("proof htu %q does not match the request URL %s", c.HTU, want)
	}
	// A JSON number, not a string that holds one.
	iat, err := strconv.ParseFloat(string(c.IAT), 64)
	if err != nil {
		return nil, errors.New("proof iat missing or not a number")
	}
	issued := time.Unix(int64(iat), 0)
	if issued.Before(now.Add(-w.Past)) || issued.After(now.Add(w.Future)) {
		return nil, fmt.Errorf("proof iat %d outside the accepted window", issued.Unix())
	}
	sum := sha256.Sum256([]byte(req.AccessToken))
	ath := base64.RawURLEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(ath)) != 1 {
		return nil, errors.New("proof ath does not match the access token")
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("proof jwk thumbprint: %w", err)
	}
	return &Proof{JTI: c.JTI, IssuedAt: issued, JKT: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// NormalizeURL brings an http(s) URL to the form in which htu values are
// compared (RFC 9449 section 4.3 step 9, RFC 3986 section 6): scheme and
// host in lower case, no default port, an empty path as "/", percent
// escapes of unreserved characters decoded, no query or fragment.
func NormalizeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" || strings.Contains(host, ":") {
		if port == "" {
			host = "[" + host + "]"
		} else {
			host = net.JoinHostPort(host, port)
		}
	}
	p := normalizeEscapes(u.EscapedPath())
	if p == "" {
		p = "/"
	}
	return scheme + "://" + host + p, nil
}

// normalizeEscapes decodes percent escapes of unreserved characters and
// writes the others with upper-case hex digits (RFC 3986 section 6.2.2).
func normalizeEscapes(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 <= len(p)-1 && ishex(p[i+1]) && ishex(p[i+2]) {
			c := unhex(p[i+1])<<4 | unhex(p[i+2])
			if unreserved(c) {
				b.WriteByte(c)
			} else {
				b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
			}
			i += 2
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
