package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// sharedOutcome is a refresh outcome as other instances read it, sealed.
type sharedOutcome struct {
	Tokens  *tokenSet `json:"t,omitempty"`
	Refused string    `json:"r,omitempty"`
	// Next is the refresh token of an unverifiedRefresh: the next try
	// refreshes with it.
	Next string `json:"n,omitempty"`
}

// refreshCall is this module's part of a refresh the store coordinates
// (store.Coordinate): alone, it refreshes on this instance; in a cluster,
// the outcome it shares is sealed with the app's cookie key, bound to its
// key and user, so the shared store never sees a token in clear and
// cannot hand one user's tokens to another.
func (m *OIDCAuth) refreshCall(refreshToken, sub string, fresh func(*tokenSet) bool) store.Refresh[*tokenSet] {
	return store.Refresh[*tokenSet]{
		Token: refreshToken,
		Fresh: fresh,
		Alone: func(ctx context.Context) (*tokenSet, error) {
			return m.refreshOnThisInstance(ctx, refreshToken, sub)
		},
		Call: func(ctx context.Context, use string) (*tokenSet, error) {
			return m.refresh(ctx, use, sub)
		},
		Seal: func(key string, ts *tokenSet, err error) (string, time.Duration) {
			var out sharedOutcome
			var refused *refreshFailed
			var unverified *unverifiedRefresh
			ttl := store.RefreshGrace
			switch {
			case err == nil:
				out.Tokens = ts
			case errors.As(err, &refused):
				out.Refused = refused.Err.Error()
			case errors.As(err, &unverified):
				out.Next, ttl = unverified.Next, m.sessionLifetime
			}
			if out.Tokens == nil && out.Refused == "" && out.Next == "" {
				return "", 0
			}
			raw, merr := json.Marshal(out)
			if merr != nil {
				return "", 0
			}
			return m.cookies.Seal(m.outcomePurpose(key, sub), raw), ttl
		},
		Open: func(key, sealed string) (*tokenSet, bool, string, error) {
			out := m.openOutcome(sealed, key, sub)
			switch {
			case out == nil:
				return nil, false, "", nil
			case out.Refused != "":
				return nil, true, "", &refreshFailed{Err: errors.New(out.Refused)}
			case out.Tokens != nil && out.Tokens.Subject == sub && time.Now().Before(refreshTime(time.Now(), out.Tokens.Expiry)):
				return out.Tokens, true, "", nil
			}
			return nil, false, out.Next, nil
		},
		Timeout:     idpTimeout,
		Unavailable: errIdPUnavailable,
	}
}

// outcomePurpose binds a sealed refresh outcome to the key it is stored
// under (the refresh token's hash), the session's user and this client:
// whoever can write to the shared store can move an outcome to another
// key, but it then no longer opens, so one user's tokens never become
// another's session.
func (m *OIDCAuth) outcomePurpose(key, sub string) string {
	return purposeRefresh + "\x00" + key + "\x00" + sub + "\x00" + m.ClientID
}

// openOutcome opens a refresh outcome kept under key for a session of
// sub; nil when it was sealed for another key, user or client, or
// tampered with.
func (m *OIDCAuth) openOutcome(sealed, key, sub string) *sharedOutcome {
	raw, err := m.cookies.Open(m.outcomePurpose(key, sub), sealed)
	if err != nil {
		return nil
	}
	var out sharedOutcome
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return &out
}
