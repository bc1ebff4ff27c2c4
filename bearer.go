package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"go.uber.org/zap"
)

// BearerConfig turns on bearer mode: API clients without a session may
// send `Authorization: Bearer <JWT>` with an access token of this IdP.
type BearerConfig struct {
	// Audiences accepted besides the client ID, such as an API's identifier
	// that the IdP puts in `aud`. Default: only the client ID.
	Audiences []string `json:"audiences,omitempty"`

	// Also accept bearer tokens for the audiences of
	// access_token_audiences (which otherwise apply only to the tokens of
	// sessions). Default: off.
	AcceptAccessTokenAudiences bool `json:"accept_access_token_audiences,omitempty"`
}

// bearerAuth authenticates requests by bearer token (bearer mode).
type bearerAuth struct {
	cfg       *BearerConfig
	clientID  string
	audiences []string // access_token_audiences
	tokens    *tokens
	rules     accessRules
	srv       *OIDCAuth // DPoP, step-up and scope settings
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// resolve is OIDCAuth.resolve for a request with a bearer token. It never
// sets cookies or redirects: its refusals are answered 401 (or 403) with
// an RFC 6750 challenge.
// scheme is "bearer" or "dpop" (RFC 9449 section 7.1).
func (b *bearerAuth) resolve(r *http.Request, scheme, raw string) (*principal, bool, error) {
	v, sub, err := b.verify(r.Context(), raw)
	if err != nil {
		if errors.Is(err, errIdPUnavailable) {
			b.tokens.logger.Error("cannot validate bearer token", zap.Error(err))
			return nil, false, err
		}
		b.tokens.logger.Info("bearer token refused", zap.Error(err))
		metrics.bearerRequests.WithLabelValues("refused").Inc()
		if scheme == "dpop" {
			return deny(dpopInvalidToken)
		}
		return deny(bearerInvalid)
	}
	if err := b.srv.checkDPoP(r, scheme, raw, v.claims); err != nil {
		return b.srv.dpopRefusal(err)
	}
	pseudo := &session{Subject: sub, Created: claimInt(v.claims, "iat")}
	pseudo.SID, _ = v.claims["sid"].(string)
	if b.tokens.app.revoked(pseudo) {
		return deny(bearerEnded)
	}
	id := v.identityFor(pseudo)
	if _, _, need := b.srv.stepUpNeeded(v.claims, b.tokens.now()); need {
		b.tokens.logger.Info("bearer token needs a stronger authentication", zap.String("sub", sub))
		metrics.bearerRequests.WithLabelValues("refused").Inc()
		return deny(stepUp)
	}
	if !b.rules.allow(id) {
		if len(missingScopes(id.access, b.srv.requiredValues("scope"))) > 0 {
			return deny(bearerScope)
		}
		return deny(bearerForbidden)
	}
	metrics.bearerRequests.WithLabelValues("accepted").Inc()
	return &principal{id: id, accessToken: raw, expiry: v.expiry}, true, nil
}

// verify checks a bearer access token (see oidc.Client.VerifyBearer)
// with audienceOK for its audience. Outcomes are cached like session
// tokens, in a cache of their own since the accepted audiences differ.
func (b *bearerAuth) verify(ctx context.Context, raw string) (*verifiedToken, string, error) {
	now := b.tokens.now()
	gen := b.tokens.provider.KeyRemovals()
	if v := b.tokens.app.bearer.get(raw); v != nil && v.keyGen == gen {
		if v.expiry <= now.Unix() {
			return nil, "", errors.New("token expired")
		}
		// The cache is shared by every handler of this client, and each
		// may accept other audiences.
		if !b.audienceOK(oidc.ClaimStrings(v.claims["aud"])) {
			return nil, "", fmt.Errorf("audience %q not accepted", v.claims["aud"])
		}
		sub, _ := v.claims["sub"].(string)
		return v, sub, nil
	}
	at, sub, err := b.tokens.client.VerifyBearer(ctx, raw, b.audienceOK)
	if err != nil {
		return nil, "", err
	}
	v := &verifiedToken{expiry: at.Expiry.Unix(), claims: at.Claims, keyGen: at.KeyGen}
	b.tokens.app.bearer.put(raw, v, now.Unix())
	return v, sub, nil
}

// audienceOK reports whether a bearer token's audience holds the
// client ID or one of bearer's audiences; access_token_audiences count
// only when the operator says so (accept_access_token_audiences), since
// they name APIs the sessions' tokens are for, not necessarily this one.
func (b *bearerAuth) audienceOK(auds []string) bool {
	for _, aud := range auds {
		if aud == b.clientID || containsString(b.cfg.Audiences, aud) ||
			(b.cfg.AcceptAccessTokenAudiences && containsString(b.audiences, aud)) {
			return true
		}
	}
	return false
}

func sanitizeRealm(host string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, host)
}
