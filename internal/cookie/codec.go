// Package cookie reads and writes the cookies of one app: it seals values
// with AES-256-GCM under a key derived per issuer and client ID (with older
// secrets accepted for opening during a rotation), splits large values into
// chunks, names cookies with the __Host-/__Secure- prefixes on HTTPS, and
// encodes the session and login-state payloads, the login-loop counter and
// the removal of these cookies from requests that go on upstream.
//
// It knows nothing of OIDC: it does not check tokens, revocations or
// session lifetimes, and it has no clock of its own (the caller passes the
// time where one is needed).
package cookie

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
)

// Cookie layout. Values are base64url(version || nonce || AES-256-GCM
// ciphertext); the additional data binds each value to its purpose, so a
// state cookie cannot be replayed as a session cookie and vice versa. The
// key is derived per issuer and client ID, so a cookie of one app is
// rejected by another even when they share a cookie_secret.
const cookieVersion = 1

// The purposes this package seals its cookies for. A caller that seals
// values of its own with Seal must use other purposes.
const (
	PurposeSession = "session"
	PurposeIDToken = "id_token"
	PurposeState   = "state"
)

// ErrInvalid is returned for a value that is missing, malformed, sealed
// with an unknown key or for another purpose, or whose payload is not
// valid. It never says which check failed.
var ErrInvalid = errors.New("invalid cookie")

// Codec encrypts, decrypts, chunks and names one app's cookies. It is safe
// for concurrent use.
type Codec struct {
	aead     cipher.AEAD   // from the current secret: seals and opens
	previous []cipher.AEAD // from older secrets: only open, during a rotation
	name     string        // base name, without a __Host-/__Secure- prefix
	packer   *packer       // the session payload's format

	// Decoded sessions by the end of their sealed value (the GCM tag,
	// different for every value sealed), so a session seen before costs no
	// decryption or parsing; a hit is one whose whole value is the same.
	// The entries are shared and must not be modified. The cache lives and
	// dies with the codec, so a reload that changes the secrets starts it
	// afresh.
	cacheMu sync.RWMutex
	cache   map[string]cachedSession
}

type cachedSession struct {
	value string // the whole sealed value
	s     *Session
}

// maxCachedSessions bounds the decoded-session cache (a few KB each).
const maxCachedSessions = 20_000

// New returns a codec whose key is derived from secret, issuer and
// clientID, and whose cookies are named after name (given without a
// __Host-/__Secure- prefix). Values sealed with a previous secret still
// open, and are reported so the caller can rewrite them. New does not
// check the secrets' length or the name's syntax: the caller validates its
// configuration.
func New(secret []byte, issuer, clientID, name string, previous ...[]byte) (*Codec, error) {
	c := &Codec{
		name:   name,
		packer: newPacker(issuer, clientID),
		cache:  map[string]cachedSession{},
	}
	var err error
	if c.aead, err = deriveAEAD(secret, issuer, clientID); err != nil {
		return nil, err
	}
	for _, p := range previous {
		aead, err := deriveAEAD(p, issuer, clientID)
		if err != nil {
			return nil, err
		}
		c.previous = append(c.previous, aead)
	}
	return c, nil
}

// Name returns the base name of the app's cookies, without a prefix.
func (c *Codec) Name() string { return c.name }

func deriveAEAD(secret []byte, issuer, clientID string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, []byte("oidc_auth cookies v1"), issuer+"\x00"+clientID, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext with the current secret for purpose, and returns
// it as a cookie-safe base64url value. Each call uses a fresh random nonce.
func (c *Codec) Seal(purpose string, plaintext []byte) string {
	ns := c.aead.NonceSize()
	buf := make([]byte, 1+ns, 1+ns+len(plaintext)+c.aead.Overhead())
	buf[0] = cookieVersion
	if _, err := rand.Read(buf[1 : 1+ns]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	buf = c.aead.Seal(buf, buf[1:1+ns], plaintext, []byte(purpose))
	return base64.RawURLEncoding.EncodeToString(buf)
}

// Open decrypts a value made by Seal for the same purpose, with the current
// or a previous secret. Any other value gives ErrInvalid.
func (c *Codec) Open(purpose, value string) ([]byte, error) {
	out, _, err := c.openKey(purpose, value)
	return out, err
}

// openKey decrypts a value; old reports that an older secret was needed,
// so the caller can rewrite the value with the current one.
func (c *Codec) openKey(purpose, value string) (out []byte, old bool, err error) {
	// Strict: one sealed value has exactly one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(value)
	ns := c.aead.NonceSize()
	if err != nil || len(raw) < 1+ns+c.aead.Overhead() || raw[0] != cookieVersion {
		return nil, false, ErrInvalid
	}
	nonce, ct := raw[1:1+ns], raw[1+ns:]
	if len(c.previous) == 0 {
		// Decrypt in place: one allocation less on every request.
		if out, err = c.aead.Open(ct[:0], nonce, ct, []byte(purpose)); err != nil {
			return nil, false, ErrInvalid
		}
		return out, false, nil
	}
	// A failed Open may clobber its output, so no in-place attempts here.
	if out, err = c.aead.Open(nil, nonce, ct, []byte(purpose)); err == nil {
		return out, false, nil
	}
	for _, aead := range c.previous {
		if out, err = aead.Open(nil, nonce, ct, []byte(purpose)); err == nil {
			return out, true, nil
		}
	}
	return nil, false, ErrInvalid
}

// cookieName returns the name as sent to the browser: with the __Host-
// prefix on HTTPS for cookies of path "/", __Secure- for other paths.
func cookieName(r *http.Request, base, path string) string {
	if r.TLS == nil {
		return base
	}
	if path == "/" {
		return "__Host-" + base
	}
	return "__Secure-" + base
}

func newCookie(r *http.Request, name, path, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	}
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
