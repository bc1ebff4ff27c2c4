//go:build e2e

package e2e

// Attacks against the real Caddy binary, with a small Go IdP that can
// misbehave where the real one cannot: path and method tricks on the
// wire, open redirects, forged identity headers, huge cookie headers and
// a token endpoint that answers garbage or never ends.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// atkIdP is the in-process OpenID Provider of package oidctest, which
// approves every login at once, with a token endpoint that can answer
// garbage or never end.
type atkIdP struct {
	*oidctest.Provider
	mode     atomic.Value // token endpoint: "", "garbage", "endless"
	streamed atomic.Int64 // bytes of an endless answer written
}

const (
	atkClientID     = "atk-app"
	atkClientSecret = "atk-secret-0123456789"
	atkSecretText   = "TOP-SECRET-FILE-CONTENT"
)

func newAtkIdP(t *testing.T) *atkIdP {
	t.Helper()
	p := &atkIdP{Provider: oidctest.New(t, nil)}
	p.ClientID, p.ClientSecret = atkClientID, atkClientSecret
	p.SetUser("usr_atk", "atk@example.com", "sid_atk")
	p.mode.Store("")
	p.Set(func(s *oidctest.Script) { s.Token = p.misbehave })
	return p
}

// misbehave answers the token request itself in the garbage and endless
// modes.
func (p *atkIdP) misbehave(w http.ResponseWriter, r *http.Request, grant string) bool {
	switch p.mode.Load().(string) {
	case "garbage":
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>maintenance</html>")
		return true
	case "endless":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`)
		chunk := []byte(strings.Repeat("a", 64<<10))
		for p.streamed.Load() < 64<<20 {
			n, err := w.Write(chunk)
			p.streamed.Add(int64(n))
			if err != nil {
				break
			}
		}
		return true
	}
	return false
}

// atkSite runs Caddy with one protected site in front of the atkIdP: a
// file server under /files (which honours Range and conditional requests),
// an echo upstream (which would accept a WebSocket upgrade) and a respond.
func atkSite(t *testing.T) (app string, p *atkIdP) {
	t.Helper()
	p = newAtkIdP(t)
	port := freePort(t)
	app = origin(port)
	files := t.TempDir()
	if err := os.MkdirAll(filepath.Join(files, "files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "files", "secret.txt"), []byte(atkSecretText+" "+strings.Repeat("x", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Connection", "Upgrade")
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		}
		upstreamHandler(w, r)
	}))
	t.Cleanup(upstream.Close)
	site := fmt.Sprintf(`
http://127.0.0.1:%d {
	handle /signed-out {
		respond "bye"
	}
	handle {
		oidc_auth {
			issuer %s
			client_id %s
			client_secret %s
			cookie_secret %s
			post_logout_redirect_uri %s/signed-out
		}
		handle /files/* {
			root * %s
			file_server
		}
		handle /echo* {
			reverse_proxy %s
		}
		handle {
			respond "%s {http.auth.user.id}"
		}
	}
}
`, port, p.Issuer, atkClientID, atkClientSecret, cookieSecret, app, files, strings.TrimPrefix(upstream.URL, "http://"), atkSecretText)
	startSites(t, app+"/signed-out", site)
	return app, p
}

// atkRaw sends one request exactly as written (request line and headers)
// and returns the response with its body.
func atkRaw(t *testing.T, app, requestLine string, headers ...string) (*http.Response, string) {
	t.Helper()
	host := strings.TrimPrefix(app, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	var b strings.Builder
	b.WriteString(requestLine + "\r\nHost: " + host + "\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	method := strings.SplitN(requestLine, " ", 2)[0]
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(body)
}

// atkNoContent fails if a response without a session shows protected
// content or switches protocols.
func atkNoContent(t *testing.T, what string, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode >= 500 {
		t.Errorf("%s: status %d", what, resp.StatusCode)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusNotModified, http.StatusSwitchingProtocols, http.StatusNoContent:
		t.Errorf("%s: status %d without a session", what, resp.StatusCode)
	}
	if strings.Contains(body, atkSecretText) {
		t.Errorf("%s: protected content in the answer", what)
	}
}

func TestAttackE2E(t *testing.T) {
	app, idp := atkSite(t)
	navHdr := []string{"Accept: text/html", "Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: document"}
	apiHdr := []string{"Accept: application/json"}

	t.Run("auth path variants stay protected", func(t *testing.T) {
		for _, p := range []string{
			"/auth/callback/", "//auth/callback", "/auth/callback;x", "/AUTH/CALLBACK", "/auth/%63allback",
			"/auth/callback/../files/secret.txt", "/auth/callback/..%2Ffiles/secret.txt", "/auth/login/../../files/secret.txt",
			"/auth//login", "/auth/session/", "/auth/session/../../files/secret.txt", "/files/../files/secret.txt",
			"/files/%2e%2e/files/secret.txt", "/files//secret.txt", "//files/secret.txt", "/files/secret.txt;x",
			"/files/secret.txt%00", "/FILES/secret.txt", "/files/./secret.txt", "/signed-out/../files/secret.txt",
			"/signed-out%2F..%2Ffiles/secret.txt", "/./files/secret.txt", "/echo/../files/secret.txt",
		} {
			for _, hdr := range [][]string{navHdr, apiHdr} {
				resp, body := atkRaw(t, app, "GET "+p+" HTTP/1.1", hdr...)
				atkNoContent(t, p, resp, body)
			}
		}
	})

	t.Run("methods and request shapes without a session", func(t *testing.T) {
		cases := map[string][]string{
			"HEAD /files/secret.txt HTTP/1.1":    navHdr,
			"OPTIONS /files/secret.txt HTTP/1.1": {"Origin: https://evil.example", "Access-Control-Request-Method: GET", "Sec-Fetch-Mode: cors"},
			"OPTIONS * HTTP/1.1":                 nil,
			"GET /files/secret.txt HTTP/1.1":     {"Range: bytes=0-5", "If-Range: *", "Accept: */*"},
			"GET /files/secret.txt HTTP/1.0":     {"If-None-Match: *", "If-Modified-Since: " + time.Now().UTC().Format(http.TimeFormat)},
			"GET /echo/ws HTTP/1.1": {"Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Origin: https://evil.example"},
			"GET /echo/h2c HTTP/1.1":                         {"Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"},
			"TRACE /files/secret.txt HTTP/1.1":               nil,
			"GET http://127.0.0.1/files/secret.txt HTTP/1.1": navHdr,
		}
		for line, hdr := range cases {
			resp, body := atkRaw(t, app, line, hdr...)
			if line == "OPTIONS * HTTP/1.1" {
				// Go's HTTP server answers this itself, before Caddy: an
				// empty 200 that reaches no handler.
				if resp.StatusCode != http.StatusOK || body != "" {
					t.Errorf("%s: status %d body %q", line, resp.StatusCode, body)
				}
				continue
			}
			atkNoContent(t, line, resp, body)
			if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 401 or 302 (400 from Caddy for a malformed request)", line, resp.StatusCode)
			}
		}
	})

	t.Run("64 KB cookie header", func(t *testing.T) {
		var parts []string
		for i := 0; len(strings.Join(parts, "; ")) < 64<<10; i++ {
			parts = append(parts, fmt.Sprintf("c%d=%s", i, strings.Repeat("Z", 60)))
		}
		resp, body := atkRaw(t, app, "GET /files/secret.txt HTTP/1.1", append(navHdr, "Cookie: "+strings.Join(parts, "; "))...)
		atkNoContent(t, "64 KB cookie header", resp, body)
	})

	b := newBrowser(t)
	chain := b.follow(b.navigate(app + "/files/secret.txt"))
	last := chain[len(chain)-1]
	if last.Status != http.StatusOK || !strings.Contains(last.Body, atkSecretText) {
		t.Fatalf("login: %s", describeChain(chain))
	}

	t.Run("forged identity headers with a session", func(t *testing.T) {
		forged := navigation.Clone()
		for _, h := range []string{"X-Auth-User", "X-Auth-Request-Email", "X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups",
			"Remote-User", "X-Remote-User", "X-User", "X-Email", "X-Oidc-Claims"} {
			forged.Set(h, "mallory")
		}
		for _, h := range []string{"X_Auth_User", "x_forwarded_user", "REMOTE_USER", "X_OIDC_SUB"} {
			forged[h] = []string{"mallory"}
		}
		p := b.do(http.MethodGet, app+"/echo/whoami", forged, nil)
		if p.Status != http.StatusOK {
			t.Fatalf("echo: %s", p)
		}
		var e echoReply
		if err := json.Unmarshal([]byte(p.Body), &e); err != nil {
			t.Fatalf("echo: %v", err)
		}
		for k, vs := range e.Header {
			for _, v := range vs {
				if strings.Contains(v, "mallory") {
					t.Errorf("forged header %s: %s reached the upstream", k, v)
				}
			}
		}
	})

	t.Run("open redirects", func(t *testing.T) {
		for _, rt := range []string{"//evil.example", `/\evil.example`, "/%09/evil.example", "/%2F%2Fevil.example", "https:evil.example",
			"javascript:alert(1)", "@evil.example", "https://127.0.0.1.evil.example/", "/%5C%5Cevil.example", "/..//evil.example", "///evil.example"} {
			c := newBrowser(t)
			chain := c.follow(c.navigate(app + "/auth/login?return_to=" + url.QueryEscape(rt)))
			for _, pg := range chain {
				if pg.URL.Path == "/auth/callback" || (pg.URL.Host == strings.TrimPrefix(app, "http://") && pg.Status/100 == 3) {
					if loc := pg.location(); loc != "" && !strings.HasPrefix(loc, idp.URL) {
						u, err := url.Parse(strings.ReplaceAll(loc, `\`, "/"))
						base, _ := url.Parse(app + "/")
						if err != nil || base.ResolveReference(u).Host != base.Host {
							t.Errorf("return_to %q: %s redirects to %q", rt, pg.URL, loc)
						}
					}
				}
			}
		}
		for _, q := range []string{"post_logout_redirect_uri=https://evil.example/", "return_to=//evil.example", "next=https://evil.example"} {
			c := newBrowser(t)
			c.follow(c.navigate(app + "/files/secret.txt"))
			p := c.navigate(app + "/auth/logout?" + q)
			loc, _ := url.Parse(p.location())
			if p.Status != http.StatusFound || loc == nil || !strings.HasPrefix(p.location(), idp.URL+"/logout?") ||
				loc.Query().Get("post_logout_redirect_uri") != app+"/signed-out" || strings.Contains(p.location(), "evil") {
				t.Errorf("logout?%s: %s", q, p)
			}
		}
	})

	t.Run("token endpoint misbehaves", func(t *testing.T) {
		defer idp.mode.Store("")
		for _, mode := range []string{"garbage", "endless"} {
			idp.mode.Store(mode)
			c := newBrowser(t)
			start := time.Now()
			chain := c.follow(c.navigate(app + "/files/secret.txt"))
			last := chain[len(chain)-1]
			if last.Status != http.StatusBadGateway || strings.Contains(last.Body, atkSecretText) {
				t.Errorf("%s: %s", mode, describeChain(chain))
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("%s: took %v", mode, d)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if n := idp.streamed.Load(); n >= 64<<20 {
			t.Errorf("Caddy read the whole 64 MB token response")
		}
	})
}
