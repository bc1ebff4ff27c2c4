package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ManagementAPI turns on the optional use of Scalekit's Management API:
// the handler obtains (and caches) a client-credentials token for its own
// client, and looks up the signed-in user's organization memberships
// (GET /api/v1/users/{sub}) to add them to the placeholders and the session
// info endpoint. Off unless configured.
type ManagementAPI struct {
	// The API's base URL. Default: the issuer.
	BaseURL string `json:"base_url,omitempty"`

	// Where the client-credentials token is obtained. Default: the
	// provider's token endpoint.
	TokenURL string `json:"token_url,omitempty"`

	// If set, the handler also passes its Management API token upstream in
	// this request header (as `Bearer <token>`), so a backend can call the
	// API without credentials of its own. Default: not passed.
	TokenHeader string `json:"token_header,omitempty"`

	// How long a user's memberships are kept before they are looked up
	// again. Default: `1m`.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
}

const defaultMembershipTTL = time.Minute

// membership is one organization of the user, as the API describes it.
type membership struct {
	OrganizationID string   `json:"organization_id"`
	Name           string   `json:"name,omitempty"`
	DisplayName    string   `json:"display_name,omitempty"`
	Status         string   `json:"membership_status,omitempty"`
	Roles          []string `json:"roles"`
	Permissions    []string `json:"permissions,omitempty"`
}

// management is the per-handler state of the Management API client.
type management struct {
	cfg     *ManagementAPI
	baseURL string
	ttl     time.Duration
	client  *http.Client
	logger  *zap.Logger
	tracker *oidc.Tracker

	tokMu     sync.Mutex
	tokens    oauth2.TokenSource
	newTokens func(context.Context) (oauth2.TokenSource, error)

	mu    sync.RWMutex
	users map[string]*membershipEntry
}

type membershipEntry struct {
	list    []membership
	fetched time.Time
}

// check checks the settings of the Management API; nil is off, and valid.
func (mc *ManagementAPI) check() error {
	if mc == nil {
		return nil
	}
	for field, v := range map[string]string{"base_url": mc.BaseURL, "token_url": mc.TokenURL} {
		if v != "" {
			if err := checkProviderURL("management_api: "+field, v); err != nil {
				return err
			}
		}
	}
	if mc.TokenHeader != "" && strings.ContainsAny(mc.TokenHeader, " :\t\r\n") {
		return fmt.Errorf("management_api: token_header %q is not a header name", mc.TokenHeader)
	}
	if mc.CacheTTL < 0 {
		return fmt.Errorf("management_api: cache_ttl %s is not a positive duration", time.Duration(mc.CacheTTL))
	}
	return nil
}

// newManagement makes the Management API client. It makes no request:
// the token source is set up on first use, when discovery has told the
// token endpoint.
func newManagement(mc *ManagementAPI, issuer string, client *oidc.Client, p *provider, logger *zap.Logger) *management {
	ttl := defaultMembershipTTL
	if mc.CacheTTL > 0 {
		ttl = time.Duration(mc.CacheTTL)
	}
	return &management{
		cfg: mc, baseURL: strings.TrimSuffix(firstNonEmpty(mc.BaseURL, issuer), "/"),
		ttl: ttl, client: p.HTTPClient(), logger: logger, tracker: p.Tracker(),
		users: map[string]*membershipEntry{},
		newTokens: func(ctx context.Context) (oauth2.TokenSource, error) {
			meta, err := p.Metadata(ctx)
			tokenURL := mc.TokenURL
			if tokenURL == "" {
				if err != nil {
					return nil, err
				}
				tokenURL = meta.Token
			}
			style := oauth2.AuthStyleInParams
			if err == nil {
				style = client.OAuthConfig(meta, "").Endpoint.AuthStyle
			}
			cc := &clientcredentials.Config{ClientID: client.ID, ClientSecret: client.Secret, TokenURL: tokenURL, AuthStyle: style}
			// Cached until shortly before it expires; requests go through
			// the provider's bounded, non-redirecting client.
			tctx := context.WithValue(context.Background(), oauth2.HTTPClient, p.HTTPClient())
			return oauth2.ReuseTokenSource(nil, p.Tracker().RecordedTokenSource(cc.TokenSource(tctx))), nil
		},
	}
}

// token returns the Management API token, from the cache when it is valid.
func (mg *management) token(ctx context.Context) (*oauth2.Token, error) {
	mg.tokMu.Lock()
	if mg.tokens == nil {
		ts, err := mg.newTokens(ctx)
		if err != nil {
			mg.tokMu.Unlock()
			return nil, err
		}
		mg.tokens = ts
	}
	ts := mg.tokens
	mg.tokMu.Unlock()
	return ts.Token()
}

// memberships returns the user's organizations, from the cache when they
// were looked up less than the TTL ago. A failure is logged and yields
// nothing: enrichment never blocks a request.
func (mg *management) memberships(ctx context.Context, sub string) []membership {
	mg.mu.RLock()
	e := mg.users[sub]
	mg.mu.RUnlock()
	if e != nil && time.Since(e.fetched) < mg.ttl {
		return e.list
	}
	list, err := mg.fetch(ctx, sub)
	if err != nil {
		mg.logger.Warn("management API lookup failed", zap.String("sub", sub), zap.Error(err))
		if e != nil {
			return e.list // stale beats nothing
		}
		return nil
	}
	mg.mu.Lock()
	if len(mg.users) > 10_000 {
		for k, v := range mg.users {
			if time.Since(v.fetched) >= mg.ttl {
				delete(mg.users, k)
			}
		}
	}
	mg.users[sub] = &membershipEntry{list: list, fetched: time.Now()}
	mg.mu.Unlock()
	return list
}

func (mg *management) fetch(ctx context.Context, sub string) ([]membership, error) {
	tok, err := mg.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("client-credentials token: %s", oidc.DescribeTokenError(err))
	}
	ctx, cancel := context.WithTimeout(ctx, idpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mg.baseURL+"/api/v1/users/"+url.PathEscape(sub), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := mg.client.Do(req)
	observeIdP("management", start)
	mg.tracker.Record("management", oidc.CallOutcome(resp, err))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/users/{id}: HTTP %d", resp.StatusCode)
	}
	var doc struct {
		User struct {
			Memberships []struct {
				OrganizationID string `json:"organization_id"`
				Name           string `json:"name"`
				DisplayName    string `json:"display_name"`
				Status         string `json:"membership_status"`
				Roles          []struct {
					Name string `json:"name"`
				} `json:"roles"`
				Permissions []string `json:"permissions"`
			} `json:"memberships"`
		} `json:"user"`
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, errors.New("malformed user document")
	}
	out := make([]membership, 0, len(doc.User.Memberships))
	for _, ms := range doc.User.Memberships {
		if ms.OrganizationID == "" {
			continue
		}
		m := membership{OrganizationID: ms.OrganizationID, Name: ms.Name, DisplayName: ms.DisplayName, Status: ms.Status, Permissions: ms.Permissions, Roles: []string{}}
		for _, r := range ms.Roles {
			if r.Name != "" {
				m.Roles = append(m.Roles, r.Name)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// enrich adds the user's memberships to a request: placeholders
// {http.auth.user.organizations} (IDs, comma-separated),
// {http.auth.user.organization_names}, and
// {http.auth.user.organization_roles} ("org_1:admin org_1:viewer org_2:member"),
// and, when configured, the Management API token in a request header.
// A nil management (the API off) adds nothing.
func (mg *management) enrich(r *http.Request, sub string) []membership {
	if mg == nil {
		return nil
	}
	list := mg.memberships(r.Context(), sub)
	if mg.cfg.TokenHeader != "" {
		// Never the client's own, in any spelling: any case, or '_' for
		// '-', which CGI and many frameworks read as the same header.
		stripHeader(r.Header, mg.cfg.TokenHeader)
		if tok, err := mg.token(r.Context()); err == nil {
			r.Header.Set(mg.cfg.TokenHeader, "Bearer "+tok.AccessToken)
		}
	}
	return list
}

// membershipPlaceholders serves the membership placeholders.
func membershipPlaceholders(list []membership) func(string) (any, bool) {
	return func(key string) (any, bool) {
		var parts []string
		switch key {
		case placeholderPrefix + "organizations":
			for _, ms := range list {
				parts = append(parts, ms.OrganizationID)
			}
			return strings.Join(parts, ","), true
		case placeholderPrefix + "organization_names":
			for _, ms := range list {
				parts = append(parts, firstNonEmpty(ms.DisplayName, ms.Name))
			}
			return strings.Join(parts, ","), true
		case placeholderPrefix + "organization_roles":
			for _, ms := range list {
				for _, role := range ms.Roles {
					parts = append(parts, ms.OrganizationID+":"+role)
				}
			}
			return strings.Join(parts, " "), true
		}
		return nil, false
	}
}
