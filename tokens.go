package oidcauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// providers holds one provider per issuer (and endpoint overrides). It is
// pooled so that a config reload keeps the discovered metadata, the JWKS
// and the cache of verified tokens.
var providers = caddy.NewUsagePool()

const (
	idpTimeout  = oidc.IdPTimeout
	maxVerified = 100_000
	clockLeeway = oidc.ClockLeeway
)

// errIdPUnavailable marks failures to reach the IdP, as opposed to the IdP
// refusing something; they become 502/503 answers, not logouts.
var errIdPUnavailable = oidc.ErrUnavailable

// The protocol's types, under the names the handler uses.
type (
	endpoints         = oidc.Endpoints
	metadata          = oidc.Metadata
	tokenSet          = oidc.TokenSet
	refreshFailed     = oidc.RefreshFailed
	unverifiedRefresh = oidc.UnverifiedRefresh
)

// provider is a pooled oidc.Provider; when the last configuration using
// it goes, so do its issuer's gauges.
type provider struct {
	*oidc.Provider
	pooled bool
}

// newProvider makes a provider that reports to the module's metrics and
// logs IdP outages to logger (nil: no lines).
func newProvider(issuer string, overrides endpoints, now func() time.Time, logger *zap.Logger) *provider {
	return &provider{Provider: oidc.NewProvider(oidc.Config{
		Issuer: issuer, Overrides: overrides, Now: now, Logger: logger, Reporter: metricsReporter{},
	})}
}

// Destruct implements caddy.Destructor.
func (p *provider) Destruct() error {
	err := p.Provider.Destruct()
	if p.pooled {
		releaseGauges(p.Issuer())
	}
	return err
}

// tokens checks, caches and refreshes the tokens of sessions, through the
// client and the app's pooled state (token caches, store).
type tokens struct {
	client     *oidc.Client
	provider   *provider
	app        *appState
	cookies    *cookie.Codec // seals refresh outcomes shared through the store
	logger     *zap.Logger
	now        func() time.Time
	lifetime   time.Duration // session_lifetime
	clientID   string
	recordSIDs bool // front-channel logout is on: remember the sids issued
}

// verifiedToken is the outcome of checking one access token, cached so
// that the hot path does no signature work for a token seen before.
type verifiedToken struct {
	expiry int64          // unix seconds
	claims map[string]any // access token claims; nil for opaque tokens
	// sub is the user the token was verified for: its own sub claim, or
	// the session's user when the token has none (or is opaque). Every
	// cache hit checks it, so a token never serves another user's session.
	sub string

	// forClient: the audience holds the client ID, so every handler of the
	// client accepts the token without looking at its audience again.
	forClient bool

	// keyGen is the key set's removal count when the token was checked:
	// once the IdP has dropped a key, the token is checked again.
	keyGen uint64

	once sync.Once
	id   *identity
	// The session the cached identity was built from.
	idSub, idSID string
	idClaims     []byte
}

type verifiedCache struct {
	mu      sync.RWMutex
	entries map[string]*verifiedToken
}

func (c *verifiedCache) get(token string) *verifiedToken {
	c.mu.RLock()
	v := c.entries[token]
	c.mu.RUnlock()
	return v
}

func (c *verifiedCache) put(token string, v *verifiedToken, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxVerified {
		for k, e := range c.entries {
			if e.expiry <= now {
				delete(c.entries, k)
			}
		}
		// Still full of live tokens: drop an arbitrary half rather than
		// grow without bound; they are re-verified on their next use.
		for k := range c.entries {
			if len(c.entries) < maxVerified/2 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[token] = v
}

// verifyAccessToken checks the session's access token (see
// oidc.Client.VerifyAccessToken) and caches the outcome. An opaque token
// cannot be checked locally; the session then relies on the ID token
// validated at login and the expiry the token endpoint gave.
func (tk *tokens) verifyAccessToken(ctx context.Context, s *session) (*verifiedToken, error) {
	now := tk.now()
	gen := tk.provider.KeyRemovals()
	if v := tk.app.verified.get(s.AccessToken); v != nil && v.keyGen == gen {
		if v.expiry <= now.Unix() {
			return nil, errors.New("access token expired")
		}
		if v.sub != s.Subject {
			return nil, errors.New("access token: verified for another user than the session's")
		}
		// The cache is shared by every handler of this client; one that
		// accepts other audiences may have put the token there.
		if !v.forClient && !tk.client.AudienceOK(oidc.ClaimStrings(v.claims["aud"]), nil) {
			return nil, fmt.Errorf("access token: audience %v not accepted", v.claims["aud"])
		}
		return v, nil
	}
	if !oidc.IsJWT(s.AccessToken) {
		if s.Expiry <= now.Unix() {
			return nil, errors.New("access token expired")
		}
		// Nothing to check locally: the token came from the token
		// endpoint, inside the session's sealed cookie.
		v := &verifiedToken{expiry: s.Expiry, forClient: true, keyGen: gen, sub: s.Subject}
		tk.app.verified.put(s.AccessToken, v, now.Unix())
		return v, nil
	}
	// The token comes from the token endpoint or a sealed session cookie.
	at, err := tk.client.VerifyAccessToken(ctx, s.AccessToken, s.Subject)
	if err != nil {
		return nil, err
	}
	return tk.cacheAccessToken(s.AccessToken, s.Subject, at), nil
}

// cacheAccessToken caches a checked access token of sub's session.
func (tk *tokens) cacheAccessToken(raw, sub string, at *oidc.AccessToken) *verifiedToken {
	v := &verifiedToken{expiry: at.Expiry.Unix(), claims: at.Claims, forClient: at.ForClient, keyGen: at.KeyGen, sub: sub}
	tk.app.verified.put(raw, v, tk.now().Unix())
	return v
}

// cacheTokenSet caches the access token a token endpoint answer brought.
func (tk *tokens) cacheTokenSet(ts *tokenSet) {
	if ts != nil && ts.Access != nil {
		tk.cacheAccessToken(ts.AccessToken, ts.Subject, ts.Access)
	}
}

func (n *nextRefresh) get(old string, now time.Time) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.entries[old]; ok && now.Before(e.until) {
		return e.token
	}
	return ""
}

func (n *nextRefresh) set(old, next string, until, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = map[string]nextToken{}
	}
	if len(n.entries) >= maxVerified {
		for k, e := range n.entries {
			if !now.Before(e.until) {
				delete(n.entries, k)
			}
		}
	}
	n.entries[old] = nextToken{next, until}
}

func (n *nextRefresh) clear(old string) {
	n.mu.Lock()
	delete(n.entries, old)
	n.mu.Unlock()
}

// exchange trades an authorization code for tokens and checks them.
func (tk *tokens) exchange(ctx context.Context, meta *metadata, redirectURL, code string, st *loginState) (*tokenSet, error) {
	ts, err := tk.client.Exchange(ctx, meta, redirectURL, code, st.Verifier, st.Nonce)
	tk.cacheTokenSet(ts)
	return ts, err
}

// identityFor builds the identity once per access token; the result is
// cached with the verified token, so the hot path only copies strings.
// The cached identity serves only a session with the same user, sid and
// ID token claims as the one it was built for; any other gets its own.
func (v *verifiedToken) identityFor(s *session) *identity {
	v.once.Do(func() {
		v.id = buildIdentity(v.claims, s)
		v.idSub, v.idSID, v.idClaims = s.Subject, s.SID, s.Claims
	})
	if s.Subject != v.idSub || s.SID != v.idSID || !bytes.Equal(s.Claims, v.idClaims) {
		return buildIdentity(v.claims, s)
	}
	return v.id
}
