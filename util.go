package oidcauth

// Small helpers shared by the handler's files, and short names for the
// types of the packages below (internal/oidc, internal/cookie). Nothing
// here uses another file of this package.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
)

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkProviderURL accepts https URLs, and http only for loopback hosts.
func checkProviderURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %v", field, err)
	}
	if u.Host == "" {
		return fmt.Errorf("%s: must be an absolute URL, got %q", field, raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%s: must use https (http is allowed only for loopback hosts), got %q", field, raw)
	default:
		return fmt.Errorf("%s: must be an https URL, got %q", field, raw)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func resolveAgainst(r *http.Request, u *url.URL) string {
	if u.IsAbs() {
		return u.String()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	abs := *u
	abs.Scheme, abs.Host = scheme, r.Host
	return abs.String()
}

// stripHeader removes every spelling of the header name: any case, and
// '_' read as '-' (CGI, FastCGI and many frameworks merge them).
func stripHeader(h http.Header, name string) {
	want := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	for k := range h {
		if len(k) == len(want) && headerHasPrefix(k, want) {
			delete(h, k)
		}
	}
}

// headerHasPrefix compares a header name with a lowercase prefix, ignoring
// case and reading '_' as '-', without allocating.
func headerHasPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// The protocol's types, under the names the handler uses.
type (
	endpoints         = oidc.Endpoints
	metadata          = oidc.Metadata
	tokenSet          = oidc.TokenSet
	refreshFailed     = oidc.RefreshFailed
	unverifiedRefresh = oidc.UnverifiedRefresh
)

// The cookies themselves (sealing, chunking, naming, payloads) are
// internal/cookie's; these names keep the handler's code short.
type (
	session    = cookie.Session
	loginState = cookie.LoginState
)

// expandSecret expands `{env.*}` and `{file.*}` placeholders, and refuses a
// setting that was given but expands to nothing (an unset variable, say).
func expandSecret(repl *caddy.Replacer, field, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	// Any unknown or empty placeholder is an error, even inside other
	// text: "pre-{env.UNSET}" is not the secret that was meant.
	out, err := repl.ReplaceOrErr(v, true, true)
	if err != nil {
		return "", fmt.Errorf("%s: %q: %v", field, v, err)
	}
	out = strings.TrimRight(out, "\r\n")
	if out == "" {
		return "", fmt.Errorf("%s: %q expands to an empty value", field, v)
	}
	return out, nil
}
