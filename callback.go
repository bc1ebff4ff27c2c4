package oidcauth

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// maxCallbackQuery bounds the callback's query string: a real one is a
// code, a state and an iss, far below this.
const maxCallbackQuery = 8 << 10

// handleCallback completes a login: an error from the IdP is shown first,
// then the state is checked (CSRF), the code exchanged, the tokens
// validated, and the user sent back to where the login started.
func (m *OIDCAuth) handleCallback(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "The login callback accepts only GET.", "")
	}
	w.Header().Set("Cache-Control", "no-store")
	if len(r.URL.RawQuery) > maxCallbackQuery {
		return m.answer.fail(w, r, http.StatusRequestURITooLong, "The login response is too large.", m.LoginPath)
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return m.answer.fail(w, r, http.StatusBadRequest, "The login response is malformed.", m.LoginPath)
	}
	for _, k := range []string{"state", "code", "error", "iss"} {
		if len(q[k]) > 1 {
			return m.answer.fail(w, r, http.StatusBadRequest, "The login response repeats the parameter "+k+".", m.LoginPath)
		}
	}
	now := m.now()
	state := q.Get("state")

	if idpErr := q.Get("error"); idpErr != "" {
		retry := m.LoginPath
		if st := m.cookies.PeekState(r, state, now); st != nil {
			_, _ = m.cookies.TakeState(w, r, state, now)
			retry = m.LoginPath + "?return_to=" + url.QueryEscape(st.ReturnTo)
		}
		m.logger.Warn("identity provider returned an error",
			zap.String("error", truncate(idpErr, 100)),
			zap.String("error_description", truncate(q.Get("error_description"), 300)))
		msg := "Sign-in did not complete: " + truncate(idpErr, 100)
		if d := q.Get("error_description"); d != "" {
			msg += " (" + truncate(d, 300) + ")"
		}
		countLogin("failed", "idp_error")
		return m.answer.failQuoting(w, r, http.StatusUnauthorized, "Sign-in did not complete: the identity provider reported an error.", msg, retry)
	}

	st, err := m.cookies.TakeState(w, r, state, now)
	if err != nil {
		m.logger.Info("login callback refused", zap.String("reason", err.Error()))
		countLogin("failed", "state")
		return m.answer.fail(w, r, http.StatusBadRequest, "This sign-in link is invalid or has expired.", m.LoginPath)
	}
	retry := m.LoginPath + "?return_to=" + url.QueryEscape(st.ReturnTo)
	// The browser forgets a used state cookie, but a copy of it must not
	// work either: each state is accepted once.
	if fresh, err := m.app.store.ClaimOnce(r.Context(), "state:"+st.State, time.Unix(st.Created, 0).Add(cookie.StateLifetime+time.Minute)); err == nil && !fresh {
		m.logger.Warn("login callback refused", zap.String("reason", "state already used"))
		countLogin("failed", "state")
		return m.answer.fail(w, r, http.StatusBadRequest, "This sign-in link was already used.", m.LoginPath)
	} else if err != nil {
		m.logger.Warn("cannot record the login state as used", zap.Error(err))
	}

	meta, err := m.provider.Metadata(r.Context())
	if err != nil {
		m.logger.Error("cannot complete login", zap.Error(err))
		countLogin("failed", "idp_unavailable")
		return m.answer.fail(w, r, http.StatusServiceUnavailable, "The identity provider is unavailable. Please try again in a moment.", retry)
	}
	// RFC 9207: the authorization response names its issuer, which stops
	// a mix-up with another IdP's response.
	if iss, ok := q["iss"]; ok && iss[0] != m.Issuer {
		m.logger.Warn("login callback from another issuer", zap.String("iss", truncate(iss[0], 200)))
		countLogin("failed", "issuer")
		return m.answer.fail(w, r, http.StatusBadRequest, "The login response came from an unexpected identity provider.", retry)
	} else if !ok && meta.IssParamSupported {
		countLogin("failed", "issuer")
		return m.answer.fail(w, r, http.StatusBadRequest, "The login response does not name its identity provider.", retry)
	}
	code := q.Get("code")
	if code == "" {
		countLogin("failed", "no_code")
		return m.answer.fail(w, r, http.StatusBadRequest, "The login response has no authorization code.", retry)
	}

	ts, err := m.tokens.exchange(r.Context(), meta, resolveAgainst(r, m.redirectURL), code, st)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			m.logger.Error("code exchange failed", zap.Error(err))
			countLogin("failed", "idp_unavailable")
			return m.answer.fail(w, r, http.StatusBadGateway, "The identity provider did not answer. Please try again.", retry)
		}
		m.logger.Warn("login refused", zap.Error(err))
		countLogin("failed", "token_refused")
		return m.answer.fail(w, r, http.StatusBadRequest, "Sign-in failed. Please try again.", retry)
	}

	if msg := m.checkAuthentication(ts.Claims, st, now); msg != "" {
		m.logger.Warn("login refused: "+msg, zap.String("sub", ts.Subject))
		countLogin("failed", "step_up")
		return m.answer.page(w, r, http.StatusForbidden, "The identity provider did not confirm the stronger sign-in this page needs ("+msg+").", retry, "Try again")
	}

	created := now.Unix()
	if m.app.store.SubjectRevoked(ts.Subject, created) {
		// The user's sessions were revoked in this same second, before this
		// one began (the revocation is known here already): it counts from
		// the next second, or its first request would find it revoked and
		// sign in again, in a loop.
		created++
	}
	s := &session{
		ID:           randomString(16),
		Subject:      ts.Subject,
		SID:          ts.SID,
		Created:      created,
		AccessToken:  ts.AccessToken,
		RefreshToken: ts.RefreshToken,
		Expiry:       ts.Expiry.Unix(),
		RefreshAt:    refreshTime(now, ts.Expiry).Unix(),
		Claims:       ts.Claims,
	}
	maxAge := m.tokens.maxAge(s, now)
	m.cookies.MarkLogin(w, r)
	if err := m.cookies.WriteSession(w, r, s, maxAge); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if err := m.cookies.WriteIDToken(w, r, m.LogoutPath, ts.IDToken, maxAge); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	m.logger.Info("login", zap.String("sub", s.Subject), zap.String("sid", s.SID))
	countLogin("completed", "")
	m.tokens.registerSession(r, s)
	m.tokens.recordSID(r.Context(), s.SID)

	target, ok := safeReturnTo(st.ReturnTo)
	if !ok {
		target = "/"
	}
	if st.Post {
		return resubmitPost(w, st, target)
	}
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}
