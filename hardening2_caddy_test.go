package oidcauth

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// TestHardeningThroughCaddy runs the handler inside Caddy, with
// handle_errors and a reverse_proxy upstream that records what it gets:
// the IdP's error text never reaches {http.error.message}, a claim with
// control characters does not break the proxied request, the handler's
// own cookies never reach the upstream, and protected responses are
// marked private.
func TestHardeningThroughCaddy(t *testing.T) {
	clock := oidctest.NewClock()
	op := oidctest.New(t, clock)
	op.Set(func(s *oidctest.Script) {
		s.IDClaims = func(_ string, c map[string]any) { c["name"] = "Alice\r\nX-Injected: 1\x00" }
	})
	storage, err := os.MkdirTemp("", "oidcauth-caddytest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(storage) })

	var mu sync.Mutex
	var seen *http.Request
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r
		mu.Unlock()
		if r.URL.Path == "/cached" {
			w.Header().Set("Cache-Control", "public, max-age=60")
		}
		io.WriteString(w, "upstream "+r.Header.Get("X-Name"))
	}))
	t.Cleanup(upstream.Close)

	addr := freeLoopbackAddr(t)
	client := startCaddyInProcess(t, fmt.Sprintf(`
	{
		admin off
		skip_install_trust
		grace_period 1ns
		storage file_system {
			root %q
		}
	}
	http://%s {
		oidc_auth {
			issuer        %s
			client_id     %s
			client_secret %s
			cookie_secret %s
		}
		reverse_proxy %s {
			header_up X-Name {http.auth.user.name}
		}
		handle_errors {
			respond "error {http.error.status_code}: {http.error.message}"
		}
	}
	`, storage, addr, op.Issuer, op.ClientID, op.ClientSecret, itCookieSecret, strings.TrimPrefix(upstream.URL, "http://")))
	get := func(target string, extra ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+target, nil)
		req.Header.Set("Accept", "text/html")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Add(extra[i], extra[i+1])
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	t.Run("IdP error text stays out of handle_errors", func(t *testing.T) {
		res, body := get("/auth/callback?" + url.Values{
			"error":             {"<script>alert(1)</script>"},
			"error_description": {`<img src=x onerror="alert(2)">`},
			"state":             {"aaaaaaaaaaaaaaaaaaaa"},
		}.Encode())
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", res.StatusCode)
		}
		if strings.Contains(body, "<script") || strings.Contains(body, "<img") || strings.Contains(body, "alert") {
			t.Errorf("the IdP's text reached {http.error.message}: %q", body)
		}
		if !strings.Contains(body, "error 401: Sign-in did not complete") {
			t.Errorf("body %q, want the handler's fixed message", body)
		}
	})

	// Log in through Caddy.
	res, _ := get("/private")
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(loc, op.URL+"/authorize?") {
		t.Fatalf("navigation: status %d location %q", res.StatusCode, loc)
	}
	u, _ := url.Parse(loc)
	code := op.Authorize(loc)
	if res, body := get(itCallbackURL(code, u.Query().Get("state"))); res.StatusCode != http.StatusFound {
		t.Fatalf("callback: status %d body %q", res.StatusCode, body)
	}

	t.Run("own cookies stripped, responses private", func(t *testing.T) {
		res, body := get("/cached", "Cookie", "theme=dark")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d body %q", res.StatusCode, body)
		}
		if cc := res.Header.Get("Cache-Control"); cc != "public, max-age=60" {
			t.Errorf("the upstream's own Cache-Control became %q", cc)
		}
		mu.Lock()
		cookies := seen.Header.Values("Cookie")
		mu.Unlock()
		if strings.Join(cookies, ";") != "theme=dark" {
			t.Errorf("the upstream got Cookie %q, want only theme=dark", cookies)
		}
		res, _ = get("/page")
		if cc := res.Header.Get("Cache-Control"); cc != "private" {
			t.Errorf("Cache-Control %q, want private", cc)
		}
	})

	t.Run("claim with control characters", func(t *testing.T) {
		res, body := get("/private")
		if res.StatusCode != http.StatusOK || body != "upstream Alice  X-Injected: 1" {
			t.Errorf("status %d body %q, want 200 with the cleaned name", res.StatusCode, body)
		}
		mu.Lock()
		defer mu.Unlock()
		if seen != nil && seen.Header.Get("X-Injected") != "" {
			t.Error("a claim added a header upstream")
		}
	})
}

// startCaddyInProcess runs a Caddyfile in this process, on ports of its
// own (caddytest's fixed admin and HTTP ports may be taken by another
// test process on the machine), and returns a client with a cookie jar
// that does not follow redirects. Caddy is stopped when the test ends.
func startCaddyInProcess(t *testing.T, caddyfile string) *http.Client {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v", err)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			t.Logf("Caddyfile warning: %s", w)
		}
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the config: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
