package oidcauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/dpop"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// wellKnownResource is where RFC 9728 puts a protected resource's
// metadata; a resource with a path has it under this prefix plus its path.
const wellKnownResource = "/.well-known/oauth-protected-resource"

// ProtectedResourceConfig overrides the fields of the RFC 9728 metadata
// that bearer mode serves at /.well-known/oauth-protected-resource.
type ProtectedResourceConfig struct {
	// The resource identifier: an absolute https URL (http for a loopback
	// host) without a fragment. Its metadata is served at the well-known
	// URL formed from it (RFC 9728 section 3.1), and every bearer 401
	// points there. Default: the request's origin (scheme and host), or the
	// origin plus the path of a path-suffixed metadata request.
	Resource string `json:"resource,omitempty"`

	// The authorization servers that issue tokens for this resource.
	// Default: the issuer.
	AuthorizationServers []string `json:"authorization_servers,omitempty"`

	// The scopes that clients may ask for. Default: the scopes named by
	// `require scope` rules, or else the scopes subdirective.
	ScopesSupported []string `json:"scopes_supported,omitempty"`

	// How clients may send the token. Only `header` is served.
	// Default: `header`.
	BearerMethodsSupported []string `json:"bearer_methods_supported,omitempty"`

	// A name for people, shown by clients. Default: the request's host.
	ResourceName string `json:"resource_name,omitempty"`

	// A page about the resource for developers. Default: none.
	ResourceDocumentation string `json:"resource_documentation,omitempty"`
}

// resourceMetadata is the RFC 9728 document.
type resourceMetadata struct {
	Resource                      string   `json:"resource"`
	AuthorizationServers          []string `json:"authorization_servers"`
	ScopesSupported               []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported        []string `json:"bearer_methods_supported"`
	ResourceName                  string   `json:"resource_name,omitempty"`
	ResourceDocumentation         string   `json:"resource_documentation,omitempty"`
	DPoPSigningAlgValuesSupported []string `json:"dpop_signing_alg_values_supported,omitempty"`
	DPoPBoundAccessTokensRequired bool     `json:"dpop_bound_access_tokens_required,omitempty"`
}

// metadataPathFor is the path of the metadata URL of a resource whose
// identifier has path p: the well-known prefix, then p (RFC 9728 3.1).
func metadataPathFor(p string) string {
	p = strings.TrimSuffix(p, "/")
	return wellKnownResource + p
}

// isResourceMetadataPath reports whether a request asks for this
// handler's metadata: with a configured resource only at its URL, else
// at the well-known path or any path-suffixed form of it.
func (m *OIDCAuth) isResourceMetadataPath(path string) bool {
	if m.Bearer == nil {
		return false
	}
	if m.resourceURL != nil {
		return path == metadataPathFor(m.resourceURL.Path)
	}
	return path == wellKnownResource || strings.HasPrefix(path, wellKnownResource+"/")
}

// resourceFor is the resource identifier a metadata request is about.
func (m *OIDCAuth) resourceFor(r *http.Request) string {
	if m.resourceURL != nil {
		return m.resourceURL.String()
	}
	origin := resolveAgainst(r, &url.URL{})
	return origin + strings.TrimPrefix(r.URL.Path, wellKnownResource)
}

// resourceMetadataURL is where a bearer 401 sends clients to learn how to
// get a token (the `resource_metadata` of RFC 9728 section 5.1).
func (m *OIDCAuth) resourceMetadataURL(r *http.Request) string {
	if u := m.resourceURL; u != nil {
		return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: metadataPathFor(u.Path)}).String()
	}
	return resolveAgainst(r, &url.URL{Path: wellKnownResource})
}

// handleResourceMetadata serves the RFC 9728 document to anyone: it says
// only which IdP issues tokens for this resource.
func (m *OIDCAuth) handleResourceMetadata(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return m.answer.fail(w, r, http.StatusMethodNotAllowed, "Use GET.", "")
	}
	pr := m.ProtectedResource
	if pr == nil {
		pr = &ProtectedResourceConfig{}
	}
	md := resourceMetadata{
		Resource:               m.resourceFor(r),
		AuthorizationServers:   pr.AuthorizationServers,
		ScopesSupported:        pr.ScopesSupported,
		BearerMethodsSupported: pr.BearerMethodsSupported,
		ResourceName:           pr.ResourceName,
		ResourceDocumentation:  pr.ResourceDocumentation,
	}
	if len(md.AuthorizationServers) == 0 {
		md.AuthorizationServers = []string{m.Issuer}
	}
	if len(md.ScopesSupported) == 0 {
		md.ScopesSupported = m.requiredValues("scope")
	}
	if len(md.ScopesSupported) == 0 {
		md.ScopesSupported = m.Scopes
	}
	if len(md.BearerMethodsSupported) == 0 {
		md.BearerMethodsSupported = []string{"header"}
	}
	if md.ResourceName == "" {
		md.ResourceName = r.Host
	}
	m.addDPoPMetadata(&md)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	// Clients running in browsers (MCP inspectors, say) read it across
	// origins; it holds nothing secret.
	h.Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(md)
}

// challenge adds a WWW-Authenticate challenge of scheme (Bearer, RFC
// 6750, or DPoP, RFC 9449); code may be empty; params are further
// auth-params, name then value. With bearer mode on it names the resource
// metadata (RFC 9728 section 5.1), and a Bearer challenge without an error
// is joined by a DPoP one when dpop is set.
func (a responder) challenge(w http.ResponseWriter, r *http.Request, scheme, code string, params ...string) {
	m := a.srv
	if scheme == "DPoP" {
		params = append(params, "algs", strings.Join(dpop.AlgNames(), " "))
	}
	var b strings.Builder
	b.WriteString(scheme + ` realm="` + sanitizeRealm(r.Host) + `"`)
	if code != "" {
		b.WriteString(`, error="` + code + `"`)
	}
	for i := 0; i+1 < len(params); i += 2 {
		b.WriteString(", " + params[i] + `="` + sanitizeRealm(params[i+1]) + `"`)
	}
	if m != nil && m.Bearer != nil {
		b.WriteString(`, resource_metadata="` + sanitizeRealm(m.resourceMetadataURL(r)) + `"`)
	}
	w.Header().Add("WWW-Authenticate", b.String())
	if scheme == "Bearer" && code == "" && m != nil && m.DPoP != nil {
		// A request without a token learns that DPoP is accepted too,
		// and with which algorithms (RFC 9449 section 7.1).
		a.challenge(w, r, "DPoP", "")
	}
}

// refuseResource answers the refusals of the resource-server checks.
func (a responder) refuseResource(w http.ResponseWriter, r *http.Request, why refusal) error {
	switch why {
	case bearerScope:
		a.challenge(w, r, "Bearer", "insufficient_scope", "scope", strings.Join(a.srv.requiredValues("scope"), " "))
		return a.forbidden(w, r)
	case stepUp:
		a.challenge(w, r, "Bearer", "insufficient_user_authentication", stepUpChallengeParams(a.srv.requiredValues("acr"), a.srv.maxAgeSeconds())...)
		return a.fail(w, r, http.StatusUnauthorized, "A stronger or more recent sign-in is required.", a.loginPath+"?return_to="+url.QueryEscape(r.URL.RequestURI()))
	case dpopInvalidProof:
		a.challenge(w, r, "DPoP", "invalid_dpop_proof")
	default:
		a.challenge(w, r, "DPoP", "invalid_token")
	}
	return a.fail(w, r, http.StatusUnauthorized, "The access token or its DPoP proof is invalid.", "")
}

// checkResourceServer checks protected_resource.
func (m *OIDCAuth) checkResourceServer() error {
	pr := m.ProtectedResource
	if pr == nil {
		return nil
	}
	if m.Bearer == nil {
		return errors.New("protected_resource: needs bearer")
	}
	if pr.Resource != "" {
		if _, err := checkResourceURL(pr.Resource); err != nil {
			return fmt.Errorf("protected_resource: resource: %w", err)
		}
	}
	for _, as := range pr.AuthorizationServers {
		if _, err := checkResourceURL(as); err != nil {
			return fmt.Errorf("protected_resource: authorization_servers: %q: %w", as, err)
		}
	}
	for _, s := range pr.ScopesSupported {
		if s == "" || strings.ContainsAny(s, " \"\\") {
			return fmt.Errorf("protected_resource: scopes_supported: invalid scope %q", s)
		}
	}
	for _, bm := range pr.BearerMethodsSupported {
		if bm != "header" {
			return fmt.Errorf("protected_resource: bearer_methods_supported: only header is served, not %q", bm)
		}
	}
	if d := pr.ResourceDocumentation; d != "" {
		if _, err := checkResourceURL(d); err != nil {
			return fmt.Errorf("protected_resource: resource_documentation: %w", err)
		}
	}
	return nil
}

// checkResourceURL accepts an absolute https URL, or http for a loopback
// host, without a fragment (RFC 9728 section 1.2).
func checkResourceURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.Fragment != "" || u.User != nil || u.RawQuery != "" {
		return nil, fmt.Errorf("%q must be an absolute URL without credentials, query or fragment", s)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("%q must use https (http only for a loopback host)", s)
	}
	return u, nil
}

// unmarshalProtectedResource parses the protected_resource block.
func unmarshalProtectedResource(d *caddyfile.Dispenser) (*ProtectedResourceConfig, error) {
	pr := new(ProtectedResourceConfig)
	if d.NextArg() {
		return nil, d.Errf("protected_resource: takes only a block")
	}
	for d.NextBlock(1) {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return nil, d.Errf("protected_resource: %s needs a value", opt)
		}
		single := func(dst *string) error {
			if len(args) != 1 {
				return d.Errf("protected_resource: %s takes one value", opt)
			}
			*dst = args[0]
			return nil
		}
		var err error
		switch opt {
		case "resource":
			err = single(&pr.Resource)
		case "resource_name":
			err = single(&pr.ResourceName)
		case "resource_documentation":
			err = single(&pr.ResourceDocumentation)
		case "authorization_servers":
			pr.AuthorizationServers = args
		case "scopes_supported":
			pr.ScopesSupported = args
		case "bearer_methods_supported":
			pr.BearerMethodsSupported = args
		default:
			return nil, d.Errf("protected_resource: unrecognized option %q", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return pr, nil
}

// stepUpChallengeParams are RFC 9470's auth-params of a challenge.
func stepUpChallengeParams(acr []string, maxAge int64) []string {
	var p []string
	if len(acr) > 0 {
		p = append(p, "acr_values", strings.Join(acr, " "))
	}
	if maxAge > 0 {
		p = append(p, "max_age", strconv.FormatInt(maxAge, 10))
	}
	return p
}

// maxAgeSeconds is `max_age` in whole seconds, as authorization requests
// and challenges carry it.
func (m *OIDCAuth) maxAgeSeconds() int64 { return int64(time.Duration(m.MaxAge) / time.Second) }
