package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"go.uber.org/zap"
)

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
	idle       time.Duration // idle_timeout; 0: off
	clientID   string
	recordSIDs bool // front-channel logout is on: remember the sids issued
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

// exchange trades an authorization code for tokens and checks them.
func (tk *tokens) exchange(ctx context.Context, meta *metadata, redirectURL, code string, st *loginState) (*tokenSet, error) {
	ts, err := tk.client.Exchange(ctx, meta, redirectURL, code, st.Verifier, st.Nonce)
	tk.cacheTokenSet(ts)
	return ts, err
}

// recordSID notes the IdP session of a session issued here, for
// front-channel logout (only while it is on).
func (tk *tokens) recordSID(ctx context.Context, sid string) {
	if !tk.recordSIDs || sid == "" {
		return
	}
	if err := tk.app.store.RecordSID(ctx, sid, tk.now().Add(tk.lifetime)); err != nil {
		tk.logger.Warn("cannot record the session's sid; a front-channel logout of it will be ignored", zap.Error(err))
	}
}

// maxAge is the Max-Age of a session's cookies: what is left of its
// lifetime.
func (tk *tokens) maxAge(s *session, now time.Time) int {
	return int(time.Unix(s.Created, 0).Add(tk.lifetime).Sub(now) / time.Second)
}

// alive reports whether s could still serve a request: within its
// lifetime, not revoked, and with a refresh token or an unexpired access
// token.
func (tk *tokens) alive(s *session, now time.Time) bool {
	if now.Unix() >= s.Created+int64(tk.lifetime/time.Second) || tk.app.revoked(s) {
		return false
	}
	return s.RefreshToken != "" || now.Unix() < s.Expiry
}
