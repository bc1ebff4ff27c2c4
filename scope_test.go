package oidcauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// TestRequireScopeBearer: `require scope` needs every listed scope, read
// from `scope` (space-separated) or `scp` (array or string); a token that
// lacks one gets 403 insufficient_scope naming the scopes (RFC 6750 3.1).
func TestRequireScopeBearer(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) {
		h.Bearer = &BearerConfig{}
		h.Require = []Rule{{Claim: "scope", Values: []string{"mcp:read", "mcp:write"}}}
	})
	now := e.clock.Now()
	for _, tt := range []struct {
		name  string
		claim string
		value any
		ok    bool
	}{
		{"scope string with both", "scope", "openid mcp:read mcp:write", true},
		{"scp array with both", "scp", []string{"mcp:write", "mcp:read"}, true},
		{"scp string with both", "scp", "mcp:read mcp:write", true},
		{"scope string with one", "scope", "openid mcp:read", false},
		{"prefix is no match", "scope", "mcp:readx mcp:write", false},
		{"scp array with one", "scp", []string{"mcp:read"}, false},
		{"one long scope", "scope", "mcp:read+mcp:write", false},
	} {
		tok := e.op.ActiveKey().Sign(map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), tt.claim: tt.value}, "at+jwt")
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res := e.browser().do(req, api)
		if tt.ok {
			expectServed(t, res, tt.name)
			continue
		}
		www := res.Header.Get("WWW-Authenticate")
		if res.reachedNext || res.StatusCode != http.StatusForbidden ||
			!strings.Contains(www, `error="insufficient_scope"`) || !strings.Contains(www, `scope="mcp:read mcp:write"`) ||
			!strings.Contains(www, "resource_metadata=") {
			t.Errorf("%s: status %d, WWW-Authenticate %q; want 403 insufficient_scope with the scopes", tt.name, res.StatusCode, www)
		}
	}
	// The metadata lists the required scopes.
	res := serveIT(e.h, httptest.NewRequest(http.MethodGet, "http://"+itHost+"/.well-known/oauth-protected-resource", nil))
	var md struct {
		Scopes []string `json:"scopes_supported"`
	}
	if json.Unmarshal([]byte(res.body), &md) != nil || strings.Join(md.Scopes, " ") != "mcp:read mcp:write" {
		t.Errorf("scopes_supported = %v, want the required scopes", md.Scopes)
	}
}

// TestRequireScopeSession: in session mode the rule reads the access
// token's scopes, not a `scope` claim of the ID token.
func TestRequireScopeSession(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		access    string
		idToken   string
		wantAllow bool
	}{
		{"access token grants it", "openid mcp:read", "", true},
		{"access token lacks it", "openid email", "", false},
		{"only the ID token claims it", "openid email", "openid mcp:read", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t, func(h *OIDCAuth) {
				h.Require = []Rule{{Claim: "scope", Values: []string{"mcp:read"}}}
			})
			e.op.Set(func(s *oidctest.Script) {
				s.AccessClaims = func(grant string, c map[string]any) { c["scope"] = tt.access }
				if tt.idToken != "" {
					s.IDClaims = func(grant string, c map[string]any) { c["scope"] = tt.idToken }
				}
			})
			b := e.browser()
			res := b.login("/private")
			if res.StatusCode != http.StatusFound {
				t.Fatalf("callback: status %d %s", res.StatusCode, res.body)
			}
			res = b.get("/private", api)
			if tt.wantAllow {
				expectServed(t, res, tt.name)
			} else if res.reachedNext || res.StatusCode != http.StatusForbidden {
				t.Errorf("status %d (next reached %v), want 403", res.StatusCode, res.reachedNext)
			}
		})
	}
}
