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
func (m *OIDCAuth) recordSID(ctx context.Context, sid string) {
	if m.FrontchannelLogoutPath == "" || sid == "" {
		return
	}
	if err := m.app.store.RecordSID(ctx, sid, m.now().Add(m.sessionLifetime)); err != nil {
		m.logger.Warn("cannot record the session's sid; a front-channel logout of it will be ignored", zap.Error(err))
	}
}

func (m *OIDCAuth) sessionMaxAge(s *session, now time.Time) int {
	return int(time.Unix(s.Created, 0).Add(m.sessionLifetime).Sub(now) / time.Second)
}

// sessionAlive reports whether s could still serve a request: within its
// lifetime, not revoked, and with a refresh token or an unexpired access
// token.
func (m *OIDCAuth) sessionAlive(s *session, now time.Time) bool {
	if now.Unix() >= s.Created+int64(m.sessionLifetime/time.Second) || m.app.revoked(s) {
		return false
	}
	return s.RefreshToken != "" || now.Unix() < s.Expiry
}

// revoked reports whether s was ended by a logout.
func (a *appState) revoked(s *session) bool {
	return a.store.Revoked(s.ID, s.SID, s.Subject, s.Created)
}
