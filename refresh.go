package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
	"go.uber.org/zap"
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
func (tk *tokens) refreshCall(refreshToken, sub string, fresh func(*tokenSet) bool) store.Refresh[*tokenSet] {
	return store.Refresh[*tokenSet]{
		Token: refreshToken,
		Fresh: fresh,
		Alone: func(ctx context.Context) (*tokenSet, error) {
			return tk.refreshOnThisInstance(ctx, refreshToken, sub)
		},
		Call: func(ctx context.Context, use string) (*tokenSet, error) {
			return tk.refresh(ctx, use, sub)
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
				out.Next, ttl = unverified.Next, tk.lifetime
			}
			if out.Tokens == nil && out.Refused == "" && out.Next == "" {
				return "", 0
			}
			raw, merr := json.Marshal(out)
			if merr != nil {
				return "", 0
			}
			return tk.cookies.Seal(tk.outcomePurpose(key, sub), raw), ttl
		},
		Open: func(key, sealed string) (*tokenSet, bool, string, error) {
			out := tk.openOutcome(sealed, key, sub)
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
func (tk *tokens) outcomePurpose(key, sub string) string {
	return purposeRefresh + "\x00" + key + "\x00" + sub + "\x00" + tk.clientID
}

// openOutcome opens a refresh outcome kept under key for a session of
// sub; nil when it was sealed for another key, user or client, or
// tampered with.
func (tk *tokens) openOutcome(sealed, key, sub string) *sharedOutcome {
	raw, err := tk.cookies.Open(tk.outcomePurpose(key, sub), sealed)
	if err != nil {
		return nil
	}
	var out sharedOutcome
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return &out
}

// refreshSession refreshes s in place. Concurrent requests of one session
// share one call to the IdP.
func (tk *tokens) refreshSession(ctx context.Context, s *session, now time.Time) (*tokenSet, error) {
	fresh := func(ts *tokenSet) bool { return tk.now().Before(refreshTime(now, ts.Expiry)) }
	old := s.RefreshToken
	// Detached from the request: other requests wait on this outcome
	// even if the first client goes away.
	ts, shared, err := store.Coordinate(context.WithoutCancel(ctx), tk.app.store, now, tk.refreshCall(old, s.Subject, fresh))
	if err == nil && ts.Subject != s.Subject {
		// Never another user's tokens for this session, wherever they came from.
		err = &refreshFailed{Err: errors.New("refresh outcome is for another user")}
	}
	var refused *refreshFailed
	switch {
	case err == nil && shared:
		countRefresh("coalesced")
	case err == nil:
		countRefresh("ok")
		tk.logger.Debug("tokens refreshed", zap.String("sub", s.Subject), zap.String("sid", s.SID))
	case errors.As(err, &refused):
		countRefresh("refused")
	default:
		countRefresh("unavailable")
	}
	if err != nil {
		return nil, err
	}
	s.AccessToken = ts.AccessToken
	if ts.RefreshToken != "" {
		s.RefreshToken = ts.RefreshToken
	}
	s.Expiry = ts.Expiry.Unix()
	s.RefreshAt = refreshTime(tk.now(), ts.Expiry).Unix()
	s.Issued = tk.now().Unix()
	if ts.IDToken != "" {
		s.Claims = ts.Claims
		if ts.SID != "" && ts.SID != s.SID {
			s.SID = ts.SID
			tk.recordSID(ctx, s.SID)
		}
	}
	return ts, nil
}

// refreshTime is when a token expiring at exp is refreshed: a little
// before it expires (30 s, or a quarter of a short lifetime).
func refreshTime(now, exp time.Time) time.Time {
	margin := min(30*time.Second, exp.Sub(now)/4)
	return exp.Add(-max(margin, 0))
}

// refreshOnThisInstance is refresh for an app without a shared store: it
// refreshes with the refresh token an unverifiedRefresh left, if any, and
// keeps the next one for as long as the session may live.
func (tk *tokens) refreshOnThisInstance(ctx context.Context, refreshToken, prevSub string) (*tokenSet, error) {
	use := refreshToken
	if next := tk.app.next.get(refreshToken, tk.now()); next != "" {
		use = next
	}
	ts, err := tk.refresh(ctx, use, prevSub)
	var unverified *unverifiedRefresh
	switch {
	case errors.As(err, &unverified):
		tk.app.next.set(refreshToken, unverified.Next, tk.now().Add(tk.lifetime), tk.now())
	case !errors.Is(err, errIdPUnavailable): // refreshed, or refused
		tk.app.next.clear(refreshToken)
	}
	return ts, err
}

// refresh uses a refresh token; prevSub is the session's user, which a
// refreshed ID token must not change.
func (tk *tokens) refresh(ctx context.Context, refreshToken, prevSub string) (*tokenSet, error) {
	ts, err := tk.client.Refresh(ctx, refreshToken, prevSub)
	tk.cacheTokenSet(ts)
	return ts, err
}

// Refresh outcomes shared through the store are sealed with the cookie
// key under this purpose, which no cookie uses.
const purposeRefresh = "refresh"
