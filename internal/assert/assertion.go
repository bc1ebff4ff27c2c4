package assert

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// reserved are the claims an assertion sets itself.
var reserved = map[string]bool{"iss": true, "aud": true, "iat": true, "nbf": true, "exp": true, "jti": true}

// Reserved reports whether the assertion sets claim itself, so that it
// cannot be copied from the user's claims.
func Reserved(claim string) bool { return reserved[claim] }

// Assertion is what one signed assertion says.
type Assertion struct {
	Issuer   string
	Audience string
	IssuedAt time.Time
	Expiry   time.Time
	SID      string         // the session's sid; omitted when empty
	Claims   map[string]any // copied as they are (arrays stay arrays)
}

// Sign signs a as a JWT with k: iss, aud, iat, exp, a fresh jti, sid and
// the claims.
func (k *Key) Sign(a Assertion) (string, error) {
	if k.signer == nil {
		return "", errors.New("key is published only and cannot sign")
	}
	claims := make(map[string]any, len(a.Claims)+6)
	for name, v := range a.Claims {
		if !reserved[name] {
			claims[name] = v
		}
	}
	if a.SID != "" {
		claims["sid"] = a.SID
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims["iss"] = a.Issuer
	claims["aud"] = a.Audience
	claims["iat"] = jwt.NewNumericDate(a.IssuedAt)
	claims["exp"] = jwt.NewNumericDate(a.Expiry)
	claims["jti"] = base64.RawURLEncoding.EncodeToString(jti)
	return jwt.Signed(k.signer).Claims(claims).Serialize()
}

// CacheKey names a cached assertion: one per session, audience and site
// (the issuer is the site: its host and whether it is served over TLS).
type CacheKey struct {
	Session, Audience, Host string
	TLS                     bool
}

// Cache keeps signed assertions until shortly before they expire, so the
// hot path signs once per session and audience per lifetime, not per
// request. Tag ties an entry to what it was made from (the user's
// identity): another tag is a miss.
type Cache struct {
	mu      sync.RWMutex
	entries map[CacheKey]cacheEntry
	max     int
}

type cacheEntry struct {
	token     string
	tag       any
	expiry    time.Time
	refreshAt time.Time
}

// NewCache returns a cache of at most max assertions.
func NewCache(max int) *Cache {
	return &Cache{entries: map[CacheKey]cacheEntry{}, max: max}
}

// Get returns the cached assertion for key made from tag, while it is
// before its refresh time.
func (c *Cache) Get(key CacheKey, tag any, now time.Time) (token string, expiry time.Time, ok bool) {
	c.mu.RLock()
	e, hit := c.entries[key]
	c.mu.RUnlock()
	if !hit || e.tag != tag || !now.Before(e.refreshAt) {
		return "", time.Time{}, false
	}
	return e.token, e.expiry, true
}

// Put caches token (expiring at expiry, issued at iat) for key. It is
// served until a quarter of its lifetime (at most 30 s) is left, so an
// upstream always gets an assertion with time to spare.
func (c *Cache) Put(key CacheKey, tag any, token string, iat, expiry time.Time) {
	margin := min(expiry.Sub(iat)/4, 30*time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !iat.Before(e.refreshAt) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // map order is random: drops about half
			if len(c.entries) < c.max/2 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = cacheEntry{token: token, tag: tag, expiry: expiry, refreshAt: expiry.Add(-margin)}
}

// Len is the number of cached assertions.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
