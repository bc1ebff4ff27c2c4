//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// resourceToken asks the IdP's token endpoint (found through discovery) for
// a client_credentials token for resource with scope, the way an MCP client
// gets one after reading the protected-resource metadata.
func resourceToken(t *testing.T, b *browser, issuer, id, secret, resource, scope string, extra url.Values) (string, string) {
	t.Helper()
	var disc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	p := b.do(http.MethodGet, issuer+"/.well-known/openid-configuration", apiCall, nil)
	if err := json.Unmarshal([]byte(p.Body), &disc); err != nil || disc.TokenEndpoint == "" {
		t.Fatalf("IdP discovery: %v %s", err, p)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret},
		"resource": {resource}, "scope": {scope}}
	hdr := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	for k, v := range extra {
		if k == "DPoP" {
			hdr.Set("DPoP", v[0])
			continue
		}
		form[k] = v
	}
	p = b.do(http.MethodPost, disc.TokenEndpoint, hdr, strings.NewReader(form.Encode()))
	var out struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(p.Body), &out); err != nil || out.AccessToken == "" {
		t.Fatalf("token for %s (%s): %v %s", resource, scope, err, p)
	}
	return out.AccessToken, out.TokenType
}

// mcpSite is one Caddy site acting as an MCP server: the whole site is a
// resource whose tokens carry its origin as aud; /write needs mcp:write,
// /email (for browser sessions) email, everything else mcp:read.
func mcpSite(issuer string, port int, extra ...string) string {
	o := origin(port)
	block := func(scope string) string {
		return oidcBlock(issuer, "mcp-client", "mcp-secret", append([]string{"bearer " + o, "require scope " + scope}, extra...)...)
	}
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	route /write* {
		%s
		respond "write {http.auth.user.id}"
	}
	route /email* {
		%s
		respond "email {http.auth.user.id}"
	}
	route {
		%s
		respond "read {http.auth.user.id}"
	}
}
`, port, block("mcp:write"), block("email"), block("mcp:read"))
}

func mcpClient(port int) idpClient {
	c := registration("mcp-client", "mcp-secret", port)
	c.GrantTypes = []string{"authorization_code", "refresh_token", "client_credentials"}
	return c
}

// TestMCPDiscoveryAndScopes: an MCP-style client that knows only the server's
// URL gets a 401 naming the RFC 9728 metadata, reads the authorization
// server and scopes from it, gets a token for the resource from the real
// IdP and calls with it; `require scope` holds for bearer tokens (403
// insufficient_scope naming the scopes) and for browser sessions, whose
// access token's scopes count.
func TestMCPDiscoveryAndScopes(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{profile: "resource-server", clients: []idpClient{mcpClient(port)}})
	startSites(t, app+"/.well-known/oauth-protected-resource", mcpSite(i.Issuer, port))
	b := newBrowser(t)

	// 1. The unauthenticated call.
	p := b.do(http.MethodPost, app+"/mcp", apiCall, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize"}`))
	m := regexp.MustCompile(`resource_metadata="([^"]+)"`).FindStringSubmatch(p.Header.Get("WWW-Authenticate"))
	if p.Status != http.StatusUnauthorized || m == nil || !strings.HasPrefix(p.Header.Get("WWW-Authenticate"), "Bearer ") {
		t.Fatalf("unauthenticated MCP call: want 401 with a Bearer challenge naming resource_metadata, got %q %s", p.Header.Get("WWW-Authenticate"), p)
	}
	// 2. The metadata.
	p = b.do(http.MethodGet, m[1], apiCall, nil)
	var md struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
		BearerMethods        []string `json:"bearer_methods_supported"`
		ResourceName         string   `json:"resource_name"`
	}
	if err := json.Unmarshal([]byte(p.Body), &md); err != nil || p.Status != http.StatusOK {
		t.Fatalf("metadata at %s: %v %s", m[1], err, p)
	}
	if md.Resource != app || len(md.AuthorizationServers) != 1 || md.AuthorizationServers[0] != i.Issuer ||
		strings.Join(md.ScopesSupported, " ") != "mcp:read" || strings.Join(md.BearerMethods, " ") != "header" || md.ResourceName == "" {
		t.Fatalf("metadata: %+v", md)
	}
	// 3. A token for the resource, with only the read scope.
	tok, _ := resourceToken(t, b, md.AuthorizationServers[0], "mcp-client", "mcp-secret", md.Resource, "mcp:read", nil)
	if aud := jwtClaims(t, tok)["aud"]; aud != app {
		t.Fatalf("the IdP issued a token for aud %v, want %s", aud, app)
	}
	bearer := func(tok string) http.Header {
		h := apiCall.Clone()
		h.Set("Authorization", "Bearer "+tok)
		return h
	}
	if p := b.do(http.MethodPost, app+"/mcp", bearer(tok), strings.NewReader(`{}`)); p.Status != http.StatusOK || p.Body != "read mcp-client" {
		t.Errorf("MCP call with a token for the resource: %s", p)
	}
	// 4. Scopes: mcp:write is missing.
	p = b.do(http.MethodPost, app+"/write", bearer(tok), nil)
	www := p.Header.Get("WWW-Authenticate")
	if p.Status != http.StatusForbidden || !strings.Contains(www, `error="insufficient_scope"`) || !strings.Contains(www, `scope="mcp:write"`) {
		t.Errorf("token without mcp:write at /write: want 403 insufficient_scope scope=\"mcp:write\", got %q %s", www, p)
	}
	both, _ := resourceToken(t, b, i.Issuer, "mcp-client", "mcp-secret", app, "mcp:read mcp:write", nil)
	if p := b.do(http.MethodPost, app+"/write", bearer(both), nil); p.Status != http.StatusOK || p.Body != "write mcp-client" {
		t.Errorf("token with mcp:write at /write: %s", p)
	}
	// A token of the same IdP for another resource is refused.
	other, _ := resourceToken(t, b, i.Issuer, "mcp-client", "mcp-secret", "http://127.0.0.1:1/other", "mcp:read", nil)
	if p := b.do(http.MethodPost, app+"/mcp", bearer(other), nil); p.Status != http.StatusUnauthorized || !strings.Contains(p.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Errorf("token for another resource: want 401 naming the metadata, got %q %s", p.Header.Get("WWW-Authenticate"), p)
	}

	// 5. Session mode: the browser session's access token has the OIDC
	// scopes (email among them), not mcp:write.
	j := b.login(app+"/email", "alice", "alice-password")
	if j.final.Status != http.StatusOK || j.final.Body != "email "+aliceSub {
		t.Fatalf("session at /email (require scope email):\n%s", describeChain(j.chain))
	}
	if p := b.do(http.MethodGet, app+"/write", apiCall, nil); p.Status != http.StatusForbidden {
		t.Errorf("session whose access token lacks mcp:write at /write: want 403, got %s", p)
	}
}
