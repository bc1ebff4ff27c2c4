package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Client is one relying party (client ID) of a Provider: it checks the
// tokens the module receives and talks to the token and revocation
// endpoints. Its fields are set once and then only read.
type Client struct {
	Provider *Provider
	ID       string
	Secret   string
	Scopes   []string
	// AuthMethod is client_secret_basic, client_secret_post, or empty:
	// basic unless the provider lists only post.
	AuthMethod string
	// Audiences are accepted in an access token's aud besides ID.
	Audiences []string
	// Now is the client's clock for every time check; default time.Now.
	Now func() time.Time
}

func (c *Client) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// The channel a token came by picks the key set's refetch rule (see the
// top of jwks.go).
const (
	untrusted = false
	trusted   = true
)

// verify is the one place where verifiers are built: go-oidc checks the
// signature (with the provider's keys, under the refetch rule of the
// channel, and the algorithms discovery pinned), iss and exp, and aud
// unless cfg skips it. cfg's algorithms and clock are always the
// provider's and the client's.
func (c *Client) verify(ctx context.Context, meta *Metadata, raw string, channel bool, cfg gooidc.Config) (*gooidc.IDToken, error) {
	keys := c.Provider.Keys()
	ks := keys.untrusted()
	if channel == trusted {
		ks = keys.trusted()
	}
	cfg.SupportedSigningAlgs = meta.Algs
	cfg.Now = c.now
	v := gooidc.NewVerifier(c.Provider.issuer, ks, &cfg)
	return verifyToken(ctx, c.Provider.client, v, raw)
}

// IDClaims are the ID token claims that go-oidc leaves to the caller.
type IDClaims struct {
	Subject  string          `json:"sub"`
	SID      string          `json:"sid"`
	Nonce    string          `json:"nonce"`
	AZP      string          `json:"azp"`
	IssuedAt *float64        `json:"iat"`
	Audience json.RawMessage `json:"aud"`
}

// VerifyIDToken checks an ID token, which comes only from the token
// endpoint, as OIDC Core 3.1.3.7 says: signature with the provider's keys
// and pinned algorithms, iss, aud, exp (go-oidc), then iat and sub
// present, azp, and the nonce when one is expected. at_hash is left to the
// caller, which has the access token.
func (c *Client) VerifyIDToken(ctx context.Context, meta *Metadata, raw, nonce string) (*gooidc.IDToken, *IDClaims, error) {
	tok, err := c.verify(ctx, meta, raw, trusted, gooidc.Config{ClientID: c.ID})
	if err != nil {
		return nil, nil, err
	}
	var cl IDClaims
	if err := tok.Claims(&cl); err != nil {
		return nil, nil, err
	}
	if err := c.checkIssuedAt(cl.IssuedAt); err != nil {
		return nil, nil, err
	}
	if cl.Subject == "" {
		return nil, nil, errors.New("id token has no sub")
	}
	if len(tok.Audience) > 1 && cl.AZP == "" {
		return nil, nil, errors.New("id token has several audiences but no azp")
	}
	if cl.AZP != "" && cl.AZP != c.ID {
		return nil, nil, fmt.Errorf("id token azp %q is not this client", cl.AZP)
	}
	if nonce != "" && !constantTimeEqual(cl.Nonce, nonce) {
		return nil, nil, errors.New("id token nonce does not match the login attempt")
	}
	return tok, &cl, nil
}

// checkIssuedAt checks that iat is present and not in the future (beyond
// ClockLeeway).
func (c *Client) checkIssuedAt(iat *float64) error {
	if iat == nil {
		return errors.New("token has no iat")
	}
	if time.Unix(int64(*iat), 0).After(c.now().Add(ClockLeeway)) {
		return errors.New("token iat is in the future")
	}
	return nil
}

// checkIssuedAtClaim is checkIssuedAt for claims decoded into a map.
func (c *Client) checkIssuedAtClaim(claims map[string]any) error {
	if n, ok := claims["iat"].(float64); ok {
		return c.checkIssuedAt(&n)
	}
	return c.checkIssuedAt(nil)
}

// AccessToken is a checked JWT access token.
type AccessToken struct {
	Expiry time.Time
	Claims map[string]any
	// ForClient: the audience holds the client ID.
	ForClient bool
	// KeyGen is the key set's removal count before the token was checked:
	// once it has grown, the verdict is stale (see Provider.KeyRemovals).
	KeyGen uint64
}

// IsJWT tells a JWS compact serialization from an opaque token.
func IsJWT(tok string) bool {
	return strings.Count(tok, ".") == 2 && strings.HasPrefix(tok, "eyJ")
}

// VerifyAccessToken checks a JWT access token that came from the token
// endpoint or a sealed session cookie (the trusted channel): signature
// (JWKS, pinned algorithms), iss, exp, aud holding the client ID or one of
// Audiences, iat present, and sub, when present, equal to sub. An opaque
// token cannot be checked locally; callers tell them apart with IsJWT.
// Nothing is cached here.
func (c *Client) VerifyAccessToken(ctx context.Context, raw, sub string) (*AccessToken, error) {
	gen := c.Provider.KeyRemovals()
	meta, err := c.Provider.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	// The audience is checked below, as it may be other than the client.
	tok, err := c.verify(ctx, meta, raw, trusted, gooidc.Config{SkipClientIDCheck: true})
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if !c.AudienceOK(tok.Audience, nil) {
		return nil, fmt.Errorf("access token: audience %q has neither the client_id nor an access_token_audiences value", tok.Audience)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if err := c.checkIssuedAtClaim(claims); err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if s, _ := claims["sub"].(string); s != "" && s != sub {
		return nil, errors.New("access token: sub differs from the session's user")
	}
	return &AccessToken{Expiry: tok.Expiry, Claims: claims, ForClient: containsString(tok.Audience, c.ID), KeyGen: gen}, nil
}

// AudienceOK reports whether an access token's audience holds the client
// ID, one of Audiences, or one of extra.
func (c *Client) AudienceOK(auds, extra []string) bool {
	for _, aud := range auds {
		if aud == c.ID || containsString(c.Audiences, aud) || containsString(extra, aud) {
			return true
		}
	}
	return false
}

// VerifyBearer checks a bearer access token, which anyone can send (the
// untrusted channel): signature (JWKS, pinned algorithms), iss, exp, aud
// as accept says, the shape of an access token (see checkAccessTokenShape),
// iat and sub present. It returns the token and its sub; nothing is cached
// here.
func (c *Client) VerifyBearer(ctx context.Context, raw string, accept func(aud []string) bool) (*AccessToken, string, error) {
	gen := c.Provider.KeyRemovals()
	if !IsJWT(raw) {
		return nil, "", errors.New("not a JWT")
	}
	meta, err := c.Provider.Metadata(ctx)
	if err != nil {
		return nil, "", err
	}
	// The audience is checked below, against several accepted ones.
	tok, err := c.verify(ctx, meta, raw, untrusted, gooidc.Config{SkipClientIDCheck: true})
	if err != nil {
		return nil, "", err
	}
	if !accept(tok.Audience) {
		return nil, "", fmt.Errorf("audience %q not accepted", tok.Audience)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, "", err
	}
	typ, err := jwtType(raw)
	if err != nil {
		return nil, "", err
	}
	if err := checkAccessTokenShape(typ, claims); err != nil {
		return nil, "", err
	}
	if err := c.checkIssuedAtClaim(claims); err != nil {
		return nil, "", err
	}
	if tok.Subject == "" {
		return nil, "", errors.New("token has no sub")
	}
	return &AccessToken{Expiry: tok.Expiry, Claims: claims, KeyGen: gen}, tok.Subject, nil
}

// checkAccessTokenShape accepts only access tokens as bearer tokens. The
// IdP signs ID tokens and logout tokens with the same keys, often for the
// same audience, but they travel in URLs (id_token_hint) and to the
// back-channel endpoint, and are no credential for an API. An access token
// says so in typ (RFC 9068: at+jwt), or, without that, by the claims of
// the IdP's access tokens (client_id or scope, or Okta's cid and Entra
// ID's scp); a claim only ID or logout tokens carry refuses it either way.
func checkAccessTokenShape(typ string, claims map[string]any) error {
	for _, c := range []string{"events", "nonce", "at_hash", "c_hash"} {
		if _, ok := claims[c]; ok {
			return fmt.Errorf("token has %s: not an access token", c)
		}
	}
	switch strings.TrimPrefix(strings.ToLower(typ), "application/") {
	case "at+jwt":
		return nil
	case "", "jwt":
		for _, c := range []string{"client_id", "scope", "cid", "scp"} {
			if _, ok := claims[c]; ok {
				return nil
			}
		}
		return errors.New("token has neither typ at+jwt nor an access token's client_id or scope")
	default:
		return fmt.Errorf("token typ %q is not an access token", truncate(typ, 40))
	}
}

// ClaimStrings reads a string-or-array claim such as aud.
func ClaimStrings(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
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

const (
	// BackchannelEvent is the event a logout token carries.
	BackchannelEvent = "http://schemas.openid.net/event/backchannel-logout"
	// MaxLogoutTokenAge: a logout token older than this is refused.
	MaxLogoutTokenAge = 10 * time.Minute
)

// LogoutClaims are the claims of a checked logout token.
type LogoutClaims struct {
	Subject  string                     `json:"sub"`
	SID      string                     `json:"sid"`
	JTI      string                     `json:"jti"`
	IssuedAt *float64                   `json:"iat"`
	Expiry   *float64                   `json:"exp"`
	Events   map[string]json.RawMessage `json:"events"`
}

// VerifyLogoutToken applies section 2.6 of OIDC Back-Channel Logout 1.0:
// signature with the IdP's keys (untrusted channel) and pinned algorithms,
// iss, aud containing the client ID, iat (not in the future, not older
// than MaxLogoutTokenAge), exp when present, typ when present, sub and/or
// sid, the back-channel event as a JSON object, no nonce, and a jti. That
// the jti was never seen before is left to the caller.
func (c *Client) VerifyLogoutToken(ctx context.Context, raw string) (*LogoutClaims, error) {
	now := c.now()
	meta, err := c.Provider.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	if typ, err := jwtType(raw); err != nil {
		return nil, err
	} else if typ != "" && typ != "logout+jwt" && typ != "application/logout+jwt" && typ != "JWT" {
		return nil, fmt.Errorf("typ %q is not a logout token", typ)
	}
	tok, err := c.verify(ctx, meta, raw, untrusted, gooidc.Config{
		ClientID:        c.ID,
		SkipExpiryCheck: true, // exp is optional in logout tokens; checked below
	})
	if err != nil {
		return nil, err
	}
	var cl LogoutClaims
	if err := tok.Claims(&cl); err != nil {
		return nil, err
	}
	var present map[string]json.RawMessage
	if err := tok.Claims(&present); err != nil {
		return nil, err
	}
	if err := c.checkIssuedAt(cl.IssuedAt); err != nil {
		return nil, err
	}
	if now.Sub(time.Unix(int64(*cl.IssuedAt), 0)) > MaxLogoutTokenAge {
		return nil, errors.New("token iat is too old")
	}
	if cl.Expiry != nil && time.Unix(int64(*cl.Expiry), 0).Before(now.Add(-ClockLeeway)) {
		return nil, errors.New("token expired")
	}
	if cl.Subject == "" && cl.SID == "" {
		return nil, errors.New("token has neither sub nor sid")
	}
	ev, ok := cl.Events[BackchannelEvent]
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
	if cl.JTI == "" {
		return nil, errors.New("token has no jti")
	}
	return &cl, nil
}

// VerifyInitiation checks an idp_initiated_login token (untrusted
// channel): signature with the IdP's keys and pinned algorithms, exp
// (required), nbf, and iss when it is present. aud is not checked: such
// tokens are for the environment, not one client.
func (c *Client) VerifyInitiation(ctx context.Context, raw string) (map[string]any, error) {
	meta, err := c.Provider.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := c.verify(ctx, meta, raw, untrusted, gooidc.Config{
		SkipClientIDCheck: true,
		SkipIssuerCheck:   true, // checked below, when present
	})
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, err
	}
	if iss, ok := claims["iss"]; ok && iss != c.Provider.issuer {
		return nil, fmt.Errorf("issued by %v, not %s", iss, c.Provider.issuer)
	}
	if _, ok := claims["exp"]; !ok {
		return nil, errors.New("token has no exp")
	}
	return claims, nil
}

// OAuthConfig builds the oauth2 configuration of the client.
func (c *Client) OAuthConfig(meta *Metadata, redirectURL string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	switch {
	case c.AuthMethod == "client_secret_post":
		style = oauth2.AuthStyleInParams
	case c.AuthMethod == "client_secret_basic":
	case len(meta.AuthMethods) > 0 && !containsString(meta.AuthMethods, "client_secret_basic") && containsString(meta.AuthMethods, "client_secret_post"):
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     c.ID,
		ClientSecret: c.Secret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   meta.Authorization,
			TokenURL:  meta.Token,
			AuthStyle: style,
		},
		RedirectURL: redirectURL,
		Scopes:      c.Scopes,
	}
}

// TokenSet is what a code exchange or a refresh yields, after checking.
type TokenSet struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	Expiry       time.Time
	Subject      string
	SID          string
	Claims       json.RawMessage // ID token claims
	// Access is the checked access token; nil when it is opaque. It is
	// not serialized: a TokenSet handed to another instance is one it
	// checks again when it uses it.
	Access *AccessToken `json:"-"`
}

// RefreshFailed marks a refresh the IdP refused (invalid_grant and the
// like): the session is over. Other failures mean the IdP is unreachable.
type RefreshFailed struct{ Err error }

func (e *RefreshFailed) Error() string { return "refresh refused: " + e.Err.Error() }
func (e *RefreshFailed) Unwrap() error { return e.Err }

// UnverifiedRefresh is a refresh the token endpoint answered whose tokens
// could not be checked, as the IdP's keys were out of reach. It wraps
// ErrUnavailable: the session goes on with its old tokens (or waits).
// None of the answer is used except Next, its refresh token: the IdP may
// have spent the old one (rotation), so the retry refreshes with Next,
// and checks that answer in full. Next goes only back to the token
// endpoint, and is never put in a cookie.
type UnverifiedRefresh struct {
	Next string
	Err  error
}

func (e *UnverifiedRefresh) Error() string { return e.Err.Error() }
func (e *UnverifiedRefresh) Unwrap() error { return e.Err }

// Exchange trades an authorization code (with its PKCE verifier) for
// tokens and checks them; nonce is the login attempt's. A refusal by the
// token endpoint is an error; other failures wrap ErrUnavailable.
func (c *Client) Exchange(ctx context.Context, meta *Metadata, redirectURL, code, verifier, nonce string) (*TokenSet, error) {
	ctx, cancel := context.WithTimeout(ctx, IdPTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.Provider.client)
	done := c.Provider.report.IdPCall("token")
	tok, err := c.OAuthConfig(meta, redirectURL).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	done()
	c.Provider.tracker.Record("token", err)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, fmt.Errorf("token endpoint refused the code: %s", DescribeRetrieveError(re))
		}
		return nil, fmt.Errorf("%w: exchanging code: %s", ErrUnavailable, DescribeTokenError(err))
	}
	return c.checkTokenResponse(ctx, meta, tok, nonce, "")
}

// Refresh uses a refresh token; prevSub is the session's user, which a
// refreshed ID token must not change. A refusal is a *RefreshFailed; an
// answer that could not be checked is an *UnverifiedRefresh when it
// brought a new refresh token; other failures wrap ErrUnavailable.
func (c *Client) Refresh(ctx context.Context, refreshToken, prevSub string) (*TokenSet, error) {
	meta, err := c.Provider.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, IdPTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.Provider.client)
	src := c.OAuthConfig(meta, "").TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)})
	done := c.Provider.report.IdPCall("token")
	tok, err := src.Token()
	done()
	c.Provider.tracker.Record("token", err)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return nil, &RefreshFailed{Err: errors.New(DescribeRetrieveError(re))}
		}
		return nil, fmt.Errorf("%w: refreshing: %s", ErrUnavailable, DescribeTokenError(err))
	}
	ts, err := c.checkTokenResponse(ctx, meta, tok, "", prevSub)
	switch {
	case errors.Is(err, ErrUnavailable) && tok.RefreshToken != "" && tok.RefreshToken != refreshToken:
		return nil, &UnverifiedRefresh{Next: tok.RefreshToken, Err: err}
	case errors.Is(err, ErrUnavailable):
		return nil, err // the old refresh token stays usable
	case err != nil:
		return nil, &RefreshFailed{Err: err}
	}
	return ts, nil
}

// checkTokenResponse validates the tokens of a token endpoint response.
// After a refresh the ID token is optional; if present, its sub must stay.
func (c *Client) checkTokenResponse(ctx context.Context, meta *Metadata, tok *oauth2.Token, nonce, prevSub string) (*TokenSet, error) {
	if tok.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	if err := checkTokenType(tok.TokenType); err != nil {
		return nil, err
	}
	ts := &TokenSet{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}
	rawID, _ := tok.Extra("id_token").(string)
	switch {
	case rawID != "":
		idt, cl, err := c.VerifyIDToken(ctx, meta, rawID, nonce)
		if err != nil {
			return nil, fmt.Errorf("id token: %w", err)
		}
		if prevSub != "" && cl.Subject != prevSub {
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
		// session keeps on their own: the cookie stays small. auth_time
		// stays, for max_age.
		for _, k := range []string{"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "jti", "sub", "sid"} {
			delete(all, k)
		}
		ts.Claims, _ = json.Marshal(all)
		ts.IDToken, ts.Subject, ts.SID = rawID, cl.Subject, cl.SID
	case prevSub == "":
		return nil, errors.New("token response has no id_token (is the openid scope granted?)")
	default:
		ts.Subject = prevSub
	}
	if IsJWT(ts.AccessToken) {
		at, err := c.VerifyAccessToken(ctx, ts.AccessToken, ts.Subject)
		if err != nil {
			return nil, err
		}
		ts.Access = at
		ts.Expiry = time.Unix(at.Expiry.Unix(), 0)
	}
	if ts.Expiry.IsZero() {
		// Neither a JWT exp nor expires_in: assume a short life, so the
		// session is re-checked with the IdP soon.
		ts.Expiry = c.now().Add(5 * time.Minute)
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

// RevocationTimeout bounds a token revocation.
const RevocationTimeout = 5 * time.Second

// RevokeRefreshToken revokes a refresh token at the IdP (RFC 7009), so
// that a copy of it is worthless after logout. The outcome is recorded;
// the returned error says why the token may not be revoked.
func (c *Client) RevokeRefreshToken(ctx context.Context, meta *Metadata, token string) error {
	ctx, cancel := context.WithTimeout(ctx, RevocationTimeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"refresh_token"}}
	basic := c.OAuthConfig(meta, "").Endpoint.AuthStyle == oauth2.AuthStyleInHeader
	if !basic {
		form.Set("client_id", c.ID)
		form.Set("client_secret", c.Secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.Revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	}
	done := c.Provider.report.IdPCall("revocation")
	resp, err := c.Provider.client.Do(req)
	done()
	c.Provider.tracker.Record("revocation", CallOutcome(resp, err))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode}
	}
	return nil
}

// DescribeTokenError says what went wrong at the token endpoint without
// quoting its response body, which the oauth2 package's errors include and
// which may hold tokens or echo the request.
func DescribeTokenError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return DescribeRetrieveError(re)
	}
	if strings.HasPrefix(err.Error(), "oauth2: cannot parse json") || strings.Contains(err.Error(), "server response missing access_token") {
		return "malformed token response"
	}
	return err.Error()
}

// DescribeRetrieveError is DescribeTokenError for the token endpoint's
// answer: its error code and description, else its HTTP status.
func DescribeRetrieveError(re *oauth2.RetrieveError) string {
	if re.ErrorCode != "" {
		if re.ErrorDescription != "" {
			return re.ErrorCode + ": " + re.ErrorDescription
		}
		return re.ErrorCode
	}
	return fmt.Sprintf("HTTP %d", re.Response.StatusCode)
}

// constantTimeEqual compares two secrets in constant time.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
