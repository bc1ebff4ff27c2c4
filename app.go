package oidcauth

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// apps holds the state of each app (issuer + client ID + store): verified
// tokens, revocations and refresh coordination. It is pooled so that a
// config reload keeps all of it, and the store's connections with it.
var apps = caddy.NewUsagePool()

type appState struct {
	id       string        // store.AppID: names the app in shared storage and reports
	verified verifiedCache // access tokens of sessions
	bearer   verifiedCache // bearer tokens, which may have other audiences
	store    *store.Store  // revocations, single-use records, sids, refreshes
	next     nextRefresh   // refresh tokens of answers not yet verified

	// maxLifetime is the longest session_lifetime of the handlers that
	// logged users in to this app: how long a revocation by sub must last.
	maxLifetime atomic.Int64
	// mgmt is a Management API client of a handler of this app, for the
	// admin API's revocations at the IdP.
	mgmt atomic.Pointer[management]
}

// noteLifetime raises maxLifetime to d.
func (a *appState) noteLifetime(d time.Duration) {
	for {
		old := a.maxLifetime.Load()
		if int64(d) <= old || a.maxLifetime.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// defaultSessionLifetime is session_lifetime's default: also the least a
// revocation by sub is kept.
const defaultSessionLifetime = 24 * time.Hour

// lifetime is how long a session of this app can last.
func (a *appState) lifetime() time.Duration {
	return max(time.Duration(a.maxLifetime.Load()), defaultSessionLifetime)
}

func newAppState(id string, st *store.Store) *appState {
	return &appState{
		id:       id,
		verified: verifiedCache{entries: map[string]*verifiedToken{}},
		bearer:   verifiedCache{entries: map[string]*verifiedToken{}},
		store:    st,
	}
}

// Destruct implements caddy.Destructor: it closes the store's connections
// and stops its watcher.
func (a *appState) Destruct() error { return a.store.Close() }

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

// nextRefresh keeps, per session refresh token (the one in the cookie),
// the refresh token of an unverifiedRefresh for the retry. One instance
// only: with a shared store it is kept there (refreshCall, in refresh.go).
type nextRefresh struct {
	mu      sync.Mutex
	entries map[string]nextToken
}

type nextToken struct {
	token string
	until time.Time
}

// revoked reports whether s was ended by a logout.
func (a *appState) revoked(s *session) bool {
	return a.store.Revoked(s.ID, s.SID, s.Subject, s.Created)
}
