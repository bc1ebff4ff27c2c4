package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// BearerConfig turns on bearer mode: API clients without a session may
// send `Authorization: Bearer <JWT>` with an access token of this IdP.
type BearerConfig struct {
	// Audiences accepted besides the client ID, such as an API's identifier
	// that the IdP puts in `aud`. Default: only the client ID.
	Audiences []string `json:"audiences,omitempty"`

	// Also accept bearer tokens for the audiences of
	// access_token_audiences (which otherwise apply only to the tokens of
	// sessions). Default: off.
	AcceptAccessTokenAudiences bool `json:"accept_access_token_audiences,omitempty"`
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// resolveBearer authenticates a request by its bearer token. It never sets
// cookies or redirects: failures are 401 with an RFC 6750 challenge.
func (m *OIDCAuth) resolveBearer(w http.ResponseWriter, r *http.Request, raw string) (*principal, error) {
	v, sub, err := m.verifyBearer(r.Context(), raw)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			m.logger.Error("cannot validate bearer token", zap.Error(err))
			return nil, m.unavailable(w, r)
		}
		m.logger.Info("bearer token refused", zap.Error(err))
		metrics.bearerRequests.WithLabelValues("refused").Inc()
		bearerChallenge(w, r, "invalid_token")
		return nil, m.fail(w, r, http.StatusUnauthorized, "The bearer token is invalid or expired.", "")
	}
	pseudo := &session{Subject: sub, Created: claimInt(v.claims, "iat")}
	pseudo.SID, _ = v.claims["sid"].(string)
	if m.app.revoked(pseudo) {
		bearerChallenge(w, r, "invalid_token")
		return nil, m.fail(w, r, http.StatusUnauthorized, "The bearer token's session has ended.", "")
	}
	id := v.identityFor(pseudo)
	if !m.allowed(id) {
		bearerChallenge(w, r, "insufficient_scope")
		return nil, m.forbidden(w, r)
	}
	metrics.bearerRequests.WithLabelValues("accepted").Inc()
	return &principal{id: id, accessToken: raw, expiry: v.expiry}, nil
}

// verifyBearer checks a bearer access token: signature (JWKS, pinned
// algorithms), iss, aud holding the client ID or an accepted audience,
// exp, iat and sub present. Outcomes are cached like session tokens, in a
// cache of their own since the accepted audiences differ.
func (m *OIDCAuth) verifyBearer(ctx context.Context, raw string) (*verifiedToken, string, error) {
	now := m.now()
	gen := m.provider.keyRemovals()
	if v := m.app.bearer.get(raw); v != nil && v.keyGen == gen {
		if v.expiry <= now.Unix() {
			return nil, "", errors.New("token expired")
		}
		// The cache is shared by every handler of this client, and each
		// may accept other audiences.
		if !m.bearerAudienceOK(claimStrings(v.claims["aud"])) {
			return nil, "", fmt.Errorf("audience %q not accepted", v.claims["aud"])
		}
		sub, _ := v.claims["sub"].(string)
		return v, sub, nil
	}
	if !isJWT(raw) {
		return nil, "", errors.New("not a JWT")
	}
	meta, err := m.provider.metadata(ctx, now)
	if err != nil {
		return nil, "", err
	}
	// The audience is checked below, against several accepted ones.
	tok, err := verifyToken(ctx, m.provider.client, m.accessVerifier(meta, m.provider.keys.untrusted()), raw)
	if err != nil {
		return nil, "", err
	}
	if !m.bearerAudienceOK(tok.Audience) {
		return nil, "", fmt.Errorf("audience %q not accepted", tok.Audience)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, "", err
	}
	typ, err := jwtType(raw)
	if err != nil {
		return nil, "", err
	}
	if err := checkAccessTokenShape(typ, claims); err != nil {
		return nil, "", err
	}
	if err := m.checkIssuedAtClaim(claims); err != nil {
		return nil, "", err
	}
	if tok.Subject == "" {
		return nil, "", errors.New("token has no sub")
	}
	v := &verifiedToken{expiry: tok.Expiry.Unix(), claims: claims, keyGen: gen}
	m.app.bearer.put(raw, v, now.Unix())
	return v, tok.Subject, nil
}

// bearerAudienceOK reports whether a bearer token's audience holds the
// client ID or one of bearer's audiences; access_token_audiences count
// only when the operator says so (accept_access_token_audiences), since
// they name APIs the sessions' tokens are for, not necessarily this one.
func (m *OIDCAuth) bearerAudienceOK(auds []string) bool {
	for _, aud := range auds {
		if aud == m.ClientID || containsString(m.Bearer.Audiences, aud) ||
			(m.Bearer.AcceptAccessTokenAudiences && containsString(m.AccessTokenAudiences, aud)) {
			return true
		}
	}
	return false
}

// checkAccessTokenShape accepts only access tokens as bearer tokens. The
// IdP signs ID tokens and logout tokens with the same keys, often for the
// same audience, but they travel in URLs (id_token_hint) and to the
// back-channel endpoint, and are no credential for an API. An access token
// says so in typ (RFC 9068: at+jwt), or, without that, by the claims of
// the IdP's access tokens (client_id or scope, or Okta's cid and Entra
// ID's scp); a claim only ID or logout tokens carry refuses it either way.
func checkAccessTokenShape(typ string, claims map[string]any) error {
	for _, c := range []string{"events", "nonce", "at_hash", "c_hash"} {
		if _, ok := claims[c]; ok {
			return fmt.Errorf("token has %s: not an access token", c)
		}
	}
	switch strings.TrimPrefix(strings.ToLower(typ), "application/") {
	case "at+jwt":
		return nil
	case "", "jwt":
		for _, c := range []string{"client_id", "scope", "cid", "scp"} {
			if _, ok := claims[c]; ok {
				return nil
			}
		}
		return errors.New("token has neither typ at+jwt nor an access token's client_id or scope")
	default:
		return fmt.Errorf("token typ %q is not an access token", truncate(typ, 40))
	}
}

// claimStrings reads a string-or-array claim such as aud.
func claimStrings(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// bearerChallenge sets an RFC 6750 challenge; code may be empty.
func bearerChallenge(w http.ResponseWriter, r *http.Request, code string) {
	v := `Bearer realm="` + sanitizeRealm(r.Host) + `"`
	if code != "" {
		v += `, error="` + code + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
}

func claimInt(claims map[string]any, name string) int64 {
	f, _ := claims[name].(float64)
	return int64(f)
}

// handleSessionInfo tells a single-page app who is signed in: the user's
// claims and when the session and access token expire, never a token.
// Without a session it answers 401, never a redirect.
func (m *OIDCAuth) handleSessionInfo(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.fail(w, r, http.StatusMethodNotAllowed, "Use GET.", "")
	}
	r = r.WithContext(context.WithValue(r.Context(), apiOnlyKey{}, true))
	p, err := m.resolve(w, r, true)
	if p == nil {
		return err
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
		list := m.enrich(r, p.subject())
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
