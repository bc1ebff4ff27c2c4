package oidcauth

import (
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

	lt, err := m.tokens.verifyLogoutToken(r, r.PostForm.Get("logout_token"))
	replayed := errors.Is(err, errReplay)
	if replayed && !m.tokens.logoutInForce(lt) {
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
func (tk *tokens) verifyLogoutToken(r *http.Request, raw string) (*oidc.LogoutClaims, error) {
	c, err := tk.client.VerifyLogoutToken(r.Context(), raw)
	if err != nil {
		return nil, err
	}
	now := tk.now()
	fresh, err := tk.app.store.ClaimOnce(r.Context(), "jti:"+c.JTI, now.Add(jtiRetention))
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
func (tk *tokens) logoutInForce(lt *oidc.LogoutClaims) bool {
	if lt == nil {
		return true
	}
	if lt.SID != "" {
		return tk.app.store.SIDRevoked(lt.SID)
	}
	at := tk.now().Unix()
	if lt.IssuedAt != nil {
		at = int64(*lt.IssuedAt)
	}
	return tk.app.store.SubjectRevoked(lt.Subject, at)
}
