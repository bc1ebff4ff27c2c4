// Package oidctest is a scriptable, in-process OpenID Provider for tests:
// discovery, a JWKS with key rotation, an authorization endpoint that
// approves every login at once, and a token endpoint with PKCE, client
// authentication and rotating refresh tokens. It does what a real IdP will
// not: sign with the wrong key or no key, mint tokens for other audiences,
// fail or redirect at the token endpoint, answer the JWKS with an error.
//
// It is test support only; nothing in the module imports it.
package oidctest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Script is what a test changes about a Provider's answers (see
// Provider.Set). Every hook runs with the provider's lock held, except
// Token.
type Script struct {
	// Discovery holds fields added to (or, with a nil value, removed
	// from) the discovery document.
	Discovery map[string]any
	// Token answers a token request itself when it returns true (500,
	// redirect, slow, down...). grant is the grant_type. It runs without
	// the provider's lock.
	Token func(w http.ResponseWriter, r *http.Request, grant string) bool
	// IDClaims changes the ID token's claims; SignID replaces its signing.
	IDClaims func(grant string, c map[string]any)
	SignID   func(c map[string]any) string
	// NoIDTokenOnRefresh leaves the ID token out of refresh responses.
	NoIDTokenOnRefresh bool
	// AccessClaims changes a JWT access token's claims; SignAccess
	// replaces its signing.
	AccessClaims func(grant string, c map[string]any)
	SignAccess   func(c map[string]any) string
	Opaque       bool          // opaque access tokens instead of JWTs
	AccessTTL    time.Duration // access token lifetime (expires_in); default 10 minutes
	// NoRefreshOnRefresh leaves refresh_token out of refresh responses
	// (the old one stays valid); otherwise refresh tokens rotate.
	NoRefreshOnRefresh bool
	NoRefreshToken     bool   // no refresh token at all, even at login
	AllowCodeReuse     bool   // accept an authorization code twice
	JWKSStatus         int    // when set, the JWKS endpoint fails with this status
	ATHash             string // when set, the ID token's at_hash instead of the right one
	// TokenType is the token_type of token responses: "" is "Bearer",
	// "-" leaves it out; TokenTypeOnRefresh, if set, is used for refreshes.
	TokenType, TokenTypeOnRefresh string
	// ExtraKeys are published in the JWKS after the provider's own keys.
	ExtraKeys []*Key
}

// code is an authorization code the provider handed out.
type code struct {
	clientID, redirectURI, challenge, nonce string
	sub, sid                                string
	used                                    bool
}

// grant is what a refresh token stands for.
type grant struct {
	sub, sid string
}

// Provider is the in-process OpenID Provider. Its endpoints are
// /.well-known/openid-configuration, /jwks, /authorize (GET, approves at
// once and redirects back with code, state and iss), /token (POST) and
// /logout (GET, a plain page). One client is registered: ClientID with
// ClientSecret, by client_secret_basic or client_secret_post.
//
// Checked at the token endpoint: client authentication, the code (known,
// unused, same redirect_uri), PKCE S256, the refresh token (known, not
// rotated). Not checked: scopes, the authorization request's redirect_uri
// against a registration.
type Provider struct {
	// URL is where the endpoints are; Issuer is the issuer identifier, URL
	// unless a test says otherwise. Set both before the first request.
	URL, Issuer string
	// ClientID and ClientSecret are the registered client; random unless
	// a test sets them before the first request.
	ClientID, ClientSecret string

	// DiscoveryFetches and JWKSFetches count requests to those endpoints.
	DiscoveryFetches atomic.Int64
	JWKSFetches      atomic.Int64

	t      testing.TB
	now    func() time.Time
	srv    *httptest.Server
	active atomic.Pointer[Key] // signs tokens

	mu        sync.Mutex
	script    Script
	published []*Key // in the JWKS
	codes     map[string]*code
	refresh   map[string]*grant
	nextSub   string
	nextSID   string
	email     string
	sidSeq    int

	// observations
	tokenCalls       map[string]int // by grant_type
	authStyles       []string       // "basic" or "post", per token call
	verifiers        []string       // code_verifier of each code exchange
	refreshSent      []string       // refresh_token of each refresh grant
	lastIDToken      string
	lastAccessToken  string
	lastRefreshToken string
}

// New starts a Provider on a fresh loopback port, stopped when the test
// ends. Its tokens are dated by clock; a nil clock is the wall clock. It
// signs with NewRSAKey("key-1", 0) and logs in "user-1"
// (user1@example.com) until told otherwise.
func New(t testing.TB, clock *Clock) *Provider {
	p := NewUnstarted(t, clock)
	p.srv.Start()
	p.URL, p.Issuer = p.srv.URL, p.srv.URL
	return p
}

// NewUnstarted is New without starting: the test sets URL and Issuer and
// calls StartOn.
func NewUnstarted(t testing.TB, clock *Clock) *Provider {
	p := &Provider{
		t:            t,
		now:          time.Now,
		ClientID:     "client-" + RandomHex(6),
		ClientSecret: "secret-" + RandomHex(20),
		codes:        map[string]*code{},
		refresh:      map[string]*grant{},
		tokenCalls:   map[string]int{},
		nextSub:      "user-1",
		email:        "user1@example.com",
	}
	if clock != nil {
		p.now = clock.Now
	}
	k := NewRSAKey("key-1", 0)
	p.active.Store(k)
	p.published = []*Key{k}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET /jwks", p.serveJWKS)
	mux.HandleFunc("GET /authorize", p.serveAuthorize)
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("GET /logout", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "signed out at the IdP")
	})
	p.srv = httptest.NewUnstartedServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// StartOn starts an unstarted Provider on addr (a port a handler was
// configured with while nothing listened there) and sets URL and Issuer.
func (p *Provider) StartOn(addr string) {
	var ln net.Listener
	var err error
	for range 50 { // the port was just freed; it may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("listening on %s: %v", addr, err)
	}
	p.srv.Listener.Close()
	p.srv.Listener = ln
	p.srv.Start()
	p.URL, p.Issuer = p.srv.URL, p.srv.URL
}

// Close stops the provider, as an IdP that went away.
func (p *Provider) Close() { p.srv.Close() }

// RandomHex returns n random bytes, hex-encoded.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Set changes the script under the provider's lock.
func (p *Provider) Set(f func(s *Script)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.script)
}

// Rotate publishes k and signs with it from now on; keepOld says whether
// the old keys stay in the JWKS.
func (p *Provider) Rotate(k *Key, keepOld bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if keepOld {
		p.published = append(p.published, k)
	} else {
		p.published = []*Key{k}
	}
	p.active.Store(k)
}

// SignWith makes the provider sign with k from now on without publishing
// it.
func (p *Provider) SignWith(k *Key) { p.active.Store(k) }

// ActiveKey returns the key that signs tokens. It takes no lock, so
// Script hooks may call it.
func (p *Provider) ActiveKey() *Key { return p.active.Load() }

// SetUser sets who the next authorization logs in; an empty sid gives
// each login a new one.
func (p *Provider) SetUser(sub, email, sid string) {
	p.mu.Lock()
	p.nextSub, p.email, p.nextSID = sub, email, sid
	p.mu.Unlock()
}

// Grants returns how many token requests came with grant_type grant.
func (p *Provider) Grants(grant string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenCalls[grant]
}

// Observed returns, per token request, the client authentication style
// ("basic" or "post"), the code_verifier of each code exchange, the
// refresh_token of each refresh, and the last ID token issued.
func (p *Provider) Observed() (styles, verifiers, refreshSent []string, idToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.authStyles...), append([]string(nil), p.verifiers...),
		append([]string(nil), p.refreshSent...), p.lastIDToken
}

// Issued returns the last ID, access and refresh tokens issued.
func (p *Provider) Issued() (idToken, accessToken, refreshToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastIDToken, p.lastAccessToken, p.lastRefreshToken
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	p.DiscoveryFetches.Add(1)
	doc := map[string]any{
		"issuer":                                p.Issuer,
		"authorization_endpoint":                p.URL + "/authorize",
		"token_endpoint":                        p.URL + "/token",
		"jwks_uri":                              p.URL + "/jwks",
		"end_session_endpoint":                  p.URL + "/logout",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	p.mu.Lock()
	for k, v := range p.script.Discovery {
		if v == nil {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	p.mu.Unlock()
	WriteJSON(w, http.StatusOK, doc)
}

func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p.JWKSFetches.Add(1)
	p.mu.Lock()
	if st := p.script.JWKSStatus; st != 0 {
		p.mu.Unlock()
		http.Error(w, "unavailable", st)
		return
	}
	keys := make([]any, 0, len(p.published)+len(p.script.ExtraKeys))
	for _, k := range append(append([]*Key(nil), p.published...), p.script.ExtraKeys...) {
		keys = append(keys, k.Public())
	}
	p.mu.Unlock()
	WriteJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

// WriteJSON answers with v as JSON, uncacheable.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// TokenError answers with an OAuth 2.0 error response.
func TokenError(w http.ResponseWriter, status int, code, desc string) {
	WriteJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// HangUp answers by dropping the connection, as a crashed IdP would.
func HangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
}

// Authorize plays the authorization endpoint for a login redirect to
// location: it checks the request (endpoint, client_id, redirect_uri,
// state, nonce, response_type code, PKCE S256, scope openid), "logs the
// user in" and returns the code that the browser would bring back. A bad
// request fails the test.
func (p *Provider) Authorize(location string) string {
	p.t.Helper()
	u, err := url.Parse(location)
	if err != nil {
		p.t.Fatalf("authorize: bad location %q: %v", location, err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != p.URL+"/authorize" {
		p.t.Fatalf("login redirect goes to %q, want the authorization endpoint %q", got, p.URL+"/authorize")
	}
	c, err := p.authorize(u.Query())
	if err != nil {
		p.t.Fatalf("%v: %s", err, location)
	}
	return c
}

// serveAuthorize is Authorize over HTTP, for a real browser or client: it
// redirects back with code, state and iss, or answers 400.
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, err := p.authorize(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	back := url.Values{"code": {c}, "state": {q.Get("state")}, "iss": {p.Issuer}}
	http.Redirect(w, r, q.Get("redirect_uri")+"?"+back.Encode(), http.StatusFound)
}

func (p *Provider) authorize(q url.Values) (string, error) {
	for _, param := range []string{"client_id", "redirect_uri", "state", "nonce", "code_challenge"} {
		if q.Get(param) == "" {
			return "", fmt.Errorf("authorization request lacks %s", param)
		}
	}
	if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" {
		return "", fmt.Errorf("authorization request: response_type=%q code_challenge_method=%q", q.Get("response_type"), q.Get("code_challenge_method"))
	}
	if q.Get("client_id") != p.ClientID {
		return "", fmt.Errorf("authorization request client_id=%q, want %q", q.Get("client_id"), p.ClientID)
	}
	if !strings.Contains(" "+q.Get("scope")+" ", " openid ") {
		return "", fmt.Errorf("authorization request scope %q lacks openid", q.Get("scope"))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sid := p.nextSID
	if sid == "" {
		p.sidSeq++
		sid = fmt.Sprintf("sid-%d", p.sidSeq)
	}
	c := "code-" + RandomHex(12)
	p.codes[c] = &code{
		clientID:    q.Get("client_id"),
		redirectURI: q.Get("redirect_uri"),
		challenge:   q.Get("code_challenge"),
		nonce:       q.Get("nonce"),
		sub:         p.nextSub,
		sid:         sid,
	}
	return c, nil
}

var errClient = errors.New("bad client credentials")

// clientAuth checks client_secret_basic or client_secret_post (never both)
// and records which one was used.
func (p *Provider) clientAuth(r *http.Request) (status int, errCode string, err error) {
	id, secret, basic := r.BasicAuth()
	style := "basic"
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if r.PostForm.Has("client_secret") {
			return http.StatusBadRequest, "invalid_request", errors.New("two client authentication methods")
		}
	} else {
		style = "post"
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	p.authStyles = append(p.authStyles, style)
	if id != p.ClientID || secret != p.ClientSecret {
		return http.StatusUnauthorized, "invalid_client", errClient
	}
	return 0, "", nil
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		TokenError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	grantType := r.PostForm.Get("grant_type")

	p.mu.Lock()
	p.tokenCalls[grantType]++
	hook := p.script.Token
	p.mu.Unlock()
	// The hook runs without the lock, so that a slow answer does not
	// block the JWKS or the counters.
	if hook != nil && hook(w, r, grantType) {
		return
	}

	p.mu.Lock()
	defer p.mu.Unlock()

	if status, errCode, err := p.clientAuth(r); err != nil {
		TokenError(w, status, errCode, err.Error())
		return
	}

	var sub, sid, nonce string
	switch grantType {
	case "authorization_code":
		c := p.codes[r.PostForm.Get("code")]
		if c == nil || (c.used && !p.script.AllowCodeReuse) {
			TokenError(w, http.StatusBadRequest, "invalid_grant", "unknown or used code")
			return
		}
		c.used = true
		if r.PostForm.Get("redirect_uri") != c.redirectURI {
			TokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs")
			return
		}
		verifier := r.PostForm.Get("code_verifier")
		p.verifiers = append(p.verifiers, verifier)
		sum := sha256.Sum256([]byte(verifier))
		if verifier == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			TokenError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
		sub, sid, nonce = c.sub, c.sid, c.nonce
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		p.refreshSent = append(p.refreshSent, rt)
		g := p.refresh[rt]
		if g == nil {
			TokenError(w, http.StatusBadRequest, "invalid_grant", "refresh token is invalid or was rotated")
			return
		}
		sub, sid = g.sub, g.sid
	default:
		TokenError(w, http.StatusBadRequest, "unsupported_grant_type", grantType)
		return
	}
	resp := p.tokens(grantType, sub, sid, nonce)
	if resp["refresh_token"] != nil && grantType == "refresh_token" {
		delete(p.refresh, r.PostForm.Get("refresh_token")) // rotation
	}
	WriteJSON(w, http.StatusOK, resp)
}

// tokens makes a token response for sub; it runs with the lock held.
func (p *Provider) tokens(grantType, sub, sid, nonce string) map[string]any {
	s := &p.script
	now := p.now()
	ttl := s.AccessTTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	signer := p.active.Load()

	var access string
	if s.Opaque {
		access = "opaque-" + RandomHex(16)
	} else {
		ac := map[string]any{
			"iss":       p.Issuer,
			"aud":       []string{p.ClientID},
			"sub":       sub,
			"iat":       now.Unix(),
			"exp":       now.Add(ttl).Unix(),
			"jti":       RandomHex(8),
			"scope":     "openid profile email offline_access",
			"client_id": p.ClientID,
		}
		if s.AccessClaims != nil {
			s.AccessClaims(grantType, ac)
		}
		if s.SignAccess != nil {
			access = s.SignAccess(ac)
		} else {
			access = signer.Sign(ac, "at+jwt")
		}
	}

	resp := map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   int(ttl / time.Second),
	}
	tt := s.TokenType
	if grantType == "refresh_token" && s.TokenTypeOnRefresh != "" {
		tt = s.TokenTypeOnRefresh
	}
	switch tt {
	case "":
	case "-":
		delete(resp, "token_type")
	default:
		resp["token_type"] = tt
	}
	if grantType == "authorization_code" || !s.NoIDTokenOnRefresh {
		ic := map[string]any{
			"iss":            p.Issuer,
			"aud":            p.ClientID,
			"sub":            sub,
			"sid":            sid,
			"iat":            now.Unix(),
			"exp":            now.Add(time.Hour).Unix(),
			"email":          p.email,
			"email_verified": true,
			"name":           "Test User",
		}
		if nonce != "" {
			ic["nonce"] = nonce
		}
		if s.ATHash != "" {
			ic["at_hash"] = s.ATHash
		} else {
			ic["at_hash"] = AccessTokenHash(access)
		}
		if s.IDClaims != nil {
			s.IDClaims(grantType, ic)
		}
		var idt string
		if s.SignID != nil {
			idt = s.SignID(ic)
		} else {
			idt = signer.Sign(ic, "JWT")
		}
		resp["id_token"] = idt
		p.lastIDToken = idt
	}
	if !s.NoRefreshToken && (grantType == "authorization_code" || !s.NoRefreshOnRefresh) {
		rt := "rt-" + RandomHex(16)
		p.refresh[rt] = &grant{sub: sub, sid: sid}
		resp["refresh_token"] = rt
		p.lastRefreshToken = rt
	}
	p.lastAccessToken = access
	return resp
}

// Hold returns a Script.Token hook that keeps every token request of
// grant type grant waiting until release is called, then lets the
// provider answer it; started is closed when the first one arrives. Other
// requests pass at once. Call release once.
func Hold(grant string) (hook func(w http.ResponseWriter, r *http.Request, grant string) bool, started <-chan struct{}, release func()) {
	first, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook = func(w http.ResponseWriter, r *http.Request, g string) bool {
		if g == grant {
			once.Do(func() { close(first) })
			<-gate
		}
		return false
	}
	return hook, first, func() { close(gate) }
}
