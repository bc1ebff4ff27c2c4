package oidcauth

import (
	"encoding/json"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// registerSession records a new session in the registry, for the admin
// API, idle timeouts across instances and organization webhooks. A store
// that fails is logged: the login goes on.
func (tk *tokens) registerSession(r *http.Request, s *session) {
	countSessionStarted()
	e := store.SessionEntry{
		ID:        s.ID,
		App:       tk.clientID,
		Subject:   s.Subject,
		SID:       s.SID,
		OID:       sessionClaim(s.Claims, "oid"),
		Created:   s.Created,
		LastSeen:  s.Created,
		Until:     time.Unix(s.Created, 0).Add(tk.lifetime).Unix(),
		UserAgent: r.UserAgent(),
	}
	if err := tk.app.store.RecordSession(r.Context(), e); err != nil {
		tk.logger.Warn("cannot record the session in the registry", zap.Error(err))
	}
}

// live leaves out the sessions that a logout (RP, back- or front-channel,
// webhook, admin) has already ended, wherever it was received: the
// registry keeps their records until they expire.
func (a *appState) live(list []store.SessionEntry) []store.SessionEntry {
	out := list[:0:0]
	for _, e := range list {
		if !a.store.Revoked(e.ID, e.SID, e.Subject, e.Created) {
			out = append(out, e)
		}
	}
	return out
}

// sessionClaim returns a string claim of the ID token's claims, or "".
func sessionClaim(raw json.RawMessage, name string) string {
	if len(raw) == 0 {
		return ""
	}
	var claims map[string]any
	if json.Unmarshal(raw, &claims) != nil {
		return ""
	}
	v, _ := claims[name].(string)
	return v
}
