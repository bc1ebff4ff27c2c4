package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/internal/store"
	"go.uber.org/zap"
)

var errReplay = errors.New("token was already used (jti replay)")

const (
	maxLogoutBody = 64 << 10
	// A logout token older than oidc.MaxLogoutTokenAge is refused; its jti
	// is remembered for longer, so a replay is caught either way.
	jtiRetention = oidc.MaxLogoutTokenAge + 2*clockLeeway
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
	replayed := errors.Is(err, errReplay)
	if replayed && !m.logoutInForce(lt) {
		// Its jti was claimed but its logout is not in force: the claim's
		// release was lost (Redis failing over between the two writes).
		// The IdP's retry records it; a replay can end nothing that the
		// first delivery would not have ended.
		err = nil
	}
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
	rev := store.Revocation{Kind: store.RevokeSID, Value: lt.SID, Until: now.Add(m.sessionLifetime).Unix()}
	if lt.SID == "" {
		rev = store.Revocation{Kind: store.RevokeSubject, Value: lt.Subject, At: now.Unix(), Until: rev.Until}
		if replayed && lt.IssuedAt != nil {
			// Sessions begun since the token was issued stay.
			rev.At = min(rev.At, int64(*lt.IssuedAt))
		}
	}
	if err := m.app.store.Revoke(r.Context(), rev); err != nil {
		// Answering 200 would make the IdP forget a logout we may lose.
		m.app.store.ReleaseOnce(r.Context(), "jti:"+lt.JTI)
		m.logger.Error("back-channel logout not recorded", zap.Error(err))
		countLogout("backchannel", "refused", "store_unavailable")
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the logout now")
	}
	m.logger.Info("back-channel logout", zap.String("sub", lt.Subject), zap.String("sid", lt.SID))
	countLogout("backchannel", "accepted", "")
	w.WriteHeader(http.StatusOK)
	return nil
}

// verifyLogoutToken checks a logout token (see
// oidc.Client.VerifyLogoutToken) and that its jti was never seen before.
func (m *OIDCAuth) verifyLogoutToken(r *http.Request, raw string) (*oidc.LogoutClaims, error) {
	c, err := m.client.VerifyLogoutToken(r.Context(), raw)
	if err != nil {
		return nil, err
	}
	now := m.now()
	fresh, err := m.app.store.ClaimOnce(r.Context(), "jti:"+c.JTI, now.Add(jtiRetention))
	if err != nil {
		return nil, fmt.Errorf("%w: recording jti: %v", errIdPUnavailable, err)
	}
	if !fresh {
		return c, errReplay
	}
	return c, nil
}

// logoutInForce reports whether the logout a (valid) token asks for is
// already enforced here.
func (m *OIDCAuth) logoutInForce(lt *oidc.LogoutClaims) bool {
	if lt == nil {
		return true
	}
	if lt.SID != "" {
		return m.app.store.SIDRevoked(lt.SID)
	}
	at := m.now().Unix()
	if lt.IssuedAt != nil {
		at = int64(*lt.IssuedAt)
	}
	return m.app.store.SubjectRevoked(lt.Subject, at)
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
	switch known, err := m.app.store.KnownSID(r.Context(), sid); {
	case err != nil:
		m.logger.Error("front-channel logout: store unavailable", zap.Error(err))
		countLogout("frontchannel", "refused", "store_unavailable")
		return m.fail(w, r, http.StatusServiceUnavailable, "The logout cannot be recorded now.", "")
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
