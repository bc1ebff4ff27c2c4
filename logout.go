package oidcauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// handleLogout ends the session here (cookies cleared, session revoked so
// a copied cookie stops working) and then at the IdP, through its
// end_session_endpoint with id_token_hint and post_logout_redirect_uri.
func (m *OIDCAuth) handleLogout(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		// HEAD included: link checkers and previews must not log anyone out.
		w.Header().Set("Allow", "GET, POST")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET or POST to sign out.", "")
	}
	if isPrefetch(r) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}

	now := m.now()
	idToken := m.cookies.ReadIDToken(r, m.LogoutPath)
	s, err := m.cookies.ReadSession(r)
	if err == nil && !m.tokens.alive(s, now) {
		// A revoked or expired session (a stale cookie, which can be
		// replayed at will): nothing to revoke, here or at the IdP.
		m.logger.Debug("logout of a session that has already ended", zap.String("sub", s.Subject))
		s = nil
	}
	if s != nil {
		rev := store.Revocation{Kind: store.RevokeSession, Value: s.ID, Until: time.Unix(s.Created, 0).Add(m.sessionLifetime).Unix()}
		if err := m.app.store.Revoke(r.Context(), rev); err != nil {
			m.logger.Error("logout not recorded in the store; other instances may still accept this session", zap.Error(err))
		}
		m.logger.Info("logout", zap.String("sub", s.Subject), zap.String("sid", s.SID))
		countLogout("rp", "accepted", "")
	}
	m.cookies.ClearSession(w, r, m.LogoutPath)
	m.cookies.ClearStates(w, r)
	m.cookies.ClearLoginLoop(w, r)

	meta, metaErr := m.provider.Metadata(r.Context())
	if s != nil && s.RefreshToken != "" && metaErr == nil && meta.Revocation != "" {
		// Best effort and bounded, in time and in number; the redirect
		// does not wait for it.
		if release, ok := m.provider.RevocationSlot(); ok {
			go func() {
				defer release()
				m.tokens.revokeToken(context.WithoutCancel(r.Context()), meta, s.RefreshToken)
			}()
		} else {
			m.logger.Warn("too many token revocations under way; the refresh token is not revoked at the identity provider")
		}
	}

	var postLogout string
	if m.postLogoutURL != nil {
		postLogout = resolveAgainst(r, m.postLogoutURL)
	}
	target := postLogout
	if metaErr != nil {
		m.logger.Warn("logged out locally only: identity provider unavailable", zap.Error(metaErr))
	} else if meta.EndSession != "" {
		u, err := url.Parse(meta.EndSession)
		if err == nil {
			q := u.Query()
			if idToken != "" {
				q.Set("id_token_hint", idToken)
			}
			q.Set("client_id", m.ClientID)
			if postLogout != "" {
				q.Set("post_logout_redirect_uri", postLogout)
			}
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	if target == "" {
		target = "/"
	}
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// isPrefetch recognises speculative loads (link prefetch, prerender,
// previews), which must not have side effects.
func isPrefetch(r *http.Request) bool {
	for _, h := range []string{"Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"} {
		v := strings.ToLower(r.Header.Get(h))
		if strings.Contains(v, "prefetch") || strings.Contains(v, "prerender") || strings.Contains(v, "preview") {
			return true
		}
	}
	return false
}

// revokeToken revokes a refresh token at the IdP (RFC 7009), so that a copy
// of it is worthless after logout.
func (tk *tokens) revokeToken(ctx context.Context, meta *metadata, token string) {
	err := tk.client.RevokeRefreshToken(ctx, meta, token)
	var se *oidc.StatusError
	switch {
	case errors.As(err, &se):
		tk.logger.Warn("token revocation refused", zap.Int("status", se.Code))
	case err != nil:
		tk.logger.Warn("token revocation failed", zap.Error(err))
	default:
		tk.logger.Debug("refresh token revoked at the identity provider")
	}
}

// handleFrontchannelLogout serves OIDC Front-Channel Logout 1.0: the IdP's
// logout page loads this path in an iframe with iss and sid. Browsers do
// not send SameSite cookies to such an iframe, so the sid alone names the
// sessions to end; iss must be ours. Anyone can send such a request, so
// it only ends sessions whose sid this deployment issued (recorded at
// login), and writes each revocation once: what an anonymous request can
// make the store hold is bounded by the logins it had.
func (m *OIDCAuth) handleFrontchannelLogout(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		h.Set("Allow", "GET")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET.", "")
	}
	q := r.URL.Query()
	iss, sid := q.Get("iss"), q.Get("sid")
	if iss != m.Issuer || sid == "" || len(sid) > 512 {
		m.logger.Warn("front-channel logout refused", zap.String("reason", "iss and sid required, iss must be the issuer"))
		countLogout("frontchannel", "refused", "bad_request")
		return m.answer.fail(w, r, http.StatusBadRequest, "A front-channel logout needs this site's iss and a sid.", "")
	}
	switch known, err := m.app.store.KnownSID(r.Context(), sid); {
	case err != nil:
		m.logger.Error("front-channel logout: store unavailable", zap.Error(err))
		countLogout("frontchannel", "refused", "store_unavailable")
		return m.answer.fail(w, r, http.StatusServiceUnavailable, "The logout cannot be recorded now.", "")
	case !known:
		// The same answer as for a logout, without its write.
		m.logger.Info("front-channel logout of a sid not issued here; ignored")
		countLogout("frontchannel", "refused", "unknown_sid")
	case m.app.store.SIDRevoked(sid):
		countLogout("frontchannel", "accepted", "")
	default:
		rev := store.Revocation{Kind: store.RevokeSID, Value: sid, Until: m.now().Add(m.sessionLifetime).Unix()}
		if err := m.app.store.Revoke(r.Context(), rev); err != nil {
			m.logger.Error("front-channel logout not recorded in the store", zap.Error(err))
		}
		m.logger.Info("front-channel logout", zap.String("sid", sid))
		countLogout("frontchannel", "accepted", "")
	}
	m.cookies.ClearSession(w, r, m.LogoutPath)
	h.Set("Content-Type", "text/html; charset=utf-8")
	_, err := w.Write([]byte("<!doctype html><title>Signed out</title>"))
	return err
}
