package oidcauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
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
	if m.isResourceMetadataPath(r.URL.Path) {
		return m.handleResourceMetadata(w, r)
	}
	if r.URL.Path == m.FrontchannelLogoutPath && m.FrontchannelLogoutPath != "" {
		return m.handleFrontchannelLogout(w, r)
	}
	if m.ujwt != nil && r.URL.Path == m.JWKSPath {
		return m.serveJWKS(w, r)
	}
	return m.authenticate(w, r, next)
}

// principal is a request's authenticated user.
type principal struct {
	session     *session // nil for a bearer token
	id          *identity
	accessToken string
	expiry      int64 // access token expiry, unix seconds
}

func (p *principal) subject() string {
	sub, _ := p.id.claims["sub"].(string)
	return sub
}

// authenticate lets a request with a valid session (or bearer token) go on
// to next, with the user's identity in placeholders.
func (m *OIDCAuth) authenticate(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p, err := m.resolve(w, r, false)
	if p == nil {
		return err
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
		repl.Map(membershipPlaceholders(m.enrich(r, p.subject())))
	}
	repl.Map(p.id.replace)
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

// resolve finds the request's user: session lifetime, revocation, refresh
// when the access token is due, validation of the access token, and the
// require rules. A nil principal means the response is written (a login
// redirect, a 401, 403 or 503) and the error is the handler's result.
// api answers as to an API call whatever the request looks like.
func (m *OIDCAuth) resolve(w http.ResponseWriter, r *http.Request, api bool) (*principal, error) {
	s, err := m.cookies.ReadSession(r)
	if err != nil {
		if m.Bearer != nil {
			if scheme, tok, ok := accessToken(r); ok {
				return m.resolveBearer(w, r, scheme, tok)
			}
		}
		return nil, m.unauthenticated(w, r, false, api)
	}
	now := m.now()
	if now.Unix() >= s.Created+int64(m.sessionLifetime/time.Second) {
		m.logger.Info("session reached session_lifetime", zap.String("sub", s.Subject))
		countRejected("lifetime")
		countSessionEnded("lifetime")
		return nil, m.unauthenticated(w, r, true, api)
	}
	if m.app.revoked(s) {
		m.logger.Info("session was logged out", zap.String("sub", s.Subject), zap.String("sid", s.SID))
		countRejected("revoked")
		return nil, m.unauthenticated(w, r, true, api)
	}

	touch := false
	if m.IdleTimeout > 0 {
		if m.idleOver(r.Context(), s, now.Unix()) {
			m.logger.Info("session reached idle_timeout", zap.String("sub", s.Subject))
			countRejected("idle")
			countSessionEnded("idle")
			return nil, m.unauthenticated(w, r, true, api)
		}
		touch = now.Unix()-lastActive(s) >= m.touchInterval()
	}

	var newIDToken string
	refreshed := false
	if now.Unix() >= s.RefreshAt || m.app.store.MustRefresh(s.Subject, max(s.Issued, s.Created)) {
		if s.RefreshToken == "" {
			if now.Unix() >= s.Expiry {
				countRejected("expired")
				return nil, m.unauthenticated(w, r, true, api)
			}
		} else {
			// Decoded sessions are shared through the codec's cache: refresh
			// a copy.
			cp := *s
			s = &cp
			ts, err := m.refreshSession(r.Context(), s, now)
			switch {
			case err == nil:
				newIDToken = ts.IDToken
				refreshed = true
			case errors.Is(err, errIdPUnavailable) && now.Unix() < s.Expiry:
				// The token still works; try again on a later request.
				m.logger.Warn("refresh postponed: identity provider unavailable", zap.Error(err))
			case errors.Is(err, errIdPUnavailable):
				m.logger.Error("session expired and the identity provider is unavailable", zap.Error(err))
				return nil, m.unavailable(w, r)
			default:
				m.logger.Info("refresh refused; session ended", zap.String("sub", s.Subject), zap.Error(err))
				countRejected("refresh_refused")
				return nil, m.unauthenticated(w, r, true, api)
			}
			// A logout may have arrived while the refresh was under way: the
			// new tokens must not bring the session back.
			if m.app.revoked(s) {
				countRejected("revoked")
				return nil, m.unauthenticated(w, r, true, api)
			}
		}
	}

	v, err := m.verifyAccessToken(r.Context(), s)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			m.logger.Error("cannot validate access token", zap.Error(err))
			return nil, m.unavailable(w, r)
		}
		m.logger.Info("access token refused", zap.String("sub", s.Subject), zap.Error(err))
		countRejected("invalid_token")
		return nil, m.unauthenticated(w, r, true, api)
	}

	id := v.identityFor(s)
	if acr, maxAge, need := m.stepUpNeeded(id.claims, now); need {
		return nil, m.stepUp(w, r, api, acr, maxAge)
	}
	if !m.allowed(id) {
		m.logger.Info("access denied by require rules", zap.String("sub", s.Subject))
		countRejected("forbidden")
		return nil, m.forbidden(w, r)
	}

	if touch {
		cp := *s
		s = &cp
		s.Seen = now.Unix()
		m.touch(s, s.Seen)
	}
	if refreshed || s.OldKey || touch {
		maxAge := m.sessionMaxAge(s, now)
		if err := m.cookies.WriteSession(w, r, s, maxAge); err != nil {
			return nil, caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if newIDToken != "" {
			if err := m.cookies.WriteIDToken(w, r, m.LogoutPath, newIDToken, maxAge); err != nil {
				return nil, caddyhttp.Error(http.StatusInternalServerError, err)
			}
		}
	}
	// The session holds: a login that just completed is no loop.
	m.cookies.EndLoginLoop(w, r)
	return &principal{session: s, id: id, accessToken: s.AccessToken, expiry: v.expiry}, nil
}

func (m *OIDCAuth) unavailable(w http.ResponseWriter, r *http.Request) error {
	return m.fail(w, r, http.StatusServiceUnavailable, "The identity provider is unavailable. Please try again in a moment.", "")
}

// refreshSession refreshes s in place. Concurrent requests of one session
// share one call to the IdP.
func (m *OIDCAuth) refreshSession(ctx context.Context, s *session, now time.Time) (*tokenSet, error) {
	fresh := func(ts *tokenSet) bool { return m.now().Before(refreshTime(now, ts.Expiry)) }
	old := s.RefreshToken
	// Detached from the request: other requests wait on this outcome
	// even if the first client goes away.
	ts, shared, err := store.Coordinate(context.WithoutCancel(ctx), m.app.store, now, m.refreshCall(old, s.Subject, fresh))
	if err == nil && ts.Subject != s.Subject {
		// Never another user's tokens for this session, wherever they came from.
		err = &refreshFailed{Err: errors.New("refresh outcome is for another user")}
	}
	var refused *refreshFailed
	switch {
	case err == nil && shared:
		countRefresh("coalesced")
	case err == nil:
		countRefresh("ok")
		m.logger.Debug("tokens refreshed", zap.String("sub", s.Subject), zap.String("sid", s.SID))
	case errors.As(err, &refused):
		countRefresh("refused")
	default:
		countRefresh("unavailable")
	}
	if err != nil {
		return nil, err
	}
	s.AccessToken = ts.AccessToken
	if ts.RefreshToken != "" {
		s.RefreshToken = ts.RefreshToken
	}
	s.Expiry = ts.Expiry.Unix()
	s.RefreshAt = refreshTime(m.now(), ts.Expiry).Unix()
	s.Issued = m.now().Unix()
	if ts.IDToken != "" {
		s.Claims = ts.Claims
		if ts.SID != "" && ts.SID != s.SID {
			s.SID = ts.SID
			m.recordSID(ctx, s.SID)
		}
	}
	return ts, nil
}

// refreshTime is when a token expiring at exp is refreshed: a little
// before it expires (30 s, or a quarter of a short lifetime).
func refreshTime(now, exp time.Time) time.Time {
	margin := min(30*time.Second, exp.Sub(now)/4)
	return exp.Add(-max(margin, 0))
}

func (m *OIDCAuth) sessionMaxAge(s *session, now time.Time) int {
	return int(time.Unix(s.Created, 0).Add(m.sessionLifetime).Sub(now) / time.Second)
}

// unauthenticated sends a navigation to the IdP and answers an API call
// (or any request when api is set) with 401. clear expires the cookies of
// a session that has ended.
func (m *OIDCAuth) unauthenticated(w http.ResponseWriter, r *http.Request, clear, api bool) error {
	if clear {
		m.cookies.ClearSession(w, r, m.LogoutPath)
	}
	if api || isAPIRequest(r) || !browserNavigationMethod(r.Method) {
		m.bearerChallenge(w, r, "")
		return m.fail(w, r, http.StatusUnauthorized, "Authentication required.", m.LoginPath)
	}
	if r.Method == http.MethodPost {
		return m.preservePost(w, r)
	}
	return m.beginLogin(w, r, r.URL.RequestURI(), m.stepUpHints(m.requiredACR(), m.maxAgeSeconds()))
}

// handleLogin starts a login explicitly; ?return_to= says where to go next.
func (m *OIDCAuth) handleLogin(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.fail(w, r, http.StatusMethodNotAllowed, "Use GET to start a login.", "")
	}
	q := r.URL.Query()
	returnTo := "/"
	if rt := q.Get("return_to"); rt != "" {
		safe, ok := safeReturnTo(rt)
		if !ok {
			return m.fail(w, r, http.StatusBadRequest, "The return_to parameter must be a path on this site.", m.LoginPath)
		}
		returnTo = safe
	}
	hints := map[string]string{}
	for _, name := range loginHintParams {
		if v := q.Get(name); v != "" && len(v) <= 512 {
			hints[name] = v
		}
	}
	return m.beginLogin(w, r, returnTo, hints)
}

// loginHintParams are the query parameters of login_path passed on to the
// authorization request, so a site can offer "sign in with your company"
// links (organization_id, connection_id, domain_hint and provider are
// Scalekit's). Anything else is dropped.
var loginHintParams = []string{"login_hint", "organization_id", "connection_id", "domain_hint", "prompt", "provider"}

// beginLogin stores a new login attempt in its own state cookie and
// redirects to the authorization endpoint.
func (m *OIDCAuth) beginLogin(w http.ResponseWriter, r *http.Request, returnTo string, hints map[string]string) error {
	target, st, err := m.startLogin(w, r, returnTo, false, hints)
	if st == nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// startLogin stores a new login attempt and returns the authorization URL
// to send the browser to. A nil state means the response was written.
func (m *OIDCAuth) startLogin(w http.ResponseWriter, r *http.Request, returnTo string, post bool, hints map[string]string) (string, *loginState, error) {
	if m.cookies.LoginLoop(w, r) {
		m.logger.Error("login loop: logins complete but their sessions do not hold; stopped", zap.Int("round_trips", cookie.MaxLoginLoop))
		countLogin("failed", "loop")
		return "", nil, m.page(w, r, http.StatusBadGateway, "Sign-in keeps failing: you were signed in several times in a row, but the session did not hold. Check that this site may set cookies, then try again; if it keeps happening, tell the site's administrator.", m.LoginPath+"?return_to="+url.QueryEscape(returnTo), "Try again")
	}
	now := m.now()
	meta, err := m.provider.Metadata(r.Context())
	if err != nil {
		m.logger.Error("cannot start login", zap.Error(err))
		return "", nil, m.unavailable(w, r)
	}
	if len(returnTo) > maxReturnToLen {
		returnTo = "/"
	}
	st := &loginState{
		State:    randomString(32),
		Nonce:    randomString(32),
		Verifier: oauth2.GenerateVerifier(),
		ReturnTo: returnTo,
		Created:  now.Unix(),
		Post:     post,
	}
	opts := []oauth2.AuthCodeOption{
		oauth2.SetAuthURLParam("nonce", st.Nonce),
		oauth2.S256ChallengeOption(st.Verifier),
	}
	for k, v := range hints {
		if isStepUpParam(k) {
			continue
		}
		// A link only fills what the operator left open: a pinned
		// organization, connection or prompt stays pinned.
		if _, pinned := m.AuthParams[k]; !pinned {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
	}
	for k, v := range m.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	opts = append(opts, m.stepUpParams(st, hints)...)
	if err := m.cookies.WriteState(w, r, st, now); err != nil {
		return "", nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	target := m.oauthConfig(meta, m.redirectURLFor(r)).AuthCodeURL(st.State, opts...)
	countLogin("started", "")
	return target, st, nil
}

// redirectURLFor resolves the configured redirect_uri against the request.
func (m *OIDCAuth) redirectURLFor(r *http.Request) string {
	return resolveAgainst(r, m.redirectURL)
}

func resolveAgainst(r *http.Request, u *url.URL) string {
	if u.IsAbs() {
		return u.String()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	abs := *u
	abs.Scheme, abs.Host = scheme, r.Host
	return abs.String()
}

// browserNavigationMethod reports whether a browser can navigate (or
// submit a form) with method. A PUT, PATCH or DELETE without a session
// comes from a script or an API client, which a login redirect would
// only confuse: they get a 401, whatever their headers say.
func browserNavigationMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodPost
}

// apiOnlyKey marks a request (in its context) that is answered as an API
// call whatever it looks like, such as those of the session info endpoint.
type apiOnlyKey struct{}

// isAPIRequest tells API calls (which get a 401) from page navigations
// (which are sent to log in), by the hints browsers and clients send.
func isAPIRequest(r *http.Request) bool {
	if r.Context().Value(apiOnlyKey{}) != nil {
		return true
	}
	if r.Header.Get("X-Requested-With") != "" {
		return true
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode != "navigate"
	}
	if dest := r.Header.Get("Sec-Fetch-Dest"); dest != "" {
		return dest != "document" && dest != "iframe" && dest != "frame"
	}
	return !strings.Contains(r.Header.Get("Accept"), "text/html")
}

// safeReturnTo accepts only a path on this site: it must start with a
// single '/', and nothing in it may make a browser read it as another
// origin ("//host", "/\host", control characters, schemes).
func safeReturnTo(raw string) (string, bool) {
	if len(raw) > maxReturnToLen || !strings.HasPrefix(raw, "/") {
		return "", false
	}
	if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
		return "", false
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "", false
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "", false
	}
	// A decoded path may not start a second slash or backslash either.
	if p := u.Path; len(p) > 1 && (p[1] == '/' || p[1] == '\\') {
		return "", false
	}
	return raw, true
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
		for _, p := range identityHeaderPrefixes {
			if headerHasPrefix(name, p) {
				delete(h, name)
				break
			}
		}
	}
}

// stripHeader removes every spelling of the header name: any case, and
// '_' read as '-' (CGI, FastCGI and many frameworks merge them).
func stripHeader(h http.Header, name string) {
	want := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	for k := range h {
		if len(k) == len(want) && headerHasPrefix(k, want) {
			delete(h, k)
		}
	}
}

// headerHasPrefix compares a header name with a lowercase prefix, ignoring
// case and reading '_' as '-', without allocating.
func headerHasPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func sanitizeRealm(host string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, host)
}
