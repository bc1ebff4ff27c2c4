package oidcauth

import (
	"context"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"go.uber.org/zap"
)

// The cookies themselves (sealing, chunking, naming, payloads) are
// internal/cookie's; these names keep the handler's code short.
type (
	session    = cookie.Session
	loginState = cookie.LoginState
)

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

func (tk *tokens) maxAge(s *session, now time.Time) int {
	return int(time.Unix(s.Created, 0).Add(tk.lifetime).Sub(now) / time.Second)
}

// sessionAlive reports whether s could still serve a request: within its
// lifetime, not revoked, and with a refresh token or an unexpired access
// token.
func (tk *tokens) alive(s *session, now time.Time) bool {
	if now.Unix() >= s.Created+int64(tk.lifetime/time.Second) || tk.app.revoked(s) {
		return false
	}
	return s.RefreshToken != "" || now.Unix() < s.Expiry
}

// revoked reports whether s was ended by a logout.
func (a *appState) revoked(s *session) bool {
	return a.store.Revoked(s.ID, s.SID, s.Subject, s.Created)
}
