package oidcauth

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// handleLogout ends the session here (cookies cleared, session revoked so
// a copied cookie stops working) and then at the IdP, through its
// end_session_endpoint with id_token_hint and post_logout_redirect_uri.
func (m *OIDCAuth) handleLogout(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		// HEAD included: link checkers and previews must not log anyone out.
		w.Header().Set("Allow", "GET, POST")
		return m.fail(w, r, http.StatusMethodNotAllowed, "Use GET or POST to sign out.", "")
	}
	if isPrefetch(r) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}

	now := m.now()
	idToken := m.cookies.readIDToken(r, m.LogoutPath)
	if s, err := m.cookies.readSession(r); err == nil {
		rev := revocation{Kind: revokeSession, Value: s.ID, Until: time.Unix(s.Created, 0).Add(m.sessionLifetime).Unix()}
		if err := m.app.revoke(r.Context(), rev); err != nil {
			m.logger.Error("logout not recorded in the store; other instances may still accept this session", zap.Error(err))
		}
		m.logger.Info("logout", zap.String("sub", s.Subject), zap.String("sid", s.SID))
		countLogout("rp", "accepted", "")
	}
	m.cookies.clearSession(w, r, m.LogoutPath)
	m.cookies.clearStates(w, r)

	var postLogout string
	if m.postLogoutURL != nil {
		postLogout = resolveAgainst(r, m.postLogoutURL)
	}
	target := postLogout
	if meta, err := m.provider.metadata(r.Context(), now); err != nil {
		m.logger.Warn("logged out locally only: identity provider unavailable", zap.Error(err))
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
