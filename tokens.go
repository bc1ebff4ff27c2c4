package oidcauth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// providers holds one provider per issuer (and endpoint overrides). It is
// pooled so that a config reload keeps the discovered metadata, the JWKS
// and the cache of verified tokens.
var providers = caddy.NewUsagePool()

const (
	idpTimeout       = 10 * time.Second
	discoveryBackoff = time.Second
	maxBackoff       = time.Minute
	maxVerified      = 100_000
	clockLeeway      = 5 * time.Minute
)

// Asymmetric algorithms only: HS* would let anyone holding the client
// secret (or a public key mistaken for one) mint tokens, and none is none.
var asymmetricAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// errIdPUnavailable marks failures to reach the IdP, as opposed to the IdP
// refusing something; they become 502/503 answers, not logouts.
var errIdPUnavailable = errors.New("identity provider unavailable")

type endpoints struct {
	Authorization string
	Token         string
	JWKS          string
	EndSession    string
	Revocation    string
}

// metadata is what the handler needs of the provider's discovery document.
type metadata struct {
	endpoints
	algs              []string
	authMethods       []string
	issParamSupported bool
}

type provider struct {
	issuer    string
	overrides endpoints
	client    *http.Client
	now       func() time.Time // the key set's clock

	// ctx bounds the key set's fetches and refresher; Destruct ends it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	meta    *metadata
	nextTry time.Time
	backoff time.Duration
	lastErr error
	keys    *keySet

	revocationSlots chan struct{} // token revocations under way
	tracker         *idpTracker   // outcome of the latest calls, for health
	prober          *prober       // set for pooled providers only
}

func newProvider(issuer string, overrides endpoints) *provider {
	ctx, cancel := context.WithCancel(context.Background())
	return &provider{
		issuer:          issuer,
		overrides:       overrides,
		now:             time.Now,
		ctx:             ctx,
		cancel:          cancel,
		revocationSlots: make(chan struct{}, maxRevocationCalls),
		tracker:         newIdPTracker(issuer),
		client: &http.Client{
			Timeout:   idpTimeout,
			Transport: limitedTransport{http.DefaultTransport},
			// Never follow a redirect: the token endpoint receives the code
			// and the client secret, which must go nowhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Destruct implements caddy.Destructor: the background probe ends and the
// key set's refresher stops and is waited for, so no goroutine outlives the
// last config using this provider.
func (p *provider) Destruct() error {
	if p.prober != nil {
		p.prober.stop()
		p.tracker.releaseGauges()
	}
	p.cancel()
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	if keys != nil {
		keys.stop()
	}
	return nil
}

// metadata returns the provider's metadata, discovering it on first use.
// Failed attempts back off exponentially, so an IdP that is down is asked
// at most about once a minute however many requests arrive.
func (p *provider) metadata(ctx context.Context, now time.Time) (*metadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.meta != nil {
		return p.meta, nil
	}
	if now.Before(p.nextTry) {
		return nil, p.lastErr
	}
	meta, err := p.discover(ctx)
	if err != nil {
		if p.backoff == 0 {
			p.backoff = discoveryBackoff
		} else {
			p.backoff = min(2*p.backoff, maxBackoff)
		}
		p.nextTry = now.Add(p.backoff)
		p.lastErr = fmt.Errorf("%w: discovery of %s: %v", errIdPUnavailable, p.issuer, err)
		return nil, p.lastErr
	}
	p.meta = meta
	p.keys = newKeySet(p.ctx, meta.JWKS, p.client, meta.algs, p.now, p.tracker)
	return meta, nil
}

// keyRemovals is the key set's removal count (0 before discovery).
func (p *provider) keyRemovals() uint64 {
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	if keys == nil {
		return 0
	}
	return keys.removalCount()
}

func (p *provider) discover(ctx context.Context) (*metadata, error) {
	o := p.overrides
	meta := &metadata{endpoints: o}
	if o.Authorization == "" || o.Token == "" || o.JWKS == "" {
		ctx, cancel := context.WithTimeout(ctx, idpTimeout)
		defer cancel()
		start := time.Now()
		prov, err := oidc.NewProvider(oidc.ClientContext(ctx, p.client), p.issuer)
		observeIdP("discovery", start)
		p.tracker.record("discovery", err)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Auth        string   `json:"authorization_endpoint"`
			Token       string   `json:"token_endpoint"`
			JWKS        string   `json:"jwks_uri"`
			EndSession  string   `json:"end_session_endpoint"`
			Revocation  string   `json:"revocation_endpoint"`
			Algs        []string `json:"id_token_signing_alg_values_supported"`
			AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
			IssParam    bool     `json:"authorization_response_iss_parameter_supported"`
		}
		if err := prov.Claims(&doc); err != nil {
			return nil, err
		}
		meta.Authorization = firstNonEmpty(o.Authorization, doc.Auth)
		meta.Token = firstNonEmpty(o.Token, doc.Token)
		meta.JWKS = firstNonEmpty(o.JWKS, doc.JWKS)
		meta.EndSession = firstNonEmpty(o.EndSession, doc.EndSession)
		meta.Revocation = doc.Revocation
		meta.algs = doc.Algs
		meta.authMethods = doc.AuthMethods
		meta.issParamSupported = doc.IssParam
	}
	if meta.Authorization == "" || meta.Token == "" || meta.JWKS == "" {
		return nil, errors.New("the provider's metadata lacks an authorization, token or jwks_uri endpoint")
	}
	var algs []string
	for _, a := range meta.algs {
		if asymmetricAlgs[a] {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	meta.algs = algs
	return meta, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// oauthConfig builds the oauth2 client configuration for one app.
func (m *OIDCAuth) oauthConfig(meta *metadata, redirectURL string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	switch {
	case m.TokenAuthMethod == "client_secret_post":
		style = oauth2.AuthStyleInParams
	case m.TokenAuthMethod == "client_secret_basic":
	case len(meta.authMethods) > 0 && !containsString(meta.authMethods, "client_secret_basic") && containsString(meta.authMethods, "client_secret_post"):
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     m.ClientID,
		ClientSecret: m.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   meta.Authorization,
			TokenURL:  meta.Token,
			AuthStyle: style,
		},
		RedirectURL: redirectURL,
		Scopes:      m.Scopes,
	}
}

// verifier checks ID tokens, which come only from the token endpoint.
func (m *OIDCAuth) verifier(meta *metadata) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(m.Issuer, m.provider.keys.trusted(), &oidc.Config{
		ClientID:             m.ClientID,
		SupportedSigningAlgs: meta.algs,
		Now:                  m.now,
	})
}

// idClaims are the ID token claims that go-oidc leaves to the caller.
type idClaims struct {
	Subject  string          `json:"sub"`
	SID      string          `json:"sid"`
	Nonce    string          `json:"nonce"`
	AZP      string          `json:"azp"`
	IssuedAt *float64        `json:"iat"`
	Audience json.RawMessage `json:"aud"`
}

// verifyIDToken checks an ID token as OIDC Core 3.1.3.7 says: signature
// with the provider's keys and pinned algorithms, iss, aud, exp (go-oidc),
// then iat and sub present, azp, and the nonce when one is expected.
func (m *OIDCAuth) verifyIDToken(ctx context.Context, meta *metadata, raw, nonce string) (*oidc.IDToken, *idClaims, error) {
	tok, err := verifyToken(ctx, m.provider.client, m.verifier(meta), raw)
	if err != nil {
		return nil, nil, err
	}
	var c idClaims
	if err := tok.Claims(&c); err != nil {
		return nil, nil, err
	}
	if err := m.checkIssuedAt(c.IssuedAt); err != nil {
		return nil, nil, err
	}
	if c.Subject == "" {
		return nil, nil, errors.New("id token has no sub")
	}
	if len(tok.Audience) > 1 && c.AZP == "" {
		return nil, nil, errors.New("id token has several audiences but no azp")
	}
	if c.AZP != "" && c.AZP != m.ClientID {
		return nil, nil, fmt.Errorf("id token azp %q is not this client", c.AZP)
	}
	if nonce != "" && !constantTimeEqual(c.Nonce, nonce) {
		return nil, nil, errors.New("id token nonce does not match the login attempt")
	}
	return tok, &c, nil
}

func (m *OIDCAuth) checkIssuedAt(iat *float64) error {
	if iat == nil {
		return errors.New("token has no iat")
	}
	if time.Unix(int64(*iat), 0).After(m.now().Add(clockLeeway)) {
		return errors.New("token iat is in the future")
	}
	return nil
}

// checkIssuedAtClaim is checkIssuedAt for claims decoded into a map.
func (m *OIDCAuth) checkIssuedAtClaim(claims map[string]any) error {
	if n, ok := claims["iat"].(float64); ok {
		return m.checkIssuedAt(&n)
	}
	return m.checkIssuedAt(nil)
}

// verifiedToken is the outcome of checking one access token, cached so
// that the hot path does no signature work for a token seen before.
type verifiedToken struct {
	expiry int64          // unix seconds
	claims map[string]any // access token claims; nil for opaque tokens
	// sub is the user the token was verified for: its own sub claim, or
	// the session's user when the token has none (or is opaque). Every
	// cache hit checks it, so a token never serves another user's session.
	sub string

	// forClient: the audience holds the client ID, so every handler of the
	// client accepts the token without looking at its audience again.
	forClient bool

	// keyGen is the key set's removal count when the token was checked:
	// once the IdP has dropped a key, the token is checked again.
	keyGen uint64

	once sync.Once
	id   *identity
	// The session the cached identity was built from.
	idSub, idSID string
	idClaims     []byte
}

type verifiedCache struct {
	mu      sync.RWMutex
	entries map[string]*verifiedToken
}

func (c *verifiedCache) get(token string) *verifiedToken {
	c.mu.RLock()
	v := c.entries[token]
	c.mu.RUnlock()
	return v
}

func (c *verifiedCache) put(token string, v *verifiedToken, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxVerified {
		for k, e := range c.entries {
			if e.expiry <= now {
				delete(c.entries, k)
			}
		}
		// Still full of live tokens: drop an arbitrary half rather than
		// grow without bound; they are re-verified on their next use.
		for k := range c.entries {
			if len(c.entries) < maxVerified/2 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[token] = v
}

// isJWT tells a JWS compact serialization from an opaque token.
func isJWT(tok string) bool {
	return strings.Count(tok, ".") == 2 && strings.HasPrefix(tok, "eyJ")
}

// verifyAccessToken checks a JWT access token: signature (JWKS, pinned
// algorithms), iss, aud contains client_id, exp, and iat present. An opaque
// token cannot be checked locally; the session then relies on the ID token
// validated at login and the expiry the token endpoint gave.
func (m *OIDCAuth) verifyAccessToken(ctx context.Context, s *session) (*verifiedToken, error) {
	now := m.now()
	gen := m.provider.keyRemovals()
	if v := m.app.verified.get(s.AccessToken); v != nil && v.keyGen == gen {
		if v.expiry <= now.Unix() {
			return nil, errors.New("access token expired")
		}
		if v.sub != s.Subject {
			return nil, errors.New("access token: verified for another user than the session's")
		}
		// The cache is shared by every handler of this client; one that
		// accepts other audiences may have put the token there.
		if !v.forClient && !m.audienceOK(claimStrings(v.claims["aud"]), nil) {
			return nil, fmt.Errorf("access token: audience %v not accepted", v.claims["aud"])
		}
		return v, nil
	}
	if !isJWT(s.AccessToken) {
		if s.Expiry <= now.Unix() {
			return nil, errors.New("access token expired")
		}
		// Nothing to check locally: the token came from the token
		// endpoint, inside the session's sealed cookie.
		v := &verifiedToken{expiry: s.Expiry, forClient: true, keyGen: gen, sub: s.Subject}
		m.app.verified.put(s.AccessToken, v, now.Unix())
		return v, nil
	}
	meta, err := m.provider.metadata(ctx, now)
	if err != nil {
		return nil, err
	}
	// The token comes from the token endpoint or a sealed session cookie.
	tok, err := verifyToken(ctx, m.provider.client, m.accessVerifier(meta, m.provider.keys.trusted()), s.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if !m.audienceOK(tok.Audience, nil) {
		return nil, fmt.Errorf("access token: audience %q has neither the client_id nor an access_token_audiences value", tok.Audience)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if err := m.checkIssuedAtClaim(claims); err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if sub, _ := claims["sub"].(string); sub != "" && sub != s.Subject {
		return nil, errors.New("access token: sub differs from the session's user")
	}
	v := &verifiedToken{expiry: tok.Expiry.Unix(), claims: claims, forClient: containsString(tok.Audience, m.ClientID), keyGen: gen, sub: s.Subject}
	m.app.verified.put(s.AccessToken, v, now.Unix())
	return v, nil
}

// accessVerifier checks an access token's signature, iss and exp; the
// audience is checked by audienceOK, as it may be other than the client.
// keys is the key set of the channel the token came by.
func (m *OIDCAuth) accessVerifier(meta *metadata, keys oidc.KeySet) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(m.Issuer, keys, &oidc.Config{
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: meta.algs,
		Now:                  m.now,
	})
}

// audienceOK reports whether an access token's audience holds the client
// ID, one of access_token_audiences, or one of extra.
func (m *OIDCAuth) audienceOK(auds, extra []string) bool {
	for _, aud := range auds {
		if aud == m.ClientID || containsString(m.AccessTokenAudiences, aud) || containsString(extra, aud) {
			return true
		}
	}
	return false
}

// tokenSet is what a code exchange or a refresh yields, after checking.
type tokenSet struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	Expiry       time.Time
	Subject      string
	SID          string
	Claims       json.RawMessage // ID token claims
}

// refreshFailed marks a refresh the IdP refused (invalid_grant and the
// like): the session is over. Other failures mean the IdP is unreachable.
type refreshFailed struct{ err error }

func (e *refreshFailed) Error() string { return "refresh refused: " + e.err.Error() }
func (e *refreshFailed) Unwrap() error { return e.err }

// unverifiedRefresh is a refresh the token endpoint answered whose tokens
// could not be checked, as the IdP's keys were out of reach. It wraps
// errIdPUnavailable: the session goes on with its old tokens (or waits).
// None of the answer is used except next, its refresh token: the IdP may
// have spent the old one (rotation), so the retry refreshes with next,
// and checks that answer in full. next goes only back to the token
// endpoint, and is never put in a cookie.
type unverifiedRefresh struct {
	next string
	err  error
}

func (e *unverifiedRefresh) Error() string { return e.err.Error() }
func (e *unverifiedRefresh) Unwrap() error { return e.err }

// nextRefresh keeps, per session refresh token (the one in the cookie),
// the refresh token of an unverifiedRefresh for the retry. One instance
// only: with a shared store it is kept there (refreshCall, in redis.go).
type nextRefresh struct {
	mu      sync.Mutex
	entries map[string]nextToken
}

type nextToken struct {
	token string
	until time.Time
}

func (n *nextRefresh) get(old string, now time.Time) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.entries[old]; ok && now.Before(e.until) {
		return e.token
	}
	return ""
}

func (n *nextRefresh) set(old, next string, until, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = map[string]nextToken{}
	}
	if len(n.entries) >= maxVerified {
		for k, e := range n.entries {
			if !now.Before(e.until) {
				delete(n.entries, k)
			}
		}
	}
	n.entries[old] = nextToken{next, until}
}

func (n *nextRefresh) clear(old string) {
	n.mu.Lock()
	delete(n.entries, old)
	n.mu.Unlock()
}

// refreshOnThisInstance is refresh for an app without a shared store: it
// refreshes with the refresh token an unverifiedRefresh left, if any, and
// keeps the next one for as long as the session may live.
func (m *OIDCAuth) refreshOnThisInstance(ctx context.Context, refreshToken, prevSub string) (*tokenSet, error) {
	use := refreshToken
	if next := m.app.next.get(refreshToken, m.now()); next != "" {
		use = next
	}
	ts, err := m.refresh(ctx, use, prevSub)
	var unverified *unverifiedRefresh
	switch {
	case errors.As(err, &unverified):
		m.app.next.set(refreshToken, unverified.next, m.now().Add(m.sessionLifetime), m.now())
	case !errors.Is(err, errIdPUnavailable): // refreshed, or refused
		m.app.next.clear(refreshToken)
	}
	return ts, err
}

// exchange trades an authorization code for tokens and checks them.
func (m *OIDCAuth) exchange(ctx context.Context, meta *metadata, redirectURL, code string, st *loginState) (*tokenSet, error) {
	ctx, cancel := context.WithTimeout(ctx, idpTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.provider.client)
	start := time.Now()
	tok, err := m.oauthConfig(meta, redirectURL).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	observeIdP("token", start)
	m.provider.tracker.record("token", err)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, fmt.Errorf("token endpoint refused the code: %s", describeRetrieveError(re))
		}
		return nil, fmt.Errorf("%w: exchanging code: %s", errIdPUnavailable, describeTokenError(err))
	}
	return m.checkTokenResponse(ctx, meta, tok, st.Nonce, "")
}

// refresh uses a refresh token; prevSub is the session's user, which a
// refreshed ID token must not change.
func (m *OIDCAuth) refresh(ctx context.Context, refreshToken, prevSub string) (*tokenSet, error) {
	meta, err := m.provider.metadata(ctx, m.now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, idpTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.provider.client)
	src := m.oauthConfig(meta, "").TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)})
	start := time.Now()
	tok, err := src.Token()
	observeIdP("token", start)
	m.provider.tracker.record("token", err)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return nil, &refreshFailed{errors.New(describeRetrieveError(re))}
		}
		return nil, fmt.Errorf("%w: refreshing: %s", errIdPUnavailable, describeTokenError(err))
	}
	ts, err := m.checkTokenResponse(ctx, meta, tok, "", prevSub)
	switch {
	case errors.Is(err, errIdPUnavailable) && tok.RefreshToken != "" && tok.RefreshToken != refreshToken:
		return nil, &unverifiedRefresh{next: tok.RefreshToken, err: err}
	case errors.Is(err, errIdPUnavailable):
		return nil, err // the old refresh token stays usable
	case err != nil:
		return nil, &refreshFailed{err}
	}
	return ts, nil
}

// checkTokenResponse validates the tokens of a token endpoint response.
// After a refresh the ID token is optional; if present, its sub must stay.
func (m *OIDCAuth) checkTokenResponse(ctx context.Context, meta *metadata, tok *oauth2.Token, nonce, prevSub string) (*tokenSet, error) {
	if tok.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	if err := checkTokenType(tok.TokenType); err != nil {
		return nil, err
	}
	ts := &tokenSet{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}
	rawID, _ := tok.Extra("id_token").(string)
	switch {
	case rawID != "":
		idt, c, err := m.verifyIDToken(ctx, meta, rawID, nonce)
		if err != nil {
			return nil, fmt.Errorf("id token: %w", err)
		}
		if prevSub != "" && c.Subject != prevSub {
			return nil, errors.New("refreshed id token is for another user")
		}
		if idt.AccessTokenHash != "" {
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				return nil, fmt.Errorf("id token: %w", err)
			}
		}
		var all map[string]json.RawMessage
		if err := idt.Claims(&all); err != nil {
			return nil, err
		}
		// What only the token itself needs, and sub and sid, which the
		// session keeps on their own: the cookie stays small.
		for _, k := range []string{"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time", "jti", "sub", "sid"} {
			delete(all, k)
		}
		ts.Claims, _ = json.Marshal(all)
		ts.IDToken, ts.Subject, ts.SID = rawID, c.Subject, c.SID
	case prevSub == "":
		return nil, errors.New("token response has no id_token (is the openid scope granted?)")
	default:
		ts.Subject = prevSub
	}
	if isJWT(ts.AccessToken) {
		v, err := m.verifyAccessToken(ctx, &session{AccessToken: ts.AccessToken, Subject: ts.Subject})
		if err != nil {
			return nil, err
		}
		ts.Expiry = time.Unix(v.expiry, 0)
	}
	if ts.Expiry.IsZero() {
		// Neither a JWT exp nor expires_in: assume a short life, so the
		// session is re-checked with the IdP soon.
		ts.Expiry = m.now().Add(5 * time.Minute)
	}
	return ts, nil
}

// checkTokenType accepts only Bearer access tokens (RFC 6749 section 7.1,
// case-insensitive, RFC 6750): the handler sends them as bearer tokens and
// cannot use a token of another type (DPoP, MAC), which would need proofs
// it does not make. A response without token_type is refused too, as the
// RFC requires the field.
func checkTokenType(typ string) error {
	if !strings.EqualFold(typ, "Bearer") {
		return fmt.Errorf("token response has token_type %q, not Bearer", truncate(typ, 40))
	}
	return nil
}

// describeTokenError says what went wrong at the token endpoint without
// quoting its response body, which the oauth2 package's errors include and
// which may hold tokens or echo the request.
func describeTokenError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return describeRetrieveError(re)
	}
	if strings.HasPrefix(err.Error(), "oauth2: cannot parse json") || strings.Contains(err.Error(), "server response missing access_token") {
		return "malformed token response"
	}
	return err.Error()
}

func describeRetrieveError(re *oauth2.RetrieveError) string {
	if re.ErrorCode != "" {
		if re.ErrorDescription != "" {
			return re.ErrorCode + ": " + re.ErrorDescription
		}
		return re.ErrorCode
	}
	return fmt.Sprintf("HTTP %d", re.Response.StatusCode)
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// maxIdPResponse bounds every response body read from the IdP (discovery,
// JWKS, token, revocation): no document they serve comes near it, and a
// hostile or broken IdP must not make Caddy buffer without limit.
const maxIdPResponse = 1 << 20

type limitedTransport struct{ base http.RoundTripper }

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxIdPResponse}
	return resp, nil
}

// limitedBody fails a read past its limit, rather than truncating, so a
// cut-off document is an error and not a different document.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("identity provider response larger than 1 MiB")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
