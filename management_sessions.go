package oidcauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
)

// scalekitRevokeUserSessions is the path of Scalekit's "revoke user
// sessions" call under the Management API's base URL. It could not be
// checked against Scalekit's published API reference here; if it differs,
// only this constant changes.
const scalekitRevokeUserSessions = "/api/v1/users/%s/sessions/revoke"

// revokeUserSessions asks the IdP to end every session of sub there, so
// that every app of those IdP sessions signs out too.
func (mg *management) revokeUserSessions(ctx context.Context, sub string) error {
	tok, err := mg.token(ctx)
	if err != nil {
		return fmt.Errorf("client-credentials token: %s", oidc.DescribeTokenError(err))
	}
	ctx, cancel := context.WithTimeout(ctx, idpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, mg.baseURL+fmt.Sprintf(scalekitRevokeUserSessions, url.PathEscape(sub)), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := mg.client.Do(req)
	observeIdP("management", start)
	mg.tracker.Record("management", oidc.CallOutcome(resp, err))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST "+scalekitRevokeUserSessions+": HTTP %d", "{id}", resp.StatusCode)
	}
	return nil
}
