package oidcauth

import (
	"context"
	"encoding/json"
	"net/http"
)

// handleSessionInfo tells a single-page app who is signed in: the user's
// claims and when the session and access token expire, never a token.
// Without a session it answers 401, never a redirect.
func (m *OIDCAuth) handleSessionInfo(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET.", "")
	}
	r = r.WithContext(context.WithValue(r.Context(), apiOnlyKey{}, true))
	p, ok, err := m.resolve(w, r)
	switch {
	case err != nil:
		return m.answer.failed(w, r, err)
	case !ok:
		return m.answer.refuse(w, r, p.refused)
	}
	claims := make(map[string]any, len(p.id.claims))
	for k, v := range p.id.claims {
		switch k {
		case "iss", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "at_hash", "nonce", "azp":
		default:
			claims[k] = v
		}
	}
	info := map[string]any{
		"sub":                     p.id.claims["sub"],
		"claims":                  claims,
		"access_token_expires_at": p.expiry,
	}
	if m.ManagementAPI != nil {
		list := m.mgmt.enrich(r, p.subject())
		if list == nil {
			list = []membership{}
		}
		info["organizations"] = list
	}
	if s := p.session; s != nil {
		info["authenticated_by"] = "session"
		info["session"] = map[string]any{
			"created_at": s.Created,
			"expires_at": s.Created + int64(m.sessionLifetime.Seconds()),
		}
	} else {
		info["authenticated_by"] = "bearer"
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(info)
}
