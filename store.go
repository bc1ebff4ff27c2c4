package oidcauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// apps holds the state of each app (issuer + client ID + store): verified
// tokens, revocations and refresh coordination. It is pooled so that a
// config reload keeps all of it.
var apps = caddy.NewUsagePool()

// refreshGrace is how long the outcome of a refresh is kept for requests
// that still carry the old refresh token (sent before the browser got the
// new cookie). With rotating refresh tokens, replaying the old one at the
// IdP would fail and end the session.
const refreshGrace = 2 * time.Minute

type appState struct {
	verified verifiedCache

	mu       sync.RWMutex
	sessions map[string]int64 // revoked session ID -> keep until (unix)
	sids     map[string]int64 // revoked IdP sid -> keep until
	subs     map[string]subRevocation

	refreshMu sync.Mutex
	refreshes map[string]*refreshCall
	lastSweep time.Time
	jtis      map[string]int64 // logout token jti -> keep until
	jtiMu     sync.Mutex
}

// subRevocation ends every session of a user that began before at.
type subRevocation struct {
	at    int64
	until int64
}

type refreshCall struct {
	done     chan struct{}
	ts       *tokenSet
	err      error
	finished time.Time
}

func newAppState() *appState {
	return &appState{
		verified:  verifiedCache{entries: map[string]*verifiedToken{}},
		sessions:  map[string]int64{},
		sids:      map[string]int64{},
		subs:      map[string]subRevocation{},
		refreshes: map[string]*refreshCall{},
		jtis:      map[string]int64{},
	}
}

// Destruct implements caddy.Destructor; the state owns no goroutines.
func (a *appState) Destruct() error { return nil }

// revoked reports whether s was ended by a logout. It is on every
// request's path: map lookups under a read lock, no allocation.
func (a *appState) revoked(s *session) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, ok := a.sessions[s.ID]; ok {
		return true
	}
	if s.SID != "" {
		if _, ok := a.sids[s.SID]; ok {
			return true
		}
	}
	if r, ok := a.subs[s.Subject]; ok && s.Created <= r.at {
		return true
	}
	return false
}

func (a *appState) revokeSession(id string, until time.Time) {
	a.mu.Lock()
	a.sessions[id] = until.Unix()
	a.sweepRevocationsLocked(time.Now().Unix())
	a.mu.Unlock()
}

func (a *appState) revokeSID(sid string, until time.Time) {
	a.mu.Lock()
	a.sids[sid] = until.Unix()
	a.sweepRevocationsLocked(time.Now().Unix())
	a.mu.Unlock()
}

func (a *appState) revokeSubject(sub string, at, until time.Time) {
	a.mu.Lock()
	a.subs[sub] = subRevocation{at: at.Unix(), until: until.Unix()}
	a.sweepRevocationsLocked(time.Now().Unix())
	a.mu.Unlock()
}

// sweepRevocationsLocked forgets revocations that can no longer match a
// live session. It runs on writes only, never on the request path.
func (a *appState) sweepRevocationsLocked(now int64) {
	for k, until := range a.sessions {
		if until < now {
			delete(a.sessions, k)
		}
	}
	for k, until := range a.sids {
		if until < now {
			delete(a.sids, k)
		}
	}
	for k, r := range a.subs {
		if r.until < now {
			delete(a.subs, k)
		}
	}
}

// coalesceRefresh runs fn once for a refresh token, however many requests
// ask at the same time, and hands its outcome to requests that arrive with
// the same (now rotated) refresh token within refreshGrace. A kept outcome
// whose access token is due for refresh again is not reused.
func (a *appState) coalesceRefresh(key string, now time.Time, fresh func(*tokenSet) bool, fn func() (*tokenSet, error)) (*tokenSet, bool, error) {
	a.refreshMu.Lock()
	if now.Sub(a.lastSweep) > refreshGrace {
		for k, c := range a.refreshes {
			if !c.finished.IsZero() && now.Sub(c.finished) > refreshGrace {
				delete(a.refreshes, k)
			}
		}
		a.lastSweep = now
	}
	if c, ok := a.refreshes[key]; ok {
		select {
		case <-c.done:
			if now.Sub(c.finished) <= refreshGrace && (c.err != nil || fresh(c.ts)) {
				a.refreshMu.Unlock()
				return c.ts, true, c.err
			}
		default:
			a.refreshMu.Unlock()
			<-c.done
			return c.ts, true, c.err
		}
	}
	c := &refreshCall{done: make(chan struct{})}
	a.refreshes[key] = c
	a.refreshMu.Unlock()

	c.ts, c.err = fn()
	a.refreshMu.Lock()
	c.finished = time.Now()
	if c.err != nil && errors.Is(c.err, errIdPUnavailable) {
		// Not an answer from the IdP: let the next request try again.
		delete(a.refreshes, key)
	}
	a.refreshMu.Unlock()
	close(c.done)
	return c.ts, false, c.err
}

// seenJTI records a logout token's jti and reports whether it was seen
// before.
func (a *appState) seenJTI(jti string, until time.Time) bool {
	a.jtiMu.Lock()
	defer a.jtiMu.Unlock()
	now := time.Now().Unix()
	if exp, ok := a.jtis[jti]; ok && exp >= now {
		return true
	}
	if len(a.jtis) > 10_000 {
		for k, exp := range a.jtis {
			if exp < now {
				delete(a.jtis, k)
			}
		}
	}
	a.jtis[jti] = until.Unix()
	return false
}

const secretStorageKey = "oidc_auth/cookie_secret"

// loadOrCreateSecret returns the cookie secret kept in Caddy's storage,
// creating it on first use. A lock makes instances that share storage
// agree on one secret.
func loadOrCreateSecret(ctx context.Context, storage certmagic.Storage) ([]byte, error) {
	if storage == nil {
		return nil, errors.New("no storage configured to keep a generated secret; set cookie_secret")
	}
	if b, err := storage.Load(ctx, secretStorageKey); err == nil && len(b) >= 2*minCookieSecretLen {
		return b, nil
	}
	if err := storage.Lock(ctx, secretStorageKey); err != nil {
		return nil, err
	}
	defer storage.Unlock(ctx, secretStorageKey) //nolint:errcheck
	b, err := storage.Load(ctx, secretStorageKey)
	if err == nil && len(b) >= 2*minCookieSecretLen {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	b = []byte(hex.EncodeToString(raw))
	if err := storage.Store(ctx, secretStorageKey, b); err != nil {
		return nil, err
	}
	return b, nil
}
