package cookie

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Session is what the session cookie holds. The codec checks only that ID,
// Subject and AccessToken are present; the tokens, the session's age and
// its revocation are the caller's to check.
type Session struct {
	ID           string          `json:"i"`           // random; names this session in the revocation store
	Subject      string          `json:"s"`           // sub of the ID token
	SID          string          `json:"d,omitempty"` // sid of the ID token, for back-channel logout
	Created      int64           `json:"c"`           // unix seconds of the login; caps the session's age
	Seen         int64           `json:"l,omitempty"` // unix seconds of the last recorded activity (idle_timeout)
	Issued       int64           `json:"t,omitempty"` // unix seconds the tokens were obtained; 0: at Created
	AccessToken  string          `json:"a"`
	RefreshToken string          `json:"r,omitempty"`
	Expiry       int64           `json:"e"` // access token expiry, unix seconds
	RefreshAt    int64           `json:"f"` // refresh from this time on, unix seconds
	Claims       json.RawMessage `json:"m,omitempty"`

	// OldKey reports a session sealed with a previous cookie secret: the
	// caller should rewrite it. It is not part of the cookie.
	OldKey bool `json:"-"`
}

// SessionCookieName returns the name of the session cookie (its first
// chunk) for r's scheme.
func (c *Codec) SessionCookieName(r *http.Request) string {
	return cookieName(r, c.name, "/")
}

// IDTokenCookieName returns the name of the ID token cookie, which is only
// sent to logoutPath, for r's scheme.
func (c *Codec) IDTokenCookieName(r *http.Request, logoutPath string) string {
	return cookieName(r, c.name+"_idt", logoutPath)
}

// ReadSession returns the request's session, or ErrInvalid when there is
// none, it does not decrypt or it lacks an ID, subject or access token. It
// never says which check failed. The returned session may be shared with
// other requests and must not be modified.
func (c *Codec) ReadSession(r *http.Request) (*Session, error) {
	name := c.SessionCookieName(r)
	// A session seen before is found without parsing every cookie of the
	// request (net/http's Cookie allocates and checks each byte of all of
	// them): only a value that once opened is in the cache, and such a
	// value is a strict base64url token that r.Cookie would return too.
	if v, ok := firstCookieValue(r.Header, name); ok {
		if s := c.cached(v); s != nil {
			return s, nil
		}
	}
	v, _, ok := readChunked(r, name)
	if !ok {
		return nil, ErrInvalid
	}
	if s := c.cached(v); s != nil {
		return s, nil
	}
	s, err := c.decodeSession(v)
	if err != nil {
		return nil, err
	}
	v = strings.Clone(v) // not the request's header, which the cache would keep
	c.cacheMu.Lock()
	if len(c.cache) >= maxCachedSessions {
		for k := range c.cache { // map order is random: drops about half
			if len(c.cache) < maxCachedSessions/2 {
				break
			}
			delete(c.cache, k)
		}
	}
	c.cache[cacheKey(v)] = cachedSession{value: v, s: s}
	c.cacheMu.Unlock()
	return s, nil
}

// cacheKey is the end of a sealed value: its GCM tag, in base64url.
func cacheKey(v string) string {
	return v[max(0, len(v)-22):]
}

// cached returns the decoded session of the sealed value v, when it was
// decoded before.
func (c *Codec) cached(v string) *Session {
	c.cacheMu.RLock()
	e, ok := c.cache[cacheKey(v)]
	c.cacheMu.RUnlock()
	if !ok || e.value != v {
		return nil
	}
	return e.s
}

func (c *Codec) decodeSession(v string) (*Session, error) {
	sealed, old, err := c.openKey(PurposeSession, v)
	if err != nil {
		return nil, err
	}
	s, err := c.packer.unpack(sealed)
	if err != nil || s.ID == "" || s.Subject == "" || s.AccessToken == "" {
		return nil, ErrInvalid
	}
	s.OldKey = old
	return s, nil
}

// WriteSession seals s with the current secret and sets it, in chunks when
// it is large, with the given max age; chunks of an older, longer session
// that r carried are expired. It fails when the session needs more chunks
// than browsers are asked to keep.
func (c *Codec) WriteSession(w http.ResponseWriter, r *http.Request, s *Session, maxAge int) error {
	packed, err := c.packer.pack(s)
	if err != nil {
		return err
	}
	return writeChunked(w, r, c.SessionCookieName(r), "/", c.Seal(PurposeSession, packed), maxAge)
}

// WriteIDToken seals the ID token into a cookie that only logoutPath
// receives, for the ID token hint of an RP-initiated logout.
func (c *Codec) WriteIDToken(w http.ResponseWriter, r *http.Request, logoutPath, idToken string, maxAge int) error {
	return writeChunked(w, r, c.IDTokenCookieName(r, logoutPath), logoutPath, c.Seal(PurposeIDToken, []byte(idToken)), maxAge)
}

// ReadIDToken returns the ID token cookie's token, or "" when the request
// has none that opens. The token itself is not checked.
func (c *Codec) ReadIDToken(r *http.Request, logoutPath string) string {
	v, _, ok := readChunked(r, c.IDTokenCookieName(r, logoutPath))
	if !ok {
		return ""
	}
	plain, err := c.Open(PurposeIDToken, v)
	if err != nil {
		return ""
	}
	return string(plain)
}

// ClearSession expires the session cookies (and the ID token cookie, when
// the request was sent to the logout path and so carries it).
func (c *Codec) ClearSession(w http.ResponseWriter, r *http.Request, logoutPath string) {
	clearChunked(w, r, c.SessionCookieName(r), "/")
	clearChunked(w, r, c.IDTokenCookieName(r, logoutPath), logoutPath)
}
