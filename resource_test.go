package oidcauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestResourceMetadata: with bearer on, the RFC 9728 document is served at
// the well-known URL (and its path-suffixed form) without a login, and
// protected_resource overrides each field; without bearer there is none.
func TestResourceMetadata(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, h *OIDCAuth, path string) (*itResult, map[string]any) {
		t.Helper()
		res := serveIT(h, httptest.NewRequest(http.MethodGet, "http://"+itHost+path, nil))
		var md map[string]any
		if res.StatusCode == http.StatusOK {
			if err := json.Unmarshal([]byte(res.body), &md); err != nil {
				t.Fatalf("%s: %v: %s", path, err, res.body)
			}
		}
		return res, md
	}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{} })
		res, md := get(t, e.h, "/.well-known/oauth-protected-resource")
		if res.StatusCode != http.StatusOK || res.reachedNext || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, type %q, next %v", res.StatusCode, res.Header.Get("Content-Type"), res.reachedNext)
		}
		if md["resource"] != "http://"+itHost {
			t.Errorf("resource = %v", md["resource"])
		}
		if as, _ := md["authorization_servers"].([]any); len(as) != 1 || as[0] != e.op.Issuer {
			t.Errorf("authorization_servers = %v, want [%s]", md["authorization_servers"], e.op.Issuer)
		}
		if bm, _ := md["bearer_methods_supported"].([]any); len(bm) != 1 || bm[0] != "header" {
			t.Errorf("bearer_methods_supported = %v", md["bearer_methods_supported"])
		}
		if md["resource_name"] != itHost {
			t.Errorf("resource_name = %v", md["resource_name"])
		}
		if sc, _ := md["scopes_supported"].([]any); len(sc) == 0 {
			t.Errorf("scopes_supported missing: %v", md)
		}
		// The path-suffixed form names the resource under that path.
		_, md = get(t, e.h, "/.well-known/oauth-protected-resource/mcp")
		if md["resource"] != "http://"+itHost+"/mcp" {
			t.Errorf("path-suffixed resource = %v", md["resource"])
		}
		if res := serveIT(e.h, httptest.NewRequest(http.MethodPost, "http://"+itHost+"/.well-known/oauth-protected-resource", nil)); res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST: status %d, want 405", res.StatusCode)
		}
	})
	t.Run("overrides", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t, func(h *OIDCAuth) {
			h.Bearer = &BearerConfig{}
			h.ProtectedResource = &ProtectedResourceConfig{
				Resource:             "https://api.example.com/mcp",
				AuthorizationServers: []string{"https://auth.example.com"},
				ScopesSupported:      []string{"mcp:tools", "mcp:read"},
				ResourceName:         "Example MCP",
			}
		})
		_, md := get(t, e.h, "/.well-known/oauth-protected-resource/mcp")
		want := map[string]any{
			"resource":              "https://api.example.com/mcp",
			"authorization_servers": []any{"https://auth.example.com"},
			"scopes_supported":      []any{"mcp:tools", "mcp:read"},
			"resource_name":         "Example MCP",
		}
		for k, v := range want {
			got, _ := json.Marshal(md[k])
			exp, _ := json.Marshal(v)
			if string(got) != string(exp) {
				t.Errorf("%s = %s, want %s", k, got, exp)
			}
		}
		// Only the configured resource's URL answers.
		if res, _ := get(t, e.h, "/.well-known/oauth-protected-resource"); res.StatusCode == http.StatusOK {
			t.Errorf("the root well-known URL answered for a resource under /mcp")
		}
		res := e.browser().get("/mcp", api)
		if got := res.Header.Get("WWW-Authenticate"); !strings.Contains(got, `resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/mcp"`) {
			t.Errorf("401 challenge %q lacks the configured metadata URL", got)
		}
	})
	t.Run("without bearer", func(t *testing.T) {
		t.Parallel()
		e := newITEnv(t)
		res, _ := get(t, e.h, "/.well-known/oauth-protected-resource")
		if res.StatusCode == http.StatusOK {
			t.Errorf("metadata served without bearer: %s", res.body)
		}
		if got := e.browser().get("/api", api).Header.Get("WWW-Authenticate"); strings.Contains(got, "resource_metadata") {
			t.Errorf("challenge %q names metadata without bearer", got)
		}
	})
}

// TestBearer401NamesResourceMetadata: every bearer 401 (no token, a bad
// token, an expired one) points to the metadata (RFC 9728 section 5.1).
func TestBearer401NamesResourceMetadata(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.Bearer = &BearerConfig{} })
	now := e.clock.Now()
	expired := e.op.ActiveKey().Sign(map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c",
		"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}, "at+jwt")
	for name, auth := range map[string]string{"no token": "", "garbage": "Bearer abc.def.ghi", "expired": "Bearer " + expired} {
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/api/items", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res := e.browser().do(req, api)
		want := `resource_metadata="http://` + itHost + `/.well-known/oauth-protected-resource"`
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), want) {
			t.Errorf("%s: status %d, WWW-Authenticate %q; want 401 with %s", name, res.StatusCode, res.Header.Get("WWW-Authenticate"), want)
		}
	}
}

// TestProtectedResourceValidate: bad protected_resource settings fail
// Validate naming the field.
func TestProtectedResourceValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		bearer bool
		pr     ProtectedResourceConfig
		want   string
	}{
		{"without bearer", false, ProtectedResourceConfig{}, "protected_resource: needs bearer"},
		{"relative resource", true, ProtectedResourceConfig{Resource: "/mcp"}, "protected_resource: resource"},
		{"http resource", true, ProtectedResourceConfig{Resource: "http://api.example.com"}, "protected_resource: resource"},
		{"fragment", true, ProtectedResourceConfig{Resource: "https://api.example.com/#x"}, "protected_resource: resource"},
		{"bad server", true, ProtectedResourceConfig{AuthorizationServers: []string{"auth"}}, "protected_resource: authorization_servers"},
		{"body method", true, ProtectedResourceConfig{BearerMethodsSupported: []string{"body"}}, "protected_resource: bearer_methods_supported"},
		{"bad scope", true, ProtectedResourceConfig{ScopesSupported: []string{`a"b`}}, "protected_resource: scopes_supported"},
	} {
		m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "c", ClientSecret: "s"}
		if tt.bearer {
			m.Bearer = &BearerConfig{}
		}
		pr := tt.pr
		m.ProtectedResource = &pr
		if err := m.checkResourceServer(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestProtectedResourceCaddyfile: the protected_resource block parses
// into its JSON fields, and unknown options are refused.
func TestProtectedResourceCaddyfile(t *testing.T) {
	t.Parallel()
	m := new(OIDCAuth)
	d := caddyfile.NewTestDispenser(`oidc_auth {
		bearer
		protected_resource {
			resource https://api.example.com/mcp
			authorization_servers https://auth.example.com
			scopes_supported mcp:read mcp:write
			bearer_methods_supported header
			resource_name "Example MCP"
			resource_documentation https://example.com/docs
		}
	}`)
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(m.ProtectedResource)
	want := `{"resource":"https://api.example.com/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["mcp:read","mcp:write"],"bearer_methods_supported":["header"],"resource_name":"Example MCP","resource_documentation":"https://example.com/docs"}`
	if string(got) != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	for _, bad := range []string{
		"oidc_auth {\n protected_resource {\n nope x\n }\n}",
		"oidc_auth {\n protected_resource {\n resource a b\n }\n}",
		"oidc_auth {\n protected_resource {\n resource\n }\n}",
	} {
		if err := new(OIDCAuth).UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil || !strings.Contains(err.Error(), "protected_resource") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}
