// Package oidcauth is a Caddy HTTP handler that puts OpenID Connect login
// (authorization code flow with PKCE, confidential client) in front of any
// site, keeps the tokens in encrypted cookies, refreshes them transparently
// and supports RP-initiated and back-channel logout.
package oidcauth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

func init() {
	caddy.RegisterModule(OIDCAuth{})
}

// Defaults for the settings that have one.
const (
	// The handler's own paths default to these names under path_prefix.
	defaultPathPrefix            = "/auth"
	defaultCallbackPath          = "/callback"
	defaultLoginPath             = "/login"
	defaultLogoutPath            = "/logout"
	defaultBackchannelLogoutPath = "/backchannel-logout"
	defaultSessionInfoPath       = "/session"
	defaultInitiateLoginPath     = "/initiate"
	defaultWebhookPath           = "/webhook"
)

var defaultScopes = []string{"openid", "profile", "email", "offline_access"}

// OIDCAuth authenticates requests with OpenID Connect. Unauthenticated
// browser navigations are sent to the identity provider (IdP) to log in;
// API calls get a 401 JSON answer. Authenticated requests go on to the next
// handler with the user's identity in `{http.auth.user.*}` placeholders.
type OIDCAuth struct {
	// The issuer URL of the OpenID Provider. Its metadata is discovered at
	// `<issuer>/.well-known/openid-configuration` on first use. Must be https,
	// or http for a loopback host. Required.
	Issuer string `json:"issuer,omitempty"`

	// The client ID registered at the IdP. Required.
	ClientID string `json:"client_id,omitempty"`

	// The client secret registered at the IdP. `{env.*}` and `{file.*}`
	// placeholders are expanded. Required.
	ClientSecret string `json:"client_secret,omitempty"`

	// The path under which the handler's own paths are, unless each is set
	// on its own: <prefix>/callback, /login, /logout, /backchannel-logout,
	// /session, /initiate and /webhook, and /jwks.json with upstream_jwt.
	// (Front-channel logout has no default path.) Default: `/auth`.
	PathPrefix string `json:"path_prefix,omitempty"`

	// Where the IdP sends the user back after login. A path is resolved
	// against the scheme and host of the request that started the login.
	// Default: `/auth/callback`.
	RedirectURI string `json:"redirect_uri,omitempty"`

	// The scopes requested at login. `openid` is always included.
	// Default: `openid profile email offline_access`.
	Scopes []string `json:"scopes,omitempty"`

	// Extra parameters added to every authorization request, such as
	// `prompt` or `organization_id`. Default: none.
	AuthParams map[string]string `json:"auth_param,omitempty"`

	// A path that starts a login explicitly; `?return_to=<path>` says where
	// to go afterwards (same site only). Default: `/auth/login`.
	LoginPath string `json:"login_path,omitempty"`

	// The path that logs the user out here and at the IdP.
	// Default: `/auth/logout`.
	LogoutPath string `json:"logout_path,omitempty"`

	// Where the IdP sends the user after logout; it must be registered at
	// the IdP. A path is resolved against the request's scheme and host.
	// Default: none (the IdP shows its own page).
	PostLogoutRedirectURI string `json:"post_logout_redirect_uri,omitempty"`

	// The path at which the IdP posts back-channel logout tokens.
	// Default: `/auth/backchannel-logout`.
	BackchannelLogoutPath string `json:"backchannel_logout_path,omitempty"`

	// The path the IdP loads in a hidden iframe to log the user out (OIDC
	// Front-Channel Logout 1.0), with `iss` and `sid` query parameters.
	// Register it at the IdP as the front-channel logout URI, with
	// frontchannel_logout_session_required. Such requests carry no
	// credential, so only sids of sessions this deployment issued are
	// ended (they are recorded at login, in the store, while this is set).
	// Default: none (front-channel logout off; path_prefix does not turn
	// it on).
	FrontchannelLogoutPath string `json:"frontchannel_logout_path,omitempty"`

	// The secret from which the cookie encryption key is derived: at least
	// 32 bytes. `{env.*}` and `{file.*}` placeholders are expanded. If
	// omitted, a random secret is generated once and kept in Caddy's
	// storage, so sessions survive restarts. Default: generated.
	CookieSecret string `json:"cookie_secret,omitempty"`

	// Older cookie secrets, during a key rotation: cookies sealed with them
	// are still accepted, and rewritten with cookie_secret on their next
	// response. Removing a secret from this list ends only the sessions
	// still sealed with it. In the Caddyfile they follow cookie_secret:
	// `cookie_secret <current> <older>...`. Default: none.
	PreviousCookieSecrets []string `json:"previous_cookie_secrets,omitempty"`

	// The prefix of every cookie this handler sets. Default: `oidc_` plus a
	// short hash of the issuer and client ID, so that several apps on one
	// host never share cookies.
	CookieName string `json:"cookie_name,omitempty"`

	// The absolute limit on a session's age, whatever the refresh token
	// allows. Default: `24h`.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// A session with no request for this long is over (navigation: login
	// again; API call: 401), within session_lifetime. Activity is kept in
	// the session cookie, rewritten at most once a minute (more often
	// only for a timeout under 4 minutes), and, with a shared store, in
	// the session registry, so a session active on one instance stays
	// alive on another. At least `1s`. Default: off.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Step-up by age: a session whose user authenticated at the IdP
	// longer ago than this (the ID token's auth_time) is sent through a
	// new login with `max_age`; a bearer token (its auth_time) gets 401
	// insufficient_user_authentication (RFC 9470). Per handler, so one
	// path can ask for a fresher login than another. At least `1s`.
	// Default: none.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// A shared store for revocations and refresh coordination, for several
	// Caddy instances: `redis://host:port/db`, `rediss://user:password@host:port/db`
	// (TLS, ACL user), the Sentinel form
	// `redis://sentinel1:26379/db?master_name=mymaster&addr=sentinel2:26379`
	// or the Cluster form `redis://node1:6379?addr=node2:6379&addr=node3:6379`,
	// as go-redis parses them. `{env.*}` and `{file.*}` placeholders work.
	// Default: an embedded store.
	Store string `json:"store,omitempty"`

	// TLS, timeouts and key prefix of the Redis store. Default: none.
	StoreOptions *StoreOptions `json:"store_options,omitempty"`

	// Access rules: every rule must hold for a signed-in user, or the
	// request is answered 403. Default: none.
	Require []Rule `json:"require,omitempty"`

	// Leave protected responses without a Cache-Control header as the next
	// handler wrote them. Otherwise they get `Cache-Control: private`, so
	// that a shared cache (a CDN, a caching proxy) never serves one user's
	// page to another; a response with its own Cache-Control keeps it.
	// Default: off.
	AllowSharedCache bool `json:"allow_shared_cache,omitempty"`

	// Let `require email ...` rules pass for an address the IdP has not
	// verified. Without it, a rule on the `email` claim holds only when
	// the user's `email_verified` claim is true, so that self-service or
	// social sign-up cannot claim an address of your domain. Default: off.
	AllowUnverifiedEmail bool `json:"allow_unverified_email,omitempty"`

	// The authorization endpoint, for a provider without discovery (or to
	// override what it publishes). When the authorization, token and JWKS
	// endpoints are all set, discovery is skipped. https (http only for
	// loopback hosts). Default: discovered.
	AuthorizationEndpoint string `json:"authorization_endpoint,omitempty"`

	// The token endpoint, where codes and refresh tokens are exchanged,
	// for a provider without discovery (or to override what it publishes).
	// Default: discovered.
	TokenEndpoint string `json:"token_endpoint,omitempty"`

	// The URL of the provider's JSON Web Key Set, whose keys sign its
	// tokens, for a provider without discovery (or to override what it
	// publishes). Default: discovered.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// The provider's end-session endpoint, where logout sends the user
	// after ending the session here. Without one (set or discovered),
	// logout is local only. Default: discovered.
	EndSessionEndpoint string `json:"end_session_endpoint,omitempty"`

	// Audiences accepted in access tokens besides the client ID, for IdPs
	// whose access tokens name an API rather than the client (Keycloak
	// without an audience mapper: `account`; Okta: `api://default`; Auth0
	// with an API audience). Bearer mode accepts them only with
	// `accept_access_token_audiences`. Default: only the client ID, as
	// Scalekit issues them.
	AccessTokenAudiences []string `json:"access_token_audiences,omitempty"`

	// Bearer mode: a request without a session that sends
	// `Authorization: Bearer <JWT>` is accepted when the token is an access
	// token of this IdP (RFC 9068 `typ: at+jwt`, or `client_id`/`scope`
	// claims; never an ID or logout token) for this client (or one of
	// bearer's audiences) and passes the require rules. No cookies, no
	// redirects. Default: off.
	Bearer *BearerConfig `json:"bearer,omitempty"`

	// Overrides of the RFC 9728 protected-resource metadata that bearer
	// mode serves at /.well-known/oauth-protected-resource. Default: the
	// metadata derived from the request and the configuration.
	ProtectedResource *ProtectedResourceConfig `json:"protected_resource,omitempty"`

	// DPoP (RFC 9449) in bearer mode: announce it in the resource
	// metadata and, with `required`, refuse tokens not bound to a key.
	// Bearer mode checks DPoP proofs and key-bound tokens with or without
	// it. Default: off.
	DPoP *DPoPConfig `json:"dpop,omitempty"`

	// Send the current (refreshed) access token to the next handler as
	// `Authorization: Bearer`, so a reverse_proxy upstream can call APIs
	// as the user. Default: off.
	PassAccessToken bool `json:"pass_access_token,omitempty"`

	// A path that answers JSON about the signed-in user (sub, claims,
	// session and access token expiry; never a token), or 401.
	// Default: `/auth/session`.
	SessionInfoPath string `json:"session_info_path,omitempty"`

	// The path at which the IdP starts a login: Scalekit's IdP-initiated
	// login (`?idp_initiated_login=<JWT>`) and OIDC third-party initiated
	// login (`iss`, `login_hint`, `target_link_uri`). Register it at the IdP
	// as the "initiate login" URL. Default: `/auth/initiate`.
	InitiateLoginPath string `json:"initiate_login_path,omitempty"`

	// The signing secret (`whsec_...`) of Scalekit webhooks. When set,
	// webhook_path accepts signed `user.logout` events and ends the
	// sessions of their `data.user_session.session_id` (the tokens' sid).
	// `{env.*}` and `{file.*}` placeholders are expanded. Default: none
	// (webhooks off).
	WebhookSecret string `json:"webhook_secret,omitempty"`

	// Where webhooks are received. Default: `/auth/webhook`.
	WebhookPath string `json:"webhook_path,omitempty"`

	// Scalekit's Management API, to add the user's organization
	// memberships to the placeholders and the session info endpoint.
	// Default: off.
	ManagementAPI *ManagementAPI `json:"management_api,omitempty"`

	// How the client authenticates at the token endpoint:
	// `client_secret_basic` or `client_secret_post`. Default: what the
	// provider's metadata lists, preferring `client_secret_basic`.
	TokenAuthMethod string `json:"token_auth_method,omitempty"`

	// How often the identity provider is checked in the background while
	// the handler is loaded: a fetch of its discovery document (of its
	// JWKS, when the endpoints are configured without discovery), so that
	// the health endpoint and the `idp_up` metric notice an outage on an
	// idle site too. Each wait is up to a fifth longer, at random; while
	// checks fail, it doubles, up to 5m. Handlers sharing a provider use
	// the shortest interval among them. At least `1s`. Default: `30s`.
	HealthProbeInterval caddy.Duration `json:"health_probe_interval,omitempty"`

	// Pass a signed identity assertion (an ES256 JWT) to the next handler,
	// for upstreams that check identity themselves. Default: off.
	UpstreamJWT *UpstreamJWT `json:"upstream_jwt,omitempty"`

	// Where the public keys of upstream_jwt are served as a JWKS, to
	// anyone; only with upstream_jwt. Default: `/auth/jwks.json`.
	JWKSPath string `json:"jwks_path,omitempty"`

	ujwt            *upstreamJWTState
	webhookKey      []byte
	mgmt            *management // nil: the Management API is off
	answer          responder   // error pages and refusals
	rules           accessRules
	tokens          *tokens
	login           *logins
	bearer          *bearerAuth // nil: bearer mode off
	callbackPath    string
	redirectURL     *url.URL // absolute when configured so; else only a path
	resourceURL     *url.URL // protected_resource's resource, when set
	postLogoutURL   *url.URL
	sessionLifetime time.Duration
	probeInterval   time.Duration
	cookies         *cookie.Codec
	provider        *provider
	client          *oidc.Client // the protocol, with m.now as its clock
	providerKey     string
	app             *appState
	appKey          string
	logger          *zap.Logger
	now             func() time.Time
}

// CaddyModule returns the Caddy module information.
func (OIDCAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oidc_auth",
		New: func() caddy.Module { return new(OIDCAuth) },
	}
}

// Provision sets up the handler. It makes no network request: the provider
// is discovered on first use, so Caddy starts even when the IdP is down.
func (m *OIDCAuth) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	if err := initMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if m.now == nil {
		m.now = time.Now
	}

	repl := caddy.NewReplacer()
	var err error
	if m.ClientSecret, err = expandSecret(repl, "client_secret", m.ClientSecret); err != nil {
		return err
	}
	if m.CookieSecret, err = expandSecret(repl, "cookie_secret", m.CookieSecret); err != nil {
		return err
	}
	if m.WebhookSecret, err = expandSecret(repl, "webhook_secret", m.WebhookSecret); err != nil {
		return err
	}
	if m.Store, err = expandSecret(repl, "store", m.Store); err != nil {
		return err
	}
	for i := range m.PreviousCookieSecrets {
		if m.PreviousCookieSecrets[i], err = expandSecret(repl, "previous_cookie_secrets", m.PreviousCookieSecrets[i]); err != nil {
			return err
		}
	}
	if err := m.UpstreamJWT.expand(repl); err != nil {
		return err
	}
	// The state built below depends on the settings: they are checked
	// first (Caddy calls Validate again afterwards, which changes nothing).
	if err := m.configure(); err != nil {
		return err
	}

	if m.CookieName == "" {
		m.CookieName = defaultCookieName(m.Issuer, m.ClientID)
	}
	secret := []byte(m.CookieSecret)
	if m.CookieSecret == "" {
		if secret, err = loadOrCreateSecret(ctx, ctx.Storage()); err != nil {
			return fmt.Errorf("cookie_secret: %w", err)
		}
	}
	var previous [][]byte
	for _, p := range m.PreviousCookieSecrets {
		previous = append(previous, []byte(p))
	}
	if m.cookies, err = cookie.New(secret, m.Issuer, m.ClientID, m.CookieName, previous...); err != nil {
		return fmt.Errorf("cookie_secret: %w", err)
	}

	m.providerKey = strings.Join([]string{m.Issuer, m.AuthorizationEndpoint, m.TokenEndpoint, m.JWKSURI, m.EndSessionEndpoint}, "\x00")
	val, _, err := providers.LoadOrNew(m.providerKey, func() (caddy.Destructor, error) {
		p := newProvider(m.Issuer, endpoints{
			Authorization: m.AuthorizationEndpoint,
			Token:         m.TokenEndpoint,
			JWKS:          m.JWKSURI,
			EndSession:    m.EndSessionEndpoint,
		}, m.now, m.logger)
		p.pooled = true
		acquireGauges(m.Issuer)
		// The first probe waits an interval: Provision (which also runs
		// for caddy validate) makes no request.
		p.StartProbe()
		return p, nil
	})
	if err != nil {
		return err
	}
	m.provider = val.(*provider)
	m.provider.UseProbeInterval(m.probeInterval)

	m.appKey = m.Issuer + "\x00" + m.ClientID + "\x00" + m.Store
	if m.StoreOptions != nil {
		// Other TLS files or timeouts are another connection.
		o, _ := json.Marshal(m.StoreOptions)
		m.appKey += "\x00" + string(o)
	}
	val, _, err = apps.LoadOrNew(m.appKey, func() (caddy.Destructor, error) {
		id := store.AppID(m.Issuer, m.ClientID)
		st, err := store.Open(ctx, m.Store, ctx.Storage(), id, store.Options{Logger: m.logger, Redis: m.StoreOptions.redis()})
		if err != nil {
			return nil, err
		}
		return newAppState(id, st), nil
	})
	if err != nil {
		return err
	}
	m.app = val.(*appState)
	m.wire()
	if m.mgmt != nil {
		m.app.mgmt.Store(m.mgmt)
	}
	m.app.noteLifetime(m.sessionLifetime)
	return m.ujwt.acquire(ctx, m.UpstreamJWT, m.logger, m.now)
}

// wire builds the handler's parts from its settings and its state
// (cookies, provider, app, logger and clock): the last step of Provision.
func (m *OIDCAuth) wire() {
	m.client = &oidc.Client{
		Provider:   m.provider.Provider,
		ID:         m.ClientID,
		Secret:     m.ClientSecret,
		Scopes:     m.Scopes,
		AuthMethod: m.TokenAuthMethod,
		Audiences:  m.AccessTokenAudiences,
		Now:        m.now,
	}
	m.answer = responder{loginPath: m.LoginPath, logoutPath: m.LogoutPath, cookies: m.cookies, srv: m}
	m.rules = accessRules{rules: m.Require, allowUnverifiedEmail: m.AllowUnverifiedEmail}
	m.tokens = &tokens{
		client: m.client, provider: m.provider, app: m.app, cookies: m.cookies, logger: m.logger, now: m.now,
		lifetime: m.sessionLifetime, idle: time.Duration(m.IdleTimeout), clientID: m.ClientID, recordSIDs: m.FrontchannelLogoutPath != "",
	}
	m.login = &logins{
		answer: m.answer, cookies: m.cookies, provider: m.provider, client: m.client, logger: m.logger, now: m.now,
		authParams: m.AuthParams, redirectURL: m.redirectURL, loginPath: m.LoginPath,
	}
	m.bearer = nil
	if m.Bearer != nil {
		m.bearer = &bearerAuth{cfg: m.Bearer, clientID: m.ClientID, audiences: m.AccessTokenAudiences, tokens: m.tokens, rules: m.rules, srv: m}
	}
	m.mgmt = nil
	if m.ManagementAPI != nil {
		m.mgmt = newManagement(m.ManagementAPI, m.Issuer, m.client, m.provider, m.logger)
	}
}

// Cleanup releases the pooled provider and app state.
func (m *OIDCAuth) Cleanup() error {
	if err := m.ujwt.release(); err != nil {
		return err
	}
	if m.provider != nil {
		m.provider.ReleaseProbeInterval(m.probeInterval)
		if _, err := providers.Delete(m.providerKey); err != nil {
			return err
		}
	}
	if m.app != nil {
		if _, err := apps.Delete(m.appKey); err != nil {
			return err
		}
	}
	return nil
}

// configure fills in the defaults and checks the result: what Provision
// (and the check command) needs before building any state from the
// settings.
func (m *OIDCAuth) configure() error {
	m.setDefaults()
	if err := m.Validate(); err != nil {
		return err
	}
	// upstream_jwt's state is made from its checked settings.
	return m.checkUpstreamJWT(pathPrefix(m.PathPrefix))
}

// setDefaults fills in the settings left out, and the values derived from
// the settings. It checks nothing (Validate does): a setting that does not
// parse leaves its derived value empty. It is idempotent.
func (m *OIDCAuth) setDefaults() {
	prefix := pathPrefix(m.PathPrefix)
	if m.RedirectURI == "" {
		m.RedirectURI = prefix + defaultCallbackPath
	}
	if u, err := checkPathOrURL("redirect_uri", m.RedirectURI); err == nil {
		m.redirectURL, m.callbackPath = u, u.Path
	}
	m.resourceURL = nil
	if pr := m.ProtectedResource; pr != nil && pr.Resource != "" {
		m.resourceURL, _ = checkResourceURL(pr.Resource)
	}
	m.postLogoutURL = nil
	if m.PostLogoutRedirectURI != "" {
		m.postLogoutURL, _ = checkPathOrURL("post_logout_redirect_uri", m.PostLogoutRedirectURI)
	}
	if len(m.Scopes) == 0 {
		m.Scopes = append([]string(nil), defaultScopes...)
	}
	if !containsString(m.Scopes, "openid") {
		m.Scopes = append([]string{"openid"}, m.Scopes...)
	}
	for _, p := range []struct {
		field *string
		def   string
	}{
		{&m.LoginPath, defaultLoginPath},
		{&m.LogoutPath, defaultLogoutPath},
		{&m.BackchannelLogoutPath, defaultBackchannelLogoutPath},
		{&m.SessionInfoPath, defaultSessionInfoPath},
		{&m.InitiateLoginPath, defaultInitiateLoginPath},
		{&m.WebhookPath, defaultWebhookPath},
	} {
		if *p.field == "" {
			*p.field = prefix + p.def
		}
	}
	m.webhookKey = nil
	if m.WebhookSecret != "" {
		m.webhookKey, _ = parseWebhookSecret(m.WebhookSecret)
	}
	m.sessionLifetime = time.Duration(m.SessionLifetime)
	if m.sessionLifetime <= 0 {
		m.sessionLifetime = defaultSessionLifetime
	}
	m.probeInterval = time.Duration(m.HealthProbeInterval)
	if m.probeInterval == 0 {
		m.probeInterval = oidc.DefaultProbeInterval
	}
}

// pathPrefix is path_prefix, or its default.
func pathPrefix(configured string) string {
	if configured == "" {
		return defaultPathPrefix
	}
	return configured
}

// Validate checks the configuration; every message names the setting. It
// changes nothing, and needs no Provision: it checks the settings as the
// defaults complete them, so JSON and Caddyfile users get the same errors.
func (m *OIDCAuth) Validate() error {
	return checkSettings(m)
}

// checkSettings checks a copy of c whose defaults are filled in.
func checkSettings(c *OIDCAuth) error {
	m := *c
	m.setDefaults()
	if m.Issuer == "" {
		return errors.New("issuer: required")
	}
	if err := checkProviderURL("issuer", m.Issuer); err != nil {
		return err
	}
	// The issuer stays exactly as given (a trailing slash included): it
	// must equal the provider's own, as discovery and every iss check
	// compare it character for character.
	if m.ClientID == "" {
		return errors.New("client_id: required")
	}
	if m.ClientSecret == "" {
		return errors.New("client_secret: required")
	}
	if m.CookieSecret != "" && len(m.CookieSecret) < minCookieSecretLen {
		return fmt.Errorf("cookie_secret: must be at least %d bytes, got %d", minCookieSecretLen, len(m.CookieSecret))
	}
	if len(m.PreviousCookieSecrets) > 0 && m.CookieSecret == "" {
		return errors.New("previous_cookie_secrets: needs cookie_secret (the current secret)")
	}
	for i, p := range m.PreviousCookieSecrets {
		if len(p) < minCookieSecretLen {
			return fmt.Errorf("previous_cookie_secrets: older secret %d (after the first value of cookie_secret) must be at least %d bytes, got %d", i+1, minCookieSecretLen, len(p))
		}
	}
	for field, v := range map[string]string{
		"authorization_endpoint": m.AuthorizationEndpoint,
		"token_endpoint":         m.TokenEndpoint,
		"jwks_uri":               m.JWKSURI,
		"end_session_endpoint":   m.EndSessionEndpoint,
	} {
		if v != "" {
			if err := checkProviderURL(field, v); err != nil {
				return err
			}
		}
	}
	switch m.TokenAuthMethod {
	case "", "client_secret_basic", "client_secret_post":
	default:
		return fmt.Errorf("token_auth_method: must be client_secret_basic or client_secret_post, got %q", m.TokenAuthMethod)
	}

	prefix := pathPrefix(m.PathPrefix)
	if !strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.ContainsAny(prefix, "?#*") {
		return fmt.Errorf("path_prefix: must be a path like /auth (a leading '/', no trailing '/'), got %q", prefix)
	}
	u, err := checkPathOrURL("redirect_uri", m.RedirectURI)
	if err != nil {
		return err
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("redirect_uri: must not have a query or fragment: %q", m.RedirectURI)
	}
	if m.PostLogoutRedirectURI != "" {
		if _, err = checkPathOrURL("post_logout_redirect_uri", m.PostLogoutRedirectURI); err != nil {
			return err
		}
	}
	for name := range m.AuthParams {
		switch name {
		case "":
			return errors.New("auth_param: empty parameter name")
		case "response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "code_challenge_method":
			return fmt.Errorf("auth_param: %q is set by the handler and cannot be overridden", name)
		}
	}
	if err := m.checkUpstreamJWT(pathPrefix(m.PathPrefix)); err != nil {
		return err
	}
	if m.WebhookSecret != "" {
		if _, err := parseWebhookSecret(m.WebhookSecret); err != nil {
			return err
		}
	}
	paths := map[string]string{
		"login_path":               m.LoginPath,
		"logout_path":              m.LogoutPath,
		"backchannel_logout_path":  m.BackchannelLogoutPath,
		"frontchannel_logout_path": m.FrontchannelLogoutPath,
		"session_info_path":        m.SessionInfoPath,
		"initiate_login_path":      m.InitiateLoginPath,
		"webhook_path":             m.WebhookPath,
		"jwks_path":                m.JWKSPath,
		"redirect_uri":             u.Path,
	}
	seen := map[string]string{}
	for _, field := range []string{"redirect_uri", "login_path", "logout_path", "backchannel_logout_path", "frontchannel_logout_path", "session_info_path", "initiate_login_path", "webhook_path", "jwks_path"} {
		p := paths[field]
		if p == "" && (field == "frontchannel_logout_path" || field == "jwks_path") {
			continue // off
		}
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%s: must be a path starting with '/', got %q", field, p)
		}
		if other, dup := seen[p]; dup {
			return fmt.Errorf("%s: path %q is already used by %s", field, p, other)
		}
		seen[p] = field
	}

	if m.CookieName != "" && !validCookieName(m.CookieName) {
		return fmt.Errorf("cookie_name: %q has characters not allowed in a cookie name (use letters, digits, '-' and '_')", m.CookieName)
	}
	if lower := strings.ToLower(m.CookieName); strings.HasPrefix(lower, "__host-") || strings.HasPrefix(lower, "__secure-") {
		// Browsers drop such cookies on plain HTTP, so every login would
		// fail there; on HTTPS the handler adds the prefix itself.
		return fmt.Errorf("cookie_name: %q must not start with __Host- or __Secure-: the handler adds the right prefix itself on HTTPS (browsers refuse prefixed cookies on plain HTTP)", m.CookieName)
	}
	if m.SessionLifetime < 0 {
		return fmt.Errorf("session_lifetime: must be positive, got %s", time.Duration(m.SessionLifetime))
	}
	if err := checkIdleTimeout(m.IdleTimeout); err != nil {
		return err
	}
	if d := time.Duration(m.HealthProbeInterval); d != 0 && d < oidc.MinProbeInterval {
		return fmt.Errorf("health_probe_interval: must be at least %s, got %s", oidc.MinProbeInterval, d)
	}
	if err := checkStore(m.Store, m.StoreOptions); err != nil {
		return err
	}
	if err := m.ManagementAPI.check(); err != nil {
		return err
	}
	if m.Bearer != nil {
		for _, aud := range m.Bearer.Audiences {
			if aud == "" {
				return errors.New("bearer: empty audience")
			}
		}
	}
	if err := m.checkResourceServer(); err != nil {
		return err
	}
	if err := m.checkStepUp(); err != nil {
		return err
	}
	if err := m.checkDPoPConfig(); err != nil {
		return err
	}
	for i, r := range m.Require {
		if r.Claim == "" {
			return fmt.Errorf("require: rule %d has no claim name", i+1)
		}
		if len(r.Values) == 0 {
			return fmt.Errorf("require: rule for claim %q needs at least one value", r.Claim)
		}
	}
	return nil
}

// checkPathOrURL accepts an absolute path or an http(s) URL.
func checkPathOrURL(field, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", field, err)
	}
	if u.Scheme == "" && u.Host == "" {
		if !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(raw, "//") {
			return nil, fmt.Errorf("%s: must be a path starting with '/' or an http(s) URL, got %q", field, raw)
		}
		return u, nil
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: must be a path starting with '/' or an http(s) URL, got %q", field, raw)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return u, nil
}

func defaultCookieName(issuer, clientID string) string {
	sum := sha256.Sum256([]byte(issuer + "\x00" + clientID))
	return "oidc_" + hex.EncodeToString(sum[:4])
}

func validCookieName(name string) bool {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return name != ""
}

// Interface guards
var (
	_ caddy.Provisioner           = (*OIDCAuth)(nil)
	_ caddy.Validator             = (*OIDCAuth)(nil)
	_ caddy.CleanerUpper          = (*OIDCAuth)(nil)
	_ caddyhttp.MiddlewareHandler = (*OIDCAuth)(nil)
)
