package oidcauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

var errReplay = errors.New("token was already used (jti replay)")

const (
	backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"
	maxLogoutBody    = 64 << 10
	// A logout token older than this is refused; its jti is remembered
	// for longer, so a replay is caught either way.
	maxLogoutTokenAge = 10 * time.Minute
	jtiRetention      = maxLogoutTokenAge + 2*clockLeeway
)

// handleBackchannelLogout receives the IdP's logout token (OIDC Back-Channel
// Logout 1.0) and ends every session it names. It never needs a session
// and never redirects.
func (m *OIDCAuth) handleBackchannelLogout(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		h.Set("Allow", "POST")
		countLogout("backchannel", "refused", "bad_request")
		return backchannelError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		countLogout("backchannel", "refused", "bad_request")
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "expected a form-encoded body")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutBody)
	if err := r.ParseForm(); err != nil {
		countLogout("backchannel", "refused", "bad_request")
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
	}
	if len(r.PostForm["logout_token"]) != 1 || r.PostForm.Get("logout_token") == "" {
		countLogout("backchannel", "refused", "bad_request")
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "exactly one logout_token is required")
	}

	lt, err := m.verifyLogoutToken(r, r.PostForm.Get("logout_token"))
	if err != nil {
		m.logger.Warn("back-channel logout refused", zap.String("reason", err.Error()))
		if errors.Is(err, errIdPUnavailable) {
			// Not the token's fault: a 5xx makes the IdP retry later.
			countLogout("backchannel", "refused", "unavailable")
			return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot verify the token now")
		}
		reason := "invalid_token"
		if errors.Is(err, errReplay) {
			reason = "replay"
		}
		countLogout("backchannel", "refused", reason)
		return backchannelError(w, http.StatusBadRequest, "invalid_request", err.Error())
	}

	now := m.now()
	rev := revocation{Kind: revokeSID, Value: lt.SID, Until: now.Add(m.sessionLifetime).Unix()}
	if lt.SID == "" {
		rev = revocation{Kind: revokeSubject, Value: lt.Subject, At: now.Unix(), Until: rev.Until}
	}
	if err := m.app.revoke(r.Context(), rev); err != nil {
		// Answering 200 would make the IdP forget a logout we may lose.
		m.app.backend.releaseOnce(r.Context(), "jti:"+lt.JTI)
		m.logger.Error("back-channel logout not recorded", zap.Error(err))
		countLogout("backchannel", "refused", "store_unavailable")
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the logout now")
	}
	m.logger.Info("back-channel logout", zap.String("sub", lt.Subject), zap.String("sid", lt.SID))
	countLogout("backchannel", "accepted", "")
	w.WriteHeader(http.StatusOK)
	return nil
}

type logoutClaims struct {
	Subject  string                     `json:"sub"`
	SID      string                     `json:"sid"`
	JTI      string                     `json:"jti"`
	IssuedAt *float64                   `json:"iat"`
	Expiry   *float64                   `json:"exp"`
	Events   map[string]json.RawMessage `json:"events"`
}

// verifyLogoutToken applies section 2.6 of the spec: signature with the
// IdP's keys and pinned algorithms, iss, aud containing our client ID, iat
// (not in the future, not too old), exp when present, typ when present,
// sub and/or sid, the back-channel event as a JSON object, no nonce, and a
// jti never seen before.
func (m *OIDCAuth) verifyLogoutToken(r *http.Request, raw string) (*logoutClaims, error) {
	now := m.now()
	meta, err := m.provider.metadata(r.Context(), now)
	if err != nil {
		return nil, err
	}
	if typ, err := jwtType(raw); err != nil {
		return nil, err
	} else if typ != "" && typ != "logout+jwt" && typ != "application/logout+jwt" && typ != "JWT" {
		return nil, fmt.Errorf("typ %q is not a logout token", typ)
	}
	v := oidc.NewVerifier(m.Issuer, m.provider.keys.untrusted(), &oidc.Config{
		ClientID:             m.ClientID,
		SupportedSigningAlgs: meta.algs,
		SkipExpiryCheck:      true, // exp is optional in logout tokens; checked below
		Now:                  m.now,
	})
	tok, err := verifyToken(r.Context(), m.provider.client, v, raw)
	if err != nil {
		return nil, err
	}
	var c logoutClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	var present map[string]json.RawMessage
	if err := tok.Claims(&present); err != nil {
		return nil, err
	}
	if err := m.checkIssuedAt(c.IssuedAt); err != nil {
		return nil, err
	}
	if now.Sub(time.Unix(int64(*c.IssuedAt), 0)) > maxLogoutTokenAge {
		return nil, errors.New("token iat is too old")
	}
	if c.Expiry != nil && time.Unix(int64(*c.Expiry), 0).Before(now.Add(-clockLeeway)) {
		return nil, errors.New("token expired")
	}
	if c.Subject == "" && c.SID == "" {
		return nil, errors.New("token has neither sub nor sid")
	}
	ev, ok := c.Events[backchannelEvent]
	if !ok {
		return nil, errors.New("token lacks the back-channel logout event")
	}
	var evObj map[string]any
	if err := json.Unmarshal(ev, &evObj); err != nil || evObj == nil {
		return nil, errors.New("the back-channel logout event is not a JSON object")
	}
	if _, ok := present["nonce"]; ok {
		// Even "nonce": null: the spec forbids the claim, not a value.
		return nil, errors.New("token has a nonce")
	}
	if c.JTI == "" {
		return nil, errors.New("token has no jti")
	}
	fresh, err := m.app.backend.claimOnce(r.Context(), "jti:"+c.JTI, now.Add(jtiRetention))
	if err != nil {
		return nil, fmt.Errorf("%w: recording jti: %v", errIdPUnavailable, err)
	}
	if !fresh {
		return nil, errReplay
	}
	return &c, nil
}

// jwtType returns the typ header of a compact JWS without verifying it.
func jwtType(raw string) (string, error) {
	dot := strings.IndexByte(raw, '.')
	if dot <= 0 {
		return "", errors.New("malformed jwt")
	}
	hdr, err := base64.RawURLEncoding.DecodeString(raw[:dot])
	if err != nil {
		return "", errors.New("malformed jwt header")
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil {
		return "", errors.New("malformed jwt header")
	}
	return h.Typ, nil
}

func backchannelError(w http.ResponseWriter, status int, code, desc string) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
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
		return m.fail(w, r, http.StatusMethodNotAllowed, "Use GET.", "")
	}
	q := r.URL.Query()
	iss, sid := q.Get("iss"), q.Get("sid")
	if iss != m.Issuer || sid == "" || len(sid) > 512 {
		m.logger.Warn("front-channel logout refused", zap.String("reason", "iss and sid required, iss must be the issuer"))
		countLogout("frontchannel", "refused", "bad_request")
		return m.fail(w, r, http.StatusBadRequest, "A front-channel logout needs this site's iss and a sid.", "")
	}
	switch known, err := m.app.backend.knownSID(r.Context(), sid); {
	case err != nil:
		m.logger.Error("front-channel logout: store unavailable", zap.Error(err))
		countLogout("frontchannel", "refused", "store_unavailable")
		return m.fail(w, r, http.StatusServiceUnavailable, "The logout cannot be recorded now.", "")
	case !known:
		// The same answer as for a logout, without its write.
		m.logger.Info("front-channel logout of a sid not issued here; ignored")
		countLogout("frontchannel", "refused", "unknown_sid")
	case m.app.sidRevoked(sid):
		countLogout("frontchannel", "accepted", "")
	default:
		rev := revocation{Kind: revokeSID, Value: sid, Until: m.now().Add(m.sessionLifetime).Unix()}
		if err := m.app.revoke(r.Context(), rev); err != nil {
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

// recordSID notes the IdP session of a session issued here, for
// front-channel logout (only while it is on).
func (m *OIDCAuth) recordSID(ctx context.Context, sid string) {
	if m.FrontchannelLogoutPath == "" || sid == "" {
		return
	}
	if err := m.app.backend.recordSID(ctx, sid, m.now().Add(m.sessionLifetime)); err != nil {
		m.logger.Warn("cannot record the session's sid; a front-channel logout of it will be ignored", zap.Error(err))
	}
}
