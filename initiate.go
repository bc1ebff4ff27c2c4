package oidcauth

import (
	"errors"
	"net/http"
	"net/url"

	"go.uber.org/zap"
)

// maxInitiateBody bounds a posted login initiation: a real one is a token
// of a few KB, or three short parameters.
const maxInitiateBody = 64 << 10

// handleInitiateLogin starts a login that the IdP asked for. Two forms:
//
//   - Scalekit's IdP-initiated login: ?idp_initiated_login=<JWT>, signed
//     with the IdP's keys, naming the connection, organization and login
//     hint to use. Its relay_state is only data: a same-site path to land
//     on, never our CSRF state.
//   - OIDC third-party initiated login (Core 4): iss (must be ours),
//     login_hint and target_link_uri (must be on this site).
//
// Either way the result is an ordinary login with a fresh state, nonce and
// PKCE, so nothing from the request is trusted beyond its hints.
func (m *OIDCAuth) handleInitiateLogin(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET or POST.", "")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxInitiateBody)
	if err := r.ParseForm(); err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return m.answer.fail(w, r, http.StatusRequestEntityTooLarge, "The login request is too large.", m.LoginPath)
		}
		return m.answer.fail(w, r, http.StatusBadRequest, "The login request is malformed.", m.LoginPath)
	}
	hints := map[string]string{}
	returnTo := "/"

	if raw := r.Form.Get("idp_initiated_login"); raw != "" {
		claims, err := m.client.VerifyInitiation(r.Context(), raw)
		if err != nil {
			if errors.Is(err, errIdPUnavailable) {
				return m.answer.unavailable(w, r)
			}
			m.logger.Warn("IdP-initiated login refused", zap.Error(err))
			countLogin("failed", "initiation")
			return m.answer.fail(w, r, http.StatusBadRequest, "This sign-in link is invalid or has expired.", m.LoginPath)
		}
		for _, name := range []string{"organization_id", "connection_id", "login_hint"} {
			if v, ok := claims[name].(string); ok && v != "" {
				hints[name] = v
			}
		}
		if rs, ok := claims["relay_state"].(string); ok {
			if safe, ok := safeReturnTo(rs); ok {
				returnTo = safe
			}
		}
	} else {
		if iss := r.Form.Get("iss"); iss != m.Issuer {
			m.logger.Warn("third-party initiated login refused", zap.String("reason", "iss is not this site's issuer"))
			return m.answer.fail(w, r, http.StatusBadRequest, "This sign-in request names another identity provider.", m.LoginPath)
		}
		if hint := r.Form.Get("login_hint"); hint != "" && len(hint) <= 512 {
			hints["login_hint"] = hint
		}
		if target := r.Form.Get("target_link_uri"); target != "" {
			path, ok := sameSitePath(r, target)
			if !ok {
				m.logger.Warn("third-party initiated login refused", zap.String("reason", "target_link_uri is not on this site"))
				return m.answer.fail(w, r, http.StatusBadRequest, "This sign-in request points to another site.", m.LoginPath)
			}
			returnTo = path
		}
	}
	return m.login.begin(w, r, returnTo, hints)
}

// sameSitePath turns a URL on this site (same scheme and host as the
// request) into a path for return_to.
func sameSitePath(r *http.Request, raw string) (string, bool) {
	if safe, ok := safeReturnTo(raw); ok {
		return safe, true
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil {
		return "", false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if u.Scheme != scheme || u.Host != r.Host {
		return "", false
	}
	return safeReturnTo(u.RequestURI())
}
