package oidcauth

import (
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ServeHTTP answers the auth paths itself and lets every other request
// through only with a valid session.
func (m *OIDCAuth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch r.URL.Path {
	case m.callbackPath:
		return m.handleCallback(w, r)
	case m.LoginPath:
		return m.handleLogin(w, r)
	case m.LogoutPath:
		return m.handleLogout(w, r)
	case m.BackchannelLogoutPath:
		return m.handleBackchannelLogout(w, r)
	case m.SessionInfoPath:
		return m.handleSessionInfo(w, r)
	case m.InitiateLoginPath:
		return m.handleInitiateLogin(w, r)
	case m.WebhookPath:
		return m.handleWebhook(w, r)
	}
	if r.URL.Path == m.FrontchannelLogoutPath && m.FrontchannelLogoutPath != "" {
		return m.handleFrontchannelLogout(w, r)
	}
	if m.ujwt != nil && r.URL.Path == m.JWKSPath {
		return m.serveJWKS(w, r)
	}
	if m.isResourceMetadataPath(r.URL.Path) {
		return m.handleResourceMetadata(w, r)
	}
	return m.authenticate(w, r, next)
}

// authenticate lets a request with a valid session (or bearer token) go on
// to next, with the user's identity in placeholders.
func (m *OIDCAuth) authenticate(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p, ok, err := m.resolve(w, r)
	switch {
	case err != nil:
		return m.answer.failed(w, r, err)
	case !ok && p.refused == stepUp && !isAPIRequest(r) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		// A stronger login, back to this page; the session stays.
		return m.login.begin(w, r, r.URL.RequestURI(), m.stepUpHints(m.requiredValues("acr"), m.maxAgeSeconds()))
	case !ok && p.refused.signIn() && !isAPIRequest(r) && browserNavigationMethod(r.Method):
		// A browser without a session: to the IdP, keeping a posted form.
		if p.refused == sessionEnded {
			m.cookies.ClearSession(w, r, m.LogoutPath)
		}
		if r.Method == http.MethodPost {
			return m.login.preservePost(w, r)
		}
		return m.login.begin(w, r, r.URL.RequestURI(), m.stepUpHints(m.requiredValues("acr"), m.maxAgeSeconds()))
	case !ok:
		return m.answer.refuse(w, r, p.refused)
	}
	stripIdentityHeaders(r.Header)
	// The upstream never sees this handler's cookies: its logs must not
	// hold a session that can be replayed.
	m.cookies.StripOwnCookies(r.Header)
	if m.PassAccessToken {
		r.Header.Set("Authorization", "Bearer "+p.accessToken)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if m.ujwt != nil {
		tok, err := m.passAssertion(r, p)
		if err != nil {
			return err
		}
		// Before the identity's provider, which answers every other
		// http.auth.user.* name.
		repl.Map(assertionPlaceholder(tok))
	}
	if m.ManagementAPI != nil {
		// Before the identity's provider, which answers every other
		// http.auth.user.* name.
		repl.Map(membershipPlaceholders(m.mgmt.enrich(r, p.subject())))
	}
	repl.Map(p.id.provide)
	if !m.AllowSharedCache {
		w = &privateResponse{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	}
	return next.ServeHTTP(w, r)
}

// privateResponse adds `Cache-Control: private` to a protected response
// that has no Cache-Control of its own, when its header is sent.
type privateResponse struct {
	caddyhttp.ResponseWriterWrapper
	marked bool
}

func (w *privateResponse) mark() {
	if w.marked {
		return
	}
	w.marked = true
	if h := w.Header(); len(h.Values("Cache-Control")) == 0 {
		h.Set("Cache-Control", "private")
	}
}

func (w *privateResponse) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		w.mark()
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *privateResponse) Write(b []byte) (int, error) {
	w.mark()
	return w.ResponseWriterWrapper.Write(b)
}

func (w *privateResponse) ReadFrom(r io.Reader) (int64, error) {
	w.mark()
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError is found by http.ResponseController before it unwraps, so
// a flush that sends the header first marks it too.
func (w *privateResponse) FlushError() error {
	w.mark()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// browserNavigationMethod reports whether a browser can navigate (or
// submit a form) with method. A PUT, PATCH or DELETE without a session
// comes from a script or an API client, which a login redirect would
// only confuse: they get a 401, whatever their headers say.
func browserNavigationMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodPost
}

// identityHeaderPrefixes are request header names (lowercased, '_' read
// as '-') that an upstream could take for identity set by this handler;
// a client's copies are removed before the request goes on.
var identityHeaderPrefixes = []string{
	"x-auth-", "x-oidc-", "x-forwarded-user", "x-forwarded-email", "x-forwarded-access-token",
	"x-forwarded-preferred-username", "x-forwarded-groups", "x-remote-user",
	"remote-user", "x-user", "x-email",
}

func stripIdentityHeaders(h http.Header) {
	for name := range h {
		// Every prefix starts with x or r: most of a browser's headers
		// (Accept, User-Agent, Sec-Fetch-*, ...) are passed at the first byte.
		if name == "" || name[0]|0x20 != 'x' && name[0]|0x20 != 'r' {
			continue
		}
		for _, p := range identityHeaderPrefixes {
			if headerHasPrefix(name, p) {
				delete(h, name)
				break
			}
		}
	}
}
