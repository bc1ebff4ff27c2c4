package oidcauth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/assert"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(adminJWKS{})
}

// UpstreamJWT makes the handler pass a signed identity assertion to the
// next handler: a short ES256 JWT in a request header, so an upstream can
// check who the user is with any JWT library, against the JWKS served at
// jwks_path, instead of trusting plain headers. Off unless configured.
type UpstreamJWT struct {
	// The request header that carries the assertion. A client's own
	// header of that name (in any spelling) is always removed.
	// Default: `X-Auth-Assertion`.
	Header string `json:"header,omitempty"`

	// The assertion's `aud`: the upstream it is meant for. Upstreams must
	// check it, so that an assertion for one cannot be replayed to
	// another. Default: the request's scheme://host.
	Audience string `json:"audience,omitempty"`

	// How long an assertion is valid. An assertion is reused for a
	// session until a quarter of this (at most 30s) is left. Between `5s`
	// and `1h`. Default: `1m`.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`

	// The user's claims copied into the assertion, as the IdP gave them
	// (an absent claim is left out). `iss`, `aud`, `iat`, `exp`, `jti` and
	// `sid` are always set. Default: `sub email name sid oid roles`.
	Claims []string `json:"claims,omitempty"`

	// An EC P-256 private key in PEM (PKCS#8 or SEC 1) that signs every
	// assertion, for operators who manage their own keys; `{env.*}` and
	// `{file.*}` placeholders are expanded. Further keys (private or
	// public) are only published in the JWKS: the next key before it
	// signs, the previous one until its assertions have expired. In the
	// Caddyfile they follow the first: `signing_key <current> <other>...`.
	// Default: a generated key pair kept in Caddy's storage and rotated.
	SigningKey string `json:"signing_key,omitempty"`

	// The operator's keys published besides signing_key (see there).
	// Default: none.
	PublishedKeys []string `json:"published_keys,omitempty"`

	// How long each generated key signs. The next key is in the JWKS one
	// period before it starts to sign, and a key stays there for the
	// assertion lifetime plus a minute (or a quarter of the period, when
	// shorter) after it stopped. At least `10s`
	// and twice the lifetime. Ignored with signing_key. Default: `168h`.
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`
}

const (
	defaultAssertionHeader   = "X-Auth-Assertion"
	defaultAssertionLifetime = time.Minute
	defaultKeyRotation       = 7 * 24 * time.Hour
	defaultJWKSPath          = "/jwks.json"
	maxCachedAssertions      = 100_000
)

var defaultAssertionClaims = []string{"sub", "email", "name", "sid", "oid", "roles"}

// keyrings holds the signing keys in use, by storage name (or, for an
// operator's keys, by their hash). Pooled so that a reload keeps the ring
// in memory and the admin API can list every handler's keys.
var keyrings = caddy.NewUsagePool()

type pooledKeyring struct{ *assert.Keyring }

// Destruct implements caddy.Destructor; a ring holds nothing to close.
func (pooledKeyring) Destruct() error { return nil }

// upstreamJWTState is a handler's runtime state for upstream_jwt.
type upstreamJWTState struct {
	lifetime time.Duration
	rotation time.Duration
	ring     *assert.Keyring
	ringKey  string
	cache    *assert.Cache
	signing  *ecdsa.PrivateKey
	publish  []*ecdsa.PublicKey
}

// expand expands the placeholders of the operator's keys; nil (off) has
// none.
func (u *UpstreamJWT) expand(repl *caddy.Replacer) error {
	if u == nil {
		return nil
	}
	var err error
	if u.SigningKey, err = expandSecret(repl, "upstream_jwt: signing_key", u.SigningKey); err != nil {
		return err
	}
	for i := range u.PublishedKeys {
		if u.PublishedKeys[i], err = expandSecret(repl, "upstream_jwt: signing_key", u.PublishedKeys[i]); err != nil {
			return err
		}
	}
	return nil
}

// checkUpstreamJWT validates upstream_jwt and jwks_path and fills in
// their defaults.
func (m *OIDCAuth) checkUpstreamJWT(prefix string) error {
	u := m.UpstreamJWT
	if u == nil {
		if m.JWKSPath != "" {
			return errors.New("jwks_path: needs upstream_jwt (there are no keys to publish without it)")
		}
		m.ujwt = nil
		return nil
	}
	if m.JWKSPath == "" {
		m.JWKSPath = prefix + defaultJWKSPath
	}
	if u.Header == "" {
		u.Header = defaultAssertionHeader
	}
	if !validHeaderName(u.Header) {
		return fmt.Errorf("upstream_jwt: header %q is not a header name", u.Header)
	}
	switch strings.ToLower(u.Header) {
	case "cookie", "host", "content-length", "transfer-encoding", "connection":
		return fmt.Errorf("upstream_jwt: header %q cannot carry the assertion", u.Header)
	}
	if u.Audience != "" && strings.ContainsAny(u.Audience, " \t\r\n") {
		return fmt.Errorf("upstream_jwt: audience %q must not contain spaces", u.Audience)
	}
	st := &upstreamJWTState{lifetime: time.Duration(u.Lifetime), rotation: time.Duration(u.KeyRotation)}
	if st.lifetime == 0 {
		st.lifetime = defaultAssertionLifetime
	}
	if st.lifetime < 5*time.Second || st.lifetime > time.Hour {
		return fmt.Errorf("upstream_jwt: lifetime must be between 5s and 1h, got %s", st.lifetime)
	}
	if st.rotation == 0 {
		st.rotation = defaultKeyRotation
	}
	if st.rotation < 10*time.Second || st.rotation < 2*st.lifetime {
		return fmt.Errorf("upstream_jwt: key_rotation must be at least 10s and twice the lifetime (%s), got %s", st.lifetime, st.rotation)
	}
	if len(u.Claims) == 0 {
		u.Claims = append([]string(nil), defaultAssertionClaims...)
	}
	for _, c := range u.Claims {
		if c == "" {
			return errors.New("upstream_jwt: claims: empty claim name")
		}
		if assert.Reserved(c) {
			return fmt.Errorf("upstream_jwt: claims: %q is set by the handler itself", c)
		}
	}
	if len(u.PublishedKeys) > 0 && u.SigningKey == "" {
		return errors.New("upstream_jwt: published_keys: needs signing_key (the key that signs)")
	}
	if u.SigningKey != "" {
		priv, _, err := assert.ParsePEM([]byte(u.SigningKey))
		if err == nil && priv == nil {
			err = errors.New("a public key cannot sign; give the private key")
		}
		if err != nil {
			return fmt.Errorf("upstream_jwt: signing_key: %v", err)
		}
		st.signing = priv
		for i, p := range u.PublishedKeys {
			priv, pub, err := assert.ParsePEM([]byte(p))
			if err != nil {
				return fmt.Errorf("upstream_jwt: signing_key: key %d: %v", i+2, err)
			}
			if priv != nil {
				pub = &priv.PublicKey
			}
			st.publish = append(st.publish, pub)
		}
	}
	if old := m.ujwt; old != nil {
		// Validate runs after Provision: keep what Provision set up.
		st.ring, st.ringKey, st.cache = old.ring, old.ringKey, old.cache
	}
	m.ujwt = st
	return nil
}

// acquire acquires the handler's key ring from the pool (u's settings,
// logger and clock); nil (off) has none. A generated ring is loaded from
// (or made in) storage on first use only.
func (st *upstreamJWTState) acquire(ctx caddy.Context, u *UpstreamJWT, logger *zap.Logger, now func() time.Time) error {
	if st == nil {
		return nil
	}
	st.cache = assert.NewCache(maxCachedAssertions)
	if st.signing != nil {
		sum := sha256.Sum256([]byte(strings.Join(append([]string{u.SigningKey}, u.PublishedKeys...), "\x00")))
		st.ringKey = "static\x00" + hex.EncodeToString(sum[:])
	} else {
		st.ringKey = "generated\x00" + strconv.FormatInt(int64(st.rotation/time.Second), 10)
	}
	val, _, err := keyrings.LoadOrNew(st.ringKey, func() (caddy.Destructor, error) {
		if st.signing != nil {
			r, err := assert.NewStatic(st.signing, st.publish...)
			return pooledKeyring{r}, err
		}
		// One ring per rotation period, shared by every handler (and
		// every instance) on this storage.
		name := "oidc_auth/upstream_jwt/keys_" + strconv.FormatInt(int64(st.rotation/time.Second), 10) + "s.json"
		r, err := assert.NewRotating(ctx.Storage(), name, assert.Options{
			Period: st.rotation,
			// Past its last signature a key stays published while its
			// assertions can still be presented, with time to spare for
			// clock skew.
			Retain:  st.lifetime + min(time.Minute, st.rotation/4),
			Now:     now,
			OnError: func(err error) { logger.Error("rotating upstream_jwt signing keys", zap.Error(err)) },
		})
		return pooledKeyring{r}, err
	})
	if err != nil {
		return fmt.Errorf("upstream_jwt: %w", err)
	}
	st.ring = val.(pooledKeyring).Keyring
	return nil
}

// release gives the key ring back to the pool; nil (off) has none.
func (st *upstreamJWTState) release() error {
	if st == nil || st.ring == nil {
		return nil
	}
	_, err := keyrings.Delete(st.ringKey)
	return err
}

// passAssertion sets the request's assertion header (a client's own
// removed first) and returns the assertion for {http.auth.user.jwt}.
func (m *OIDCAuth) passAssertion(r *http.Request, p *principal) (string, error) {
	st, u := m.ujwt, m.UpstreamJWT
	stripHeader(r.Header, u.Header)
	// Keyed by what the issuer and default audience are made of, so that
	// a cache hit builds no string.
	key := assert.CacheKey{Audience: u.Audience, Host: r.Host, TLS: r.TLS != nil}
	if p.session != nil {
		key.Session = p.session.ID
	} else {
		key.Session = "bearer\x00" + p.accessToken
	}
	now := m.now()
	// The identity is built once per access token: a refreshed session
	// gets a new assertion with its new claims.
	tok, _, ok := st.cache.Get(key, p.id, now)
	if !ok {
		k, err := st.ring.Signing(r.Context())
		if err != nil {
			m.logger.Error("no key to sign the upstream assertion", zap.Error(err))
			return "", caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("upstream_jwt: %w", err))
		}
		site := siteOrigin(r)
		aud := u.Audience
		if aud == "" {
			aud = site
		}
		exp := now.Add(st.lifetime)
		if p.session != nil {
			// Never past the session's own end.
			if end := time.Unix(p.session.Created, 0).Add(m.sessionLifetime); end.Before(exp) {
				exp = end
			}
		}
		a := assert.Assertion{Issuer: site, Audience: aud, IssuedAt: now, Expiry: exp, Claims: map[string]any{}}
		if sid, _ := p.id.claims["sid"].(string); sid != "" {
			a.SID = sid
		}
		if p.session != nil && p.session.SID != "" {
			a.SID = p.session.SID
		}
		for _, c := range u.Claims {
			if v, ok := p.id.claims[c]; ok && v != nil {
				a.Claims[c] = v
			}
		}
		if tok, err = k.Sign(a); err != nil {
			return "", caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("upstream_jwt: signing: %w", err))
		}
		st.cache.Put(key, p.id, tok, now, exp)
	}
	r.Header.Set(u.Header, tok)
	return tok, nil
}

// assertionPlaceholder serves {http.auth.user.jwt}.
func assertionPlaceholder(tok string) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		if key == placeholderPrefix+"jwt" {
			return tok, true
		}
		return nil, false
	}
}

// siteOrigin is the request's scheme://host: the assertion's issuer.
func siteOrigin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// serveJWKS answers jwks_path with the public keys, for anyone: upstreams
// fetch it without a session.
func (m *OIDCAuth) serveJWKS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET to fetch the keys.", "")
	}
	doc, etag, maxAge, err := m.ujwt.ring.JWKS(r.Context())
	if err != nil {
		m.logger.Error("cannot load the upstream_jwt keys", zap.Error(err))
		return m.answer.fail(w, r, http.StatusServiceUnavailable, "The signing keys are unavailable. Please try again in a moment.", "")
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge/time.Second)))
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc))
	return nil
}

// adminJWKS serves GET /oidc_auth/jwks on Caddy's admin endpoint: the
// public keys of every upstream_jwt key ring loaded, in one set.
type adminJWKS struct{}

// CaddyModule returns the Caddy module information.
func (adminJWKS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.oidc_auth_jwks",
		New: func() caddy.Module { return new(adminJWKS) },
	}
}

// Routes implements caddy.AdminRouter.
func (adminJWKS) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/oidc_auth/jwks", Handler: caddy.AdminHandlerFunc(serveAdminJWKS)}}
}

func serveAdminJWKS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	seen := map[string]bool{}
	var failed error
	keyrings.Range(func(_, v any) bool {
		keys, err := v.(pooledKeyring).PublicKeys(r.Context())
		if err != nil {
			failed = err
			return false
		}
		for _, k := range keys {
			if !seen[k.KeyID] {
				seen[k.KeyID] = true
				set.Keys = append(set.Keys, k)
			}
		}
		return true
	})
	if failed != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("loading upstream_jwt keys: %w", failed)}
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(set)
}

// validHeaderName reports whether name is an HTTP token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

var _ caddy.AdminRouter = adminJWKS{}

// parseUpstreamJWT reads the upstream_jwt block (syntax only; Validate
// checks the values).
func parseUpstreamJWT(d *caddyfile.Dispenser) (*UpstreamJWT, error) {
	u := &UpstreamJWT{}
	seen := map[string]bool{}
	for d.NextBlock(1) {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("upstream_jwt: %s given more than once", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("upstream_jwt: %s takes one value", opt)
			}
			return args[0], nil
		}
		var err error
		switch opt {
		case "header":
			u.Header, err = one()
		case "audience":
			u.Audience, err = one()
		case "lifetime", "key_rotation":
			var v string
			if v, err = one(); err != nil {
				break
			}
			dur, perr := caddy.ParseDuration(v)
			if perr != nil {
				return nil, d.Errf("upstream_jwt: %s: %v", opt, perr)
			}
			if opt == "lifetime" {
				u.Lifetime = caddy.Duration(dur)
			} else {
				u.KeyRotation = caddy.Duration(dur)
			}
		case "claims":
			if len(args) == 0 {
				return nil, d.Errf("upstream_jwt: claims needs at least one claim")
			}
			u.Claims = args
		case "signing_key":
			if len(args) == 0 {
				return nil, d.Errf("upstream_jwt: signing_key needs a value")
			}
			u.SigningKey, u.PublishedKeys = args[0], args[1:]
		default:
			return nil, d.Errf("upstream_jwt: unrecognized option %q", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return u, nil
}
