package oidcauth

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// logins starts logins: a state cookie, then the authorization request.
type logins struct {
	answer      responder
	cookies     *cookie.Codec
	provider    *provider
	client      *oidc.Client
	logger      *zap.Logger
	now         func() time.Time
	authParams  map[string]string
	redirectURL *url.URL
	loginPath   string
}

// handleLogin starts a login explicitly; ?return_to= says where to go next.
func (m *OIDCAuth) handleLogin(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET to start a login.", "")
	}
	q := r.URL.Query()
	returnTo := "/"
	if rt := q.Get("return_to"); rt != "" {
		safe, ok := safeReturnTo(rt)
		if !ok {
			return m.answer.fail(w, r, http.StatusBadRequest, "The return_to parameter must be a path on this site.", m.LoginPath)
		}
		returnTo = safe
	}
	hints := map[string]string{}
	for _, name := range loginHintParams {
		if v := q.Get(name); v != "" && len(v) <= 512 {
			hints[name] = v
		}
	}
	return m.login.begin(w, r, returnTo, hints)
}

// loginHintParams are the query parameters of login_path passed on to the
// authorization request, so a site can offer "sign in with your company"
// links (organization_id, connection_id, domain_hint and provider are
// Scalekit's). Anything else is dropped.
var loginHintParams = []string{"login_hint", "organization_id", "connection_id", "domain_hint", "prompt", "provider"}

// begin stores a new login attempt in its own state cookie and
// redirects to the authorization endpoint.
func (lg *logins) begin(w http.ResponseWriter, r *http.Request, returnTo string, hints map[string]string) error {
	target, st, err := lg.start(w, r, returnTo, false, hints)
	if st == nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// start stores a new login attempt and returns the authorization URL
// to send the browser to. A nil state means the response was written.
func (lg *logins) start(w http.ResponseWriter, r *http.Request, returnTo string, post bool, hints map[string]string) (string, *loginState, error) {
	if lg.cookies.LoginLoop(w, r) {
		lg.logger.Error("login loop: logins complete but their sessions do not hold; stopped", zap.Int("round_trips", cookie.MaxLoginLoop))
		countLogin("failed", "loop")
		return "", nil, lg.answer.page(w, r, http.StatusBadGateway, "Sign-in keeps failing: you were signed in several times in a row, but the session did not hold. Check that this site may set cookies, then try again; if it keeps happening, tell the site's administrator.", lg.loginPath+"?return_to="+url.QueryEscape(returnTo), "Try again")
	}
	now := lg.now()
	meta, err := lg.provider.Metadata(r.Context())
	if err != nil {
		lg.logger.Error("cannot start login", zap.Error(err))
		return "", nil, lg.answer.unavailable(w, r)
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
		if _, pinned := lg.authParams[k]; !pinned {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
	}
	for k, v := range lg.authParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	opts = append(opts, stepUpParams(st, hints, lg.authParams)...)
	if err := lg.cookies.WriteState(w, r, st, now); err != nil {
		return "", nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	target := lg.client.OAuthConfig(meta, resolveAgainst(r, lg.redirectURL)).AuthCodeURL(st.State, opts...)
	countLogin("started", "")
	return target, st, nil
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

// maxReturnToLen bounds the path a login returns to.
const maxReturnToLen = 1024
