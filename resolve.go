package oidcauth

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// resolve finds the request's user: session lifetime, revocation, refresh
// when the access token is due, validation of the access token, and the
// require rules. A nil principal means the response is written (a login
// redirect, a 401, 403 or 503) and the error is the handler's result.
// api answers as to an API call whatever the request looks like.
func (m *OIDCAuth) resolve(w http.ResponseWriter, r *http.Request, api bool) (*principal, error) {
	s, err := m.cookies.ReadSession(r)
	if err != nil {
		if m.Bearer != nil {
			if tok, ok := bearerToken(r); ok {
				return m.resolveBearer(w, r, tok)
			}
		}
		return nil, m.unauthenticated(w, r, false, api)
	}
	now := m.now()
	if now.Unix() >= s.Created+int64(m.sessionLifetime/time.Second) {
		m.logger.Info("session reached session_lifetime", zap.String("sub", s.Subject))
		countRejected("lifetime")
		return nil, m.unauthenticated(w, r, true, api)
	}
	if m.app.revoked(s) {
		m.logger.Info("session was logged out", zap.String("sub", s.Subject), zap.String("sid", s.SID))
		countRejected("revoked")
		return nil, m.unauthenticated(w, r, true, api)
	}

	var newIDToken string
	refreshed := false
	if now.Unix() >= s.RefreshAt {
		if s.RefreshToken == "" {
			if now.Unix() >= s.Expiry {
				countRejected("expired")
				return nil, m.unauthenticated(w, r, true, api)
			}
		} else {
			// Decoded sessions are shared through the codec's cache: refresh
			// a copy.
			cp := *s
			s = &cp
			ts, err := m.refreshSession(r.Context(), s, now)
			switch {
			case err == nil:
				newIDToken = ts.IDToken
				refreshed = true
			case errors.Is(err, errIdPUnavailable) && now.Unix() < s.Expiry:
				// The token still works; try again on a later request.
				m.logger.Warn("refresh postponed: identity provider unavailable", zap.Error(err))
			case errors.Is(err, errIdPUnavailable):
				m.logger.Error("session expired and the identity provider is unavailable", zap.Error(err))
				return nil, m.unavailable(w, r)
			default:
				m.logger.Info("refresh refused; session ended", zap.String("sub", s.Subject), zap.Error(err))
				countRejected("refresh_refused")
				return nil, m.unauthenticated(w, r, true, api)
			}
			// A logout may have arrived while the refresh was under way: the
			// new tokens must not bring the session back.
			if m.app.revoked(s) {
				countRejected("revoked")
				return nil, m.unauthenticated(w, r, true, api)
			}
		}
	}

	v, err := m.verifyAccessToken(r.Context(), s)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			m.logger.Error("cannot validate access token", zap.Error(err))
			return nil, m.unavailable(w, r)
		}
		m.logger.Info("access token refused", zap.String("sub", s.Subject), zap.Error(err))
		countRejected("invalid_token")
		return nil, m.unauthenticated(w, r, true, api)
	}

	id := v.identityFor(s)
	if !m.allowed(id) {
		m.logger.Info("access denied by require rules", zap.String("sub", s.Subject))
		countRejected("forbidden")
		return nil, m.forbidden(w, r)
	}

	if refreshed || s.OldKey {
		maxAge := m.sessionMaxAge(s, now)
		if err := m.cookies.WriteSession(w, r, s, maxAge); err != nil {
			return nil, caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if newIDToken != "" {
			if err := m.cookies.WriteIDToken(w, r, m.LogoutPath, newIDToken, maxAge); err != nil {
				return nil, caddyhttp.Error(http.StatusInternalServerError, err)
			}
		}
	}
	// The session holds: a login that just completed is no loop.
	m.cookies.EndLoginLoop(w, r)
	return &principal{session: s, id: id, accessToken: s.AccessToken, expiry: v.expiry}, nil
}
