//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestHardeningRound2: through the built Caddy and the real IdP, the
// handler's own cookies never reach the upstream (other cookies do,
// unchanged), the login loop counter ends with the first request of the
// session, protected responses are private, PUT/PATCH/DELETE without a
// session get 401, login links cannot override auth_param, and the IdP's
// error text never reaches handle_errors.
func TestHardeningRound2(t *testing.T) {
	t.Parallel()
	portA, portB := freePort(t), freePort(t)
	appA, appB := origin(portA), origin(portB)
	i := startIdP(t, idpOptions{clients: []idpClient{registration("app-a", "secret-a", portA), registration("app-b", "secret-b", portB)}})
	up := newUpstream(t)
	startSites(t, appA+"/",
		fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	handle /echo* {
		reverse_proxy %s
	}
	handle {
		respond "A {http.auth.user.id}"
	}
}
`, portA, oidcBlock(i.Issuer, "app-a", "secret-a"), up),
		fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	respond "B {http.auth.user.id}"
	handle_errors {
		respond "error {http.error.status_code}: {http.error.message}"
	}
}
`, portB, oidcBlock(i.Issuer, "app-b", "secret-b", "auth_param organization_id org_pinned", "auth_param prompt consent")),
	)

	b := newBrowser(t)
	j := b.login(appA+"/", "alice", "alice-password")
	if j.final.Status != http.StatusOK {
		t.Fatalf("login:\n%s", describeChain(j.chain))
	}
	own := b.cookieNamesSetBy(appA)

	t.Run("login loop counter ends with the session's first request", func(t *testing.T) {
		var loop string
		for name := range own {
			if strings.HasSuffix(name, "_lg") {
				loop = name
			}
		}
		if loop == "" {
			t.Fatalf("the app set no loop counter: %v", own)
		}
		expired := false
		for _, c := range j.final.SetCookies {
			expired = expired || (c.Name == loop && c.MaxAge < 0)
		}
		if !expired {
			t.Errorf("the first page after login did not expire %s: %v", loop, cookieNames(j.final.SetCookies))
		}
		for _, c := range b.appCookies(appA) {
			if c.Name == loop {
				t.Errorf("the browser still sends %s", loop)
			}
		}
	})

	t.Run("own cookies stripped, other cookies and Cache-Control", func(t *testing.T) {
		hdr := apiCall.Clone()
		hdr.Set("Cookie", `theme=dark; lang="en-GB"`)
		p := b.do(http.MethodGet, appA+"/echo/cookies", hdr, nil)
		if p.Status != http.StatusOK {
			t.Fatalf("echo: %s", p)
		}
		var echo echoReply
		if err := json.Unmarshal([]byte(p.Body), &echo); err != nil {
			t.Fatalf("echo: %v", err)
		}
		sent := strings.Join(echo.Header.Values("Cookie"), "; ")
		if !strings.Contains(sent, `theme=dark; lang="en-GB"`) {
			t.Errorf("the upstream got Cookie %q, without the client's own cookies", sent)
		}
		for _, part := range strings.Split(sent, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if own[name] {
				t.Errorf("the upstream got the handler's cookie %s", name)
			}
		}
		if cc := p.Header.Get("Cache-Control"); cc != "private" {
			t.Errorf("protected response: Cache-Control %q, want private", cc)
		}
	})

	t.Run("PUT, PATCH and DELETE without a session get 401", func(t *testing.T) {
		anon := newBrowser(t)
		for _, method := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete} {
			p := anon.do(method, appA+"/echo/items/1", navigation, strings.NewReader("x"))
			if p.Status != http.StatusUnauthorized || p.location() != "" {
				t.Errorf("%s without a session: %s, want 401 without a redirect", method, p)
			}
		}
	})

	t.Run("login links fill only what auth_param leaves open", func(t *testing.T) {
		p := newBrowser(t).navigate(appB + "/auth/login?organization_id=org_evil&prompt=none&login_hint=bob")
		loc, err := url.Parse(p.location())
		if p.Status != http.StatusFound || err != nil || !strings.HasPrefix(p.location(), i.Issuer) {
			t.Fatalf("login link: %s", p)
		}
		q := loc.Query()
		for name, want := range map[string]string{"organization_id": "org_pinned", "prompt": "consent", "login_hint": "bob"} {
			if got := q[name]; len(got) != 1 || got[0] != want {
				t.Errorf("authorize %s = %q, want [%q]", name, got, want)
			}
		}
	})

	t.Run("IdP error text stays out of handle_errors", func(t *testing.T) {
		q := url.Values{"error": {"<script>alert(1)</script>"}, "error_description": {`<img src=x onerror="alert(2)">`}, "state": {"aaaaaaaaaaaaaaaaaaaa"}}
		p := newBrowser(t).navigate(appB + "/auth/callback?" + q.Encode())
		if p.Status != http.StatusUnauthorized || !strings.Contains(p.Body, "error 401: Sign-in did not complete") {
			t.Errorf("error callback: %s", p)
		}
		if strings.Contains(p.Body, "<script") || strings.Contains(p.Body, "<img") || strings.Contains(p.Body, "alert") {
			t.Errorf("the IdP's text reached {http.error.message}: %q", p.Body)
		}
	})
}

// TestUnverifiedEmailAndOddNames: dave signed up himself with an
// example.com address nobody verified and a display name with CR, LF and
// NUL in it. `require email *@example.com` turns him away unless
// allow_unverified_email, and his name reaches the upstream as a valid
// header, control characters turned into spaces.
func TestUnverifiedEmailAndOddNames(t *testing.T) {
	t.Parallel()
	portA, portB := freePort(t), freePort(t)
	appA, appB := origin(portA), origin(portB)
	i := startIdP(t, idpOptions{clients: []idpClient{registration("app-a", "secret-a", portA), registration("app-b", "secret-b", portB)}})
	up := newUpstream(t)
	site := func(port int, id, secret string, extra ...string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	handle /echo* {
		reverse_proxy %s {
			header_up X-Auth-Name {http.auth.user.name}
		}
	}
	handle {
		respond "hello {http.auth.user.id}"
	}
}
`, port, oidcBlock(i.Issuer, id, secret, extra...), up)
	}
	startSites(t, appA+"/",
		site(portA, "app-a", "secret-a", "require email *@example.com"),
		site(portB, "app-b", "secret-b", "require email *@example.com", "allow_unverified_email"),
	)

	if j := newBrowser(t).login(appA+"/", "alice", "alice-password"); j.final.Status != http.StatusOK {
		t.Errorf("alice (verified) under require email:\n%s", describeChain(j.chain))
	}
	if j := newBrowser(t).login(appA+"/", "dave", "dave-password"); j.final.Status != http.StatusForbidden {
		t.Errorf("dave (unverified) under require email: want 403, got:\n%s", describeChain(j.chain))
	}

	dave := newBrowser(t)
	if j := dave.login(appB+"/", "dave", "dave-password"); j.final.Status != http.StatusOK {
		t.Fatalf("dave with allow_unverified_email:\n%s", describeChain(j.chain))
	}
	p := dave.do(http.MethodGet, appB+"/echo/name", apiCall, nil)
	if p.Status != http.StatusOK {
		t.Fatalf("dave's request with his name in a header: %s", p)
	}
	var echo echoReply
	if err := json.Unmarshal([]byte(p.Body), &echo); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if got := echo.Header.Get("X-Auth-Name"); got != "Dave  X-Injected: 1" {
		t.Errorf("X-Auth-Name = %q, want the name with spaces for the control characters", got)
	}
	if echo.Header.Get("X-Injected") != "" {
		t.Error("a claim added a header upstream")
	}
}
