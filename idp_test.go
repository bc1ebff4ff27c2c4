package oidcauth

// The rig that drives the handler against the in-process IdP of package
// oidctest, which does what a real IdP will not: sign with the wrong key or
// no key, mint tokens for other audiences, rotate keys mid-session, fail or
// redirect at the token endpoint.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// itStorageRoot holds Caddy storage for the handlers these tests
// provision (revocations are kept there).
var (
	itCtxOnce sync.Once
	itCtx     caddy.Context
	itCtxErr  error
)

// itCaddyContext returns a caddy.Context with storage in a temporary
// directory, made once: provisioning a context sets process-wide defaults.
func itCaddyContext(t *testing.T) caddy.Context {
	t.Helper()
	itCtxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oidcauth-test-storage-")
		if err != nil {
			itCtxErr = err
			return
		}
		raw, _ := json.Marshal(map[string]string{"module": "file_system", "root": dir})
		itCtx, itCtxErr = caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	})
	if itCtxErr != nil {
		t.Fatalf("caddy context: %v", itCtxErr)
	}
	return itCtx
}

// itEnv is one handler in front of one fake OP.
type itEnv struct {
	t     *testing.T
	clock *oidctest.Clock
	op    *oidctest.Provider
	h     *OIDCAuth
}

const (
	itHost         = "app.test"
	itCookieSecret = "0123456789abcdef0123456789abcdef-test"
)

// newITEnv starts an OP and provisions a handler for it; configure
// changes the handler's settings before Provision.
func newITEnv(t *testing.T, configure ...func(*OIDCAuth)) *itEnv {
	t.Helper()
	clock := oidctest.NewClock()
	op := oidctest.New(t, clock)
	e := &itEnv{t: t, clock: clock, op: op}
	e.h = e.provision(op.Issuer, configure...)
	return e
}

func (e *itEnv) provision(issuer string, configure ...func(*OIDCAuth)) *OIDCAuth {
	e.t.Helper()
	h := &OIDCAuth{
		Issuer:       issuer,
		ClientID:     e.op.ClientID,
		ClientSecret: e.op.ClientSecret,
		CookieSecret: itCookieSecret,
		now:          e.clock.Now,
	}
	for _, f := range configure {
		f(h)
	}
	ctx, _ := caddy.NewContext(itCaddyContext(e.t))
	if err := h.Provision(ctx); err != nil {
		e.t.Fatalf("Provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		e.t.Fatalf("Validate: %v", err)
	}
	e.t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			e.t.Errorf("Cleanup: %v", err)
		}
	})
	return h
}

// lastRefreshToken is the refresh token the OP issued last.
func (e *itEnv) lastRefreshToken() string {
	_, _, rt := e.op.Issued()
	return rt
}

// itCookie is a cookie as a browser keeps it.
type itCookie struct {
	name, value, path string
	httpOnly          bool
}

// itBrowser keeps cookies by name and path, as a browser does for one
// host, and sends requests straight to the handler.
type itBrowser struct {
	e       *itEnv
	mu      sync.Mutex
	cookies map[string]itCookie // key: path + "\x00" + name
}

func (e *itEnv) browser() *itBrowser {
	return &itBrowser{e: e, cookies: map[string]itCookie{}}
}

// clone copies the browser's cookies, as an attacker copying them would.
func (b *itBrowser) clone() *itBrowser {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &itBrowser{e: b.e, cookies: map[string]itCookie{}}
	for k, v := range b.cookies {
		c.cookies[k] = v
	}
	return c
}

func (b *itBrowser) cookie(name string) (itCookie, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cookies {
		if c.name == name {
			return c, true
		}
	}
	return itCookie{}, false
}

func (b *itBrowser) store(res *http.Response) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range res.Cookies() {
		path := c.Path
		if path == "" {
			path = "/"
		}
		key := path + "\x00" + c.Name
		if c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(b.cookies, key)
			continue
		}
		b.cookies[key] = itCookie{name: c.Name, value: c.Value, path: path, httpOnly: c.HttpOnly}
	}
}

func itPathMatches(cookiePath, reqPath string) bool {
	if cookiePath == "/" || cookiePath == reqPath {
		return true
	}
	return strings.HasPrefix(reqPath, strings.TrimSuffix(cookiePath, "/")+"/")
}

// Request kinds.
const (
	nav = "navigate" // a browser page load
	api = "api"      // a fetch() from a page
)

// itResult is the handler's answer to one request.
type itResult struct {
	*http.Response
	body        string
	reachedNext bool
	user, email string
	sid         string
}

func (r *itResult) location() string { return r.Header.Get("Location") }

// setCookie returns the Set-Cookie of the response for name, if any.
func (r *itResult) setCookie(name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (b *itBrowser) get(target, kind string) *itResult {
	b.e.t.Helper()
	return b.do(httptest.NewRequest(http.MethodGet, "http://"+itHost+target, nil), kind)
}

// do sends req to the handler with the browser's cookies and the headers
// of its kind, and keeps the cookies of the answer.
func (b *itBrowser) do(req *http.Request, kind string) *itResult {
	b.e.t.Helper()
	switch kind {
	case nav:
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
	case api:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		req.Header.Set("Sec-Fetch-Dest", "empty")
	}
	b.mu.Lock()
	for _, c := range b.cookies {
		if itPathMatches(c.path, req.URL.Path) {
			req.AddCookie(&http.Cookie{Name: c.name, Value: c.value})
		}
	}
	b.mu.Unlock()
	res := serveIT(b.e.h, req)
	b.store(res.Response)
	return res
}

// serveIT runs one request through the handler, with a next handler that
// reports the identity placeholders it sees.
func serveIT(h *OIDCAuth, req *http.Request) *itResult {
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	out := &itResult{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		out.reachedNext = true
		out.user = repl.ReplaceAll("{http.auth.user.id}", "")
		out.email = repl.ReplaceAll("{http.auth.user.email}", "")
		out.sid = repl.ReplaceAll("{http.auth.user.sid}", "")
		w.WriteHeader(http.StatusOK)
		_, err := io.WriteString(w, "protected content")
		return err
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		status := http.StatusInternalServerError
		if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
			status = he.StatusCode
		}
		rec.WriteHeader(status)
	}
	out.Response = rec.Result()
	body, _ := io.ReadAll(out.Body)
	out.body = string(body)
	return out
}

// sessionCookieName is the session cookie's name on plain HTTP.
func (e *itEnv) sessionCookieName() string { return e.h.CookieName }

// startLogin requests a protected page and returns the login redirect.
func (b *itBrowser) startLogin(target string) (location string, q url.Values) {
	b.e.t.Helper()
	res := b.get(target, nav)
	if res.StatusCode != http.StatusFound {
		b.e.t.Fatalf("GET %s: status %d, want 302 to the IdP; body: %s", target, res.StatusCode, res.body)
	}
	u, err := url.Parse(res.location())
	if err != nil {
		b.e.t.Fatal(err)
	}
	return res.location(), u.Query()
}

// callbackURL builds the callback the IdP would redirect to.
func itCallbackURL(code, state string, extra ...string) string {
	q := url.Values{"code": {code}, "state": {state}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return "/auth/callback?" + q.Encode()
}

// login runs a whole login from a request for target and returns the
// callback's answer.
func (b *itBrowser) login(target string) *itResult {
	b.e.t.Helper()
	loc, q := b.startLogin(target)
	code := b.e.op.Authorize(loc)
	return b.get(itCallbackURL(code, q.Get("state")), nav)
}

// mustLogin logs in and fails the test unless the callback succeeded.
func (b *itBrowser) mustLogin(target string) *itResult {
	b.e.t.Helper()
	res := b.login(target)
	if res.StatusCode != http.StatusFound || res.location() != target {
		b.e.t.Fatalf("callback: status %d location %q, want 302 to %q; body: %s", res.StatusCode, res.location(), target, res.body)
	}
	return res
}

// expectServed fails unless the request reached the next handler.
func expectServed(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.StatusCode != http.StatusOK || !res.reachedNext {
		t.Fatalf("%s: status %d (next reached: %v), want 200 from the next handler; location %q body %q",
			what, res.StatusCode, res.reachedNext, res.location(), truncateForLog(res.body))
	}
}

// expectLoginRedirect fails unless a navigation was sent to the IdP.
func (e *itEnv) expectLoginRedirect(res *itResult, what string) {
	e.t.Helper()
	if res.reachedNext {
		e.t.Fatalf("%s: request reached the next handler", what)
	}
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.location(), e.op.URL+"/authorize?") {
		e.t.Fatalf("%s: status %d location %q, want 302 to the authorization endpoint", what, res.StatusCode, res.location())
	}
}

// expectAPI401 fails unless an API call was answered 401 with JSON.
func expectAPI401(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.reachedNext {
		t.Fatalf("%s: request reached the next handler", what)
	}
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%s: status %d, want 401; body %q", what, res.StatusCode, truncateForLog(res.body))
	}
	if res.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", what)
	}
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		t.Errorf("%s: 401 with Content-Type %q, want JSON", what, res.Header.Get("Content-Type"))
	}
}

// expectNoSession fails if the response sets a (non-expired) session cookie.
func (e *itEnv) expectNoSession(res *itResult, what string) {
	e.t.Helper()
	for _, c := range res.Cookies() {
		if strings.HasPrefix(c.Name, e.sessionCookieName()) && !strings.Contains(c.Name, "_s_") && c.MaxAge >= 0 && c.Value != "" {
			e.t.Fatalf("%s: response sets cookie %s", what, c.Name)
		}
	}
}

func truncateForLog(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// freeLoopbackAddr returns a loopback address on which nothing listens.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
