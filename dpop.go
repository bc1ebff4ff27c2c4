package oidcauth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/dpop"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// DPoPConfig tunes DPoP (RFC 9449) in bearer mode. Bearer mode always
// takes `Authorization: DPoP` with a proof, and always refuses a token
// bound to a key (`cnf.jkt`) without one; this block announces DPoP in
// the resource metadata and can make it mandatory.
type DPoPConfig struct {
	// Refuse access tokens that are not bound to a key: every API call
	// needs `Authorization: DPoP` and a proof. Default: off.
	Required bool `json:"required,omitempty"`
}

// dpopWindow is how old a proof may be; dpopFuture how far its iat may
// be ahead of this server's clock.
const (
	dpopWindow = 2 * time.Minute
	dpopFuture = 30 * time.Second
)

// accessToken reads the request's Authorization header: the Bearer or
// DPoP scheme (RFC 9449 section 7.1) and the token.
func accessToken(r *http.Request) (scheme, token string, ok bool) {
	if tok, ok := bearerToken(r); ok {
		return "bearer", tok, true
	}
	h := r.Header.Get("Authorization")
	if len(h) < 5 || !strings.EqualFold(h[:5], "dpop ") {
		return "", "", false
	}
	tok := strings.TrimSpace(h[5:])
	return "dpop", tok, tok != ""
}

// dpopError is a refusal with its RFC 9449 error code.
type dpopError struct {
	code string // invalid_token or invalid_dpop_proof
	err  error
}

func (e *dpopError) Error() string { return e.code + ": " + e.err.Error() }

// checkDPoP enforces the key binding of a verified access token sent with
// scheme: a token with cnf.jkt needs the DPoP scheme and a valid, fresh,
// unused proof by that key; a token without one is refused under the DPoP
// scheme, and under Bearer too when DPoP is required.
func (m *OIDCAuth) checkDPoP(r *http.Request, scheme, raw string, claims map[string]any) error {
	jkt := ""
	if cnf, ok := claims["cnf"].(map[string]any); ok {
		jkt, _ = cnf["jkt"].(string)
	}
	if scheme == "bearer" {
		switch {
		case jkt != "":
			return &dpopError{"invalid_token", errors.New("a DPoP-bound token was sent as a bearer token")}
		case m.DPoP != nil && m.DPoP.Required:
			return &dpopError{"invalid_token", errors.New("only DPoP-bound tokens are accepted")}
		}
		return nil
	}
	if jkt == "" {
		return &dpopError{"invalid_token", errors.New("the DPoP scheme needs a DPoP-bound token (cnf.jkt)")}
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return &dpopError{"invalid_dpop_proof", errors.New("exactly one DPoP header is needed")}
	}
	now := m.now()
	p, err := dpop.Verify(proofs[0], dpop.Request{Method: r.Method, URL: m.dpopRequestURL(r), AccessToken: raw}, now,
		dpop.Window{Past: dpopWindow, Future: dpopFuture})
	if err != nil {
		return &dpopError{"invalid_dpop_proof", err}
	}
	if p.JKT != jkt {
		return &dpopError{"invalid_dpop_proof", errors.New("the proof's key is not the one the token is bound to")}
	}
	// Single use within the window: the store keeps each jti (of each
	// key) until no proof with it could be accepted any more.
	sum := sha256.Sum256([]byte(p.JKT + "\x00" + p.JTI))
	fresh, err := m.app.store.ClaimOnce(r.Context(), "dpop:"+hex.EncodeToString(sum[:16]), p.IssuedAt.Add(dpopWindow+dpopFuture))
	if err != nil {
		return err
	}
	if !fresh {
		return &dpopError{"invalid_dpop_proof", errors.New("the proof was used before")}
	}
	return nil
}

// dpopRequestURL is the URL a proof's htu must name: the request as the
// client sent it (before any rewrite), on protected_resource's origin
// when that is set (behind a proxy that terminates TLS), else on the
// request's own.
func (m *OIDCAuth) dpopRequestURL(r *http.Request) string {
	path := r.URL.EscapedPath()
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		path = orig.URL.EscapedPath()
	}
	if u := m.resourceURL; u != nil {
		return u.Scheme + "://" + u.Host + path
	}
	return resolveAgainst(r, &url.URL{}) + path
}

// dpopRefusal turns a failed DPoP check into resolve's answer: a refusal,
// or the error of a store that could not record the proof's jti.
func (m *OIDCAuth) dpopRefusal(err error) (*principal, bool, error) {
	var de *dpopError
	if !errors.As(err, &de) {
		// The store could not record the proof's jti: without that record
		// a replay could pass, so the request waits for the store (503,
		// like every other store outage), never a 500.
		m.logger.Error("cannot check a DPoP proof", zap.Error(err))
		return nil, false, caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("recording a DPoP proof: %w", err))
	}
	m.logger.Info("DPoP refused", zap.Error(err))
	metrics.bearerRequests.WithLabelValues("refused").Inc()
	if de.code == "invalid_dpop_proof" {
		return deny(dpopInvalidProof)
	}
	return deny(dpopInvalidToken)
}

// addDPoPMetadata announces DPoP in the resource metadata (RFC 9449
// section 5.1).
func (m *OIDCAuth) addDPoPMetadata(md *resourceMetadata) {
	if m.DPoP == nil {
		return
	}
	md.DPoPSigningAlgValuesSupported = dpop.AlgNames()
	md.DPoPBoundAccessTokensRequired = m.DPoP.Required
}

// checkDPoPConfig checks the dpop setting.
func (m *OIDCAuth) checkDPoPConfig() error {
	if m.DPoP != nil && m.Bearer == nil {
		return errors.New("dpop: needs bearer")
	}
	return nil
}
