package oidcauth

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strings"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// responder answers what the handler does not pass on: a page for a
// browser, JSON for an API call, or a caddyhttp error for handle_errors.
type responder struct {
	loginPath, logoutPath string
	cookies               *cookie.Codec // to clear a session that has ended
	srv                   *OIDCAuth     // its resource-server settings, for challenges; may be nil
}

// fail answers a request the handler cannot serve. When the site has
// handle_errors routes, the error goes to them (with the message in
// {http.error.message}); otherwise API callers get a JSON body and
// browsers a small HTML page, with a link to try again when there is one.
func (a responder) fail(w http.ResponseWriter, r *http.Request, status int, msg, retry string) error {
	return a.page(w, r, status, msg, retry, "Try again")
}

// failQuoting is fail for a message that quotes text the handler did not
// write (an IdP's error, which anyone can put in a callback URL). Caddy
// does not escape {http.error.message} in handle_errors templates or
// respond bodies, so those routes get only the fixed message; the quoted
// text is shown on the handler's own page, where it is escaped.
func (a responder) failQuoting(w http.ResponseWriter, r *http.Request, status int, fixed, quoting, retry string) error {
	if hasErrorRoutes(r) {
		return caddyhttp.Error(status, errors.New(fixed))
	}
	return a.fail(w, r, status, quoting, retry)
}

func (a responder) page(w http.ResponseWriter, r *http.Request, status int, msg, link, linkText string) error {
	retry := link
	if hasErrorRoutes(r) {
		return caddyhttp.Error(status, errors.New(msg))
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if isAPIRequest(r) {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		body := map[string]string{"error": errorCode(status), "error_description": msg}
		if retry != "" {
			body["login_url"] = retry
		}
		return json.NewEncoder(w).Encode(body)
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	return pageTemplate.Execute(w, struct {
		Title, Message, Link, LinkText string
	}{http.StatusText(status), msg, link, linkText})
}

// forbidden answers a signed-in user whom the require rules turn away.
// The page offers to sign in as someone else, never a redirect loop.
func (a responder) forbidden(w http.ResponseWriter, r *http.Request) error {
	return a.page(w, r, http.StatusForbidden, "You are signed in, but this account may not access this page.", a.logoutPath, "Sign out and use another account")
}

func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv != nil && srv.Errors != nil && len(srv.Errors.Routes) > 0
}

func errorCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return "temporarily_unavailable"
	default:
		return "invalid_request"
	}
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#222}a{color:#0645ad}</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p id="message">{{.Message}}</p>
{{if .Link}}<p><a id="retry" href="{{.Link}}">{{.LinkText}}</a></p>{{end}}
</main>
</body>
</html>
`))

func backchannelError(w http.ResponseWriter, status int, code, desc string) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (a responder) unavailable(w http.ResponseWriter, r *http.Request) error {
	return a.fail(w, r, http.StatusServiceUnavailable, "The identity provider is unavailable. Please try again in a moment.", "")
}

// apiOnlyKey marks a request (in its context) that is answered as an API
// call whatever it looks like, such as those of the session info endpoint.
type apiOnlyKey struct{}

// isAPIRequest tells API calls (which get a 401) from page navigations
// (which are sent to log in), by the hints browsers and clients send.
func isAPIRequest(r *http.Request) bool {
	if r.Context().Value(apiOnlyKey{}) != nil {
		return true
	}
	if r.Header.Get("X-Requested-With") != "" {
		return true
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode != "navigate"
	}
	if dest := r.Header.Get("Sec-Fetch-Dest"); dest != "" {
		return dest != "document" && dest != "iframe" && dest != "frame"
	}
	return !strings.Contains(r.Header.Get("Accept"), "text/html")
}
