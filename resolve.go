package oidcauth

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// resolve finds the request's user, the way caddyauth's authenticators
// do: session lifetime, revocation, refresh when the access token is due,
// validation of the access token (or a bearer token), and the require
// rules. ok is false when the request has no acceptable user; p.refused
// then says why, and the caller answers (a login, a 401 or a 403). An
// error is a technical failure only: the identity provider unavailable
// (errIdPUnavailable), or a cookie that cannot be written. resolve writes
// no response; it only sets the cookies of a refreshed session.
func (m *OIDCAuth) resolve(w http.ResponseWriter, r *http.Request) (p *principal, ok bool, err error) {
	s, cerr := m.cookies.ReadSession(r)
	if cerr != nil {
		if m.Bearer != nil {
			if scheme, tok, ok := accessToken(r); ok {
				return m.bearer.resolve(r, scheme, tok)
			}
		}
		return deny(noSession)
	}
	now := m.now()
	if now.Unix() >= s.Created+int64(m.sessionLifetime/time.Second) {
		m.logger.Info("session reached session_lifetime", zap.String("sub", s.Subject))
		countRejected("lifetime")
		countSessionEnded("lifetime")
		return deny(sessionEnded)
	}
	if m.app.revoked(s) {
		m.logger.Info("session was logged out", zap.String("sub", s.Subject), zap.String("sid", s.SID))
		countRejected("revoked")
		return deny(sessionEnded)
	}

	touch := false
	if m.IdleTimeout > 0 {
		if m.tokens.idleOver(r.Context(), s, now.Unix()) {
			m.logger.Info("session reached idle_timeout", zap.String("sub", s.Subject))
			countRejected("idle")
			countSessionEnded("idle")
			return deny(sessionEnded)
		}
		touch = now.Unix()-lastActive(s) >= m.tokens.touchInterval()
	}

	var newIDToken string
	refreshed := false
	if now.Unix() >= s.RefreshAt || m.app.store.MustRefresh(s.Subject, max(s.Issued, s.Created)) {
		if s.RefreshToken == "" {
			if now.Unix() >= s.Expiry {
				countRejected("expired")
				return deny(sessionEnded)
			}
		} else {
			// Decoded sessions are shared through the codec's cache: refresh
			// a copy.
			cp := *s
			s = &cp
			ts, err := m.tokens.refreshSession(r.Context(), s, now)
			switch {
			case err == nil:
				newIDToken = ts.IDToken
				refreshed = true
			case errors.Is(err, errIdPUnavailable) && now.Unix() < s.Expiry:
				// The token still works; try again on a later request.
				m.logger.Warn("refresh postponed: identity provider unavailable", zap.Error(err))
			case errors.Is(err, errIdPUnavailable):
				m.logger.Error("session expired and the identity provider is unavailable", zap.Error(err))
				return nil, false, err
			default:
				m.logger.Info("refresh refused; session ended", zap.String("sub", s.Subject), zap.Error(err))
				countRejected("refresh_refused")
				return deny(sessionEnded)
			}
			// A logout may have arrived while the refresh was under way: the
			// new tokens must not bring the session back.
			if m.app.revoked(s) {
				countRejected("revoked")
				return deny(sessionEnded)
			}
		}
	}

	v, err := m.tokens.verifyAccessToken(r.Context(), s)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			m.logger.Error("cannot validate access token", zap.Error(err))
			return nil, false, err
		}
		m.logger.Info("access token refused", zap.String("sub", s.Subject), zap.Error(err))
		countRejected("invalid_token")
		return deny(sessionEnded)
	}

	id := v.identityFor(s)
	if _, _, need := m.stepUpNeeded(id.claims, now); need {
		m.logger.Info("session needs a stronger authentication", zap.String("sub", s.Subject))
		countRejected("step_up")
		return deny(stepUp)
	}
	if !m.rules.allow(id) {
		m.logger.Info("access denied by require rules", zap.String("sub", s.Subject))
		countRejected("forbidden")
		return deny(forbidden)
	}

	if touch {
		cp := *s
		s = &cp
		s.Seen = now.Unix()
		m.tokens.touch(s, s.Seen)
	}
	if refreshed || s.OldKey || touch {
		maxAge := m.tokens.maxAge(s, now)
		if err := m.cookies.WriteSession(w, r, s, maxAge); err != nil {
			return nil, false, caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if newIDToken != "" {
			if err := m.cookies.WriteIDToken(w, r, m.LogoutPath, newIDToken, maxAge); err != nil {
				return nil, false, caddyhttp.Error(http.StatusInternalServerError, err)
			}
		}
	}
	// The session holds: a login that just completed is no loop.
	m.cookies.EndLoginLoop(w, r)
	return &principal{session: s, id: id, accessToken: s.AccessToken, expiry: v.expiry}, true, nil
}

// refuse answers a request that resolve refused as an API call: 401 with
// an RFC 6750 challenge (and a login link, for a session), or 403.
func (a responder) refuse(w http.ResponseWriter, r *http.Request, why refusal) error {
	switch why {
	case bearerInvalid:
		a.challenge(w, r, "Bearer", "invalid_token")
		return a.fail(w, r, http.StatusUnauthorized, "The bearer token is invalid or expired.", "")
	case bearerEnded:
		a.challenge(w, r, "Bearer", "invalid_token")
		return a.fail(w, r, http.StatusUnauthorized, "The bearer token's session has ended.", "")
	case bearerForbidden:
		a.challenge(w, r, "Bearer", "insufficient_scope")
		return a.forbidden(w, r)
	case bearerScope, stepUp, dpopInvalidToken, dpopInvalidProof:
		return a.refuseResource(w, r, why)
	case forbidden:
		return a.forbidden(w, r)
	case sessionEnded:
		a.cookies.ClearSession(w, r, a.logoutPath)
	}
	a.challenge(w, r, "Bearer", "")
	return a.fail(w, r, http.StatusUnauthorized, "Authentication required.", a.loginPath)
}

// failed answers a technical failure of resolve: 503 when the
// identity provider is unavailable, else the error as it is.
func (a responder) failed(w http.ResponseWriter, r *http.Request, err error) error {
	if errors.Is(err, errIdPUnavailable) {
		return a.unavailable(w, r)
	}
	return err
}
