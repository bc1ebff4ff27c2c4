//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Contract items beyond the basic journey: several apps on one IdP, access
// rules, an IdP that fails for a while, state kept across a restart, and a
// cluster sharing a Redis store.

func newUpstream(t *testing.T) string {
	u := httptest.NewServer(http.HandlerFunc(upstreamHandler))
	t.Cleanup(u.Close)
	return u.URL
}

// TestTwoAppsShareOneIdP: two apps on two ports of 127.0.0.1 keep separate
// cookies (cookies ignore ports), single sign-on works, and signing out of one
// app signs the user out of the other through back-channel logout.
func TestTwoAppsShareOneIdP(t *testing.T) {
	appA, appB, i := startTwoApps(t, "A {http.auth.user.id}", "B {http.auth.user.id}")

	b := newBrowser(t)
	ja := b.login(appA+"/", "alice", "alice-password")
	if ja.final.Status != http.StatusOK || !strings.Contains(ja.final.Body, "A "+aliceSub) {
		t.Fatalf("login at app A:\n%s", describeChain(ja.chain))
	}
	// App B: the IdP session exists, so no form this time.
	jb := b.login(appB+"/", "alice", "alice-password")
	if jb.final.Status != http.StatusOK || !strings.Contains(jb.final.Body, "B "+aliceSub) {
		t.Fatalf("login at app B:\n%s", describeChain(jb.chain))
	}
	for _, p := range jb.chain {
		if strings.Contains(p.URL.Path, "/interaction/") {
			t.Errorf("app B asked for the password again (no single sign-on)")
		}
	}
	namesA, namesB := b.cookieNamesSetBy(appA), b.cookieNamesSetBy(appB)
	for n := range namesA {
		if namesB[n] {
			t.Errorf("apps A and B both use cookie %q; on one host they would overwrite each other", n)
		}
	}
	if p := b.navigate(appA + "/again"); p.Status != http.StatusOK || !strings.Contains(p.Body, "A "+aliceSub) {
		t.Errorf("app A after logging in to B: %s", p)
	}

	// Sign out through app A; the IdP fans the logout out to both apps.
	out := b.navigate(appA + "/auth/logout")
	loc, err := url.Parse(out.location())
	if err != nil || !strings.HasPrefix(out.location(), i.Issuer+"/oidc/logout") {
		t.Fatalf("logout at A: %s", out)
	}
	b.follow(submitLogoutForm(t, b, b.navigate(loc.String())))
	waitFor(t, "back-channel logouts to both apps", 5*time.Second, func() bool {
		return len(i.stats(t).Backchannel) >= 2
	})
	for _, r := range i.stats(t).Backchannel {
		if !r.OK {
			t.Errorf("back-channel logout to %s failed: %s", r.ClientID, r.Error)
		}
	}
	if p := b.navigate(appB + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize") {
		t.Errorf("app B still has a session after logout at the IdP: %s", p)
	}
}

// TestRequireClaim: `require email *@example.com` lets alice in and gives bob
// (bob@example.org) a 403.
func TestRequireClaim(t *testing.T) {
	s := newStack(t, stackOptions{extra: "require email *@example.com"})

	alice := newBrowser(t)
	s.mustLogin(alice, s.app+"/")

	bob := newBrowser(t)
	j := bob.login(s.app+"/", "bob", "bob-password")
	if j.final.Status != http.StatusForbidden {
		t.Errorf("bob does not match the require rule: want 403, got:\n%s", describeChain(j.chain))
	}
	if api := bob.do(http.MethodGet, s.app+"/echo/x", apiCall, nil); api.Status != http.StatusForbidden {
		t.Errorf("bob's API call: want 403, got %s", api)
	}
}

// TestRefreshWhileTokenEndpointFails: an IdP that answers 503 for a while is not
// a refusal; requests get 502/503 meanwhile and the session works again once
// the IdP is back.
func TestRefreshWhileTokenEndpointFails(t *testing.T) {
	const ttl = 6 * time.Second
	s := newStack(t, stackOptions{accessTTL: ttl})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")

	s.idp.admin(t, "/__test/token-failure", url.Values{"status": {"503"}, "count": {"-1"}})
	time.Sleep(ttl + 2*time.Second)

	p := b.navigate(s.app + "/during-outage")
	if p.Status != http.StatusBadGateway && p.Status != http.StatusServiceUnavailable {
		t.Errorf("refresh during an IdP outage: want 502/503, got %s", p)
	}
	if s.idp.stats(t).TokenFailuresServed == 0 {
		t.Errorf("the module never tried to refresh during the outage")
	}

	s.idp.admin(t, "/__test/token-failure", url.Values{"count": {"0"}})
	p = b.navigate(s.app + "/after-outage")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
		t.Errorf("after the IdP came back the session should work again: %s", p)
	}
}

// TestRevocationSurvivesRestart: a logged-out session stays dead after Caddy
// restarts with the same storage.
func TestRevocationSurvivesRestart(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")
	old := sessionCookies(b, s.app)
	if p := b.navigate(s.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("logout: %s", p)
	}

	s.caddy.proc.stop()
	adminPort, _ := strconv.Atoi(strings.TrimPrefix(s.caddy.adminAddr, "127.0.0.1:"))
	s.caddy = startCaddy(t, s.dir, adminPort, s.caddyfile(adminPort, s.opts), s.app+"/signed-out")

	if p := b.withCookies(s.app, old).navigate(s.app + "/"); p.Status == http.StatusOK {
		t.Errorf("after a restart the logged-out session works again: %s", p)
	}
	// And a fresh login still works after the restart.
	s.mustLogin(newBrowser(t), s.app+"/")
}

// ---------------------------------------------------------------- cluster

func startRedis(t *testing.T) int {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (run scripts/setup.sh)")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	p := startProcess(t, "redis", cmd)
	waitFor(t, "redis", 10*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("redis exited: %v", p.err)
		}
		return portOpen(fmt.Sprintf("127.0.0.1:%d", port))
	})
	return port
}

// TestClusterSharesRedisStore: two Caddy instances with one Redis store act as
// one: a session works on both, parallel requests on both after expiry cause
// one refresh, and a logout on one is honoured by the other.
func TestClusterSharesRedisStore(t *testing.T) {
	const ttl = 8 * time.Second
	redisPort := startRedis(t)
	p1, p2 := freePort(t), freePort(t)
	app1, app2 := fmt.Sprintf("http://127.0.0.1:%d", p1), fmt.Sprintf("http://127.0.0.1:%d", p2)
	i := startIdP(t, idpOptions{accessTTL: ttl, clients: []idpClient{registration(clientID, clientSecret, p1, p2)}})
	up := newUpstream(t)
	store := fmt.Sprintf("store redis://127.0.0.1:%d/0", redisPort)
	for _, port := range []int{p1, p2} {
		dir := t.TempDir()
		admin := freePort(t)
		cfg := globalOptions(admin, filepath.Join(dir, "storage")) +
			siteConfig{port: port, issuer: i.Issuer, clientID: clientID, clientSecret: clientSecret, upstream: up, extra: store}.block()
		startCaddy(t, dir, admin, cfg, fmt.Sprintf("http://127.0.0.1:%d/signed-out", port))
	}

	// Cookies ignore ports, so one browser talks to both instances with the
	// same cookies, as it would behind a load balancer.
	x, y := newBrowser(t), newBrowser(t)
	for _, b := range []*browser{x, y} {
		j := b.login(app1+"/", "alice", "alice-password")
		if j.final.Status != http.StatusOK {
			t.Fatalf("login at instance 1:\n%s", describeChain(j.chain))
		}
	}
	if p := x.navigate(app2 + "/"); p.Status != http.StatusOK {
		t.Fatalf("instance 2 does not accept the session from instance 1: %s", p)
	}

	before := i.stats(t)
	time.Sleep(ttl + 2*time.Second)
	var wg sync.WaitGroup
	results := make([]*page, 20)
	for n := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := app1
			if n%2 == 1 {
				app = app2
			}
			results[n] = y.do(http.MethodGet, fmt.Sprintf("%s/echo/%d", app, n), apiCall, nil)
		}()
	}
	wg.Wait()
	for n, p := range results {
		if p.Status != http.StatusOK {
			t.Errorf("parallel request %d after expiry: %s", n, p)
		}
	}
	after := i.stats(t)
	if d := after.Grants["refresh_token"] - before.Grants["refresh_token"]; d != 1 {
		t.Errorf("20 requests on 2 instances caused %d refreshes at the IdP, want 1 (errors %v)", d, after.GrantErrors)
	}

	old := sessionCookies(x, app1)
	if p := x.navigate(app1 + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("logout at instance 1: %s", p)
	}
	if p := x.withCookies(app1, old).do(http.MethodGet, app2+"/echo/x", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("instance 2 accepts a session logged out on instance 1: %s", p)
	}
}

// TestLoginPathReturnTo: /auth/login starts a login explicitly and returns to a
// same-site return_to only; another site's URL is not followed.
func TestLoginPathReturnTo(t *testing.T) {
	s := newStack(t, stackOptions{})

	b := newBrowser(t)
	j := s.mustLogin(b, s.app+"/auth/login?return_to="+url.QueryEscape("/reports?month=11"))
	if got := j.final.URL.RequestURI(); got != "/reports?month=11" {
		t.Errorf("after /auth/login the user is at %s, want /reports?month=11\n%s", got, describeChain(j.chain))
	}

	for _, evil := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example"} {
		b := newBrowser(t)
		j := b.login(s.app+"/auth/login?return_to="+url.QueryEscape(evil), "alice", "alice-password")
		for _, p := range j.chain {
			if p.URL.Host != "127.0.0.1:"+strconv.Itoa(s.appPort) && p.URL.Host != "127.0.0.1:"+strconv.Itoa(s.idp.Port) {
				t.Errorf("return_to=%q led off the site to %s", evil, p.URL)
			}
			if loc := p.location(); strings.Contains(loc, "evil.example") && !strings.Contains(loc, "oauth/authorize") {
				t.Errorf("return_to=%q produced a redirect to %q", evil, loc)
			}
		}
	}
}

// TestSessionLifetimeCap: session_lifetime ends a session even though the
// access token and refresh token are still good.
func TestSessionLifetimeCap(t *testing.T) {
	const lifetime = 5 * time.Second
	s := newStack(t, stackOptions{extra: "session_lifetime 5s"})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")
	time.Sleep(lifetime + 2*time.Second)
	if p := b.navigate(s.app + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer+"/oauth/authorize") {
		t.Errorf("after session_lifetime: want a redirect to login, got %s", p)
	}
}

// TestCustomSubdirectives: scopes, auth_param, cookie_name and the path
// settings change what they say.
func TestCustomSubdirectives(t *testing.T) {
	s := newStack(t, stackOptions{extra: `
		scopes openid email offline_access
		auth_param ui_locales de
		auth_param prompt consent
		cookie_name shopauth
		logout_path /bye
	`})
	b := newBrowser(t)
	p := b.navigate(s.app + "/x")
	loc, err := url.Parse(p.location())
	if err != nil || p.Status != http.StatusFound {
		t.Fatalf("no login redirect: %s", p)
	}
	q := loc.Query()
	if got := q.Get("scope"); got != "openid email offline_access" {
		t.Errorf("scope = %q, want %q", got, "openid email offline_access")
	}
	if q.Get("ui_locales") != "de" || q.Get("prompt") != "consent" {
		t.Errorf("auth_param values missing: ui_locales=%q prompt=%q", q.Get("ui_locales"), q.Get("prompt"))
	}
	for _, c := range p.SetCookies {
		if !strings.HasPrefix(c.Name, "shopauth") {
			t.Errorf("cookie %q does not start with the cookie_name prefix", c.Name)
		}
	}

	j := b.finishLogin(b.follow(p), "alice", "alice-password")
	if j.final.Status != http.StatusOK {
		t.Fatalf("login:\n%s", describeChain(j.chain))
	}
	for name := range b.cookieNamesSetBy(s.app) {
		if !strings.HasPrefix(name, "shopauth") {
			t.Errorf("cookie %q does not start with the cookie_name prefix", name)
		}
	}
	out := b.navigate(s.app + "/bye")
	if out.Status != http.StatusFound || !strings.HasPrefix(out.location(), s.idp.Issuer+"/oidc/logout") {
		t.Errorf("logout_path /bye: %s", out)
	}
}

// startTwoApps starts the IdP with the clients app-a and app-b and one Caddy
// with a site for each (greetings as given; empty for the default), and
// returns their origins and the IdP.
func startTwoApps(t *testing.T, greetingA, greetingB string) (appA, appB string, i *idp) {
	t.Helper()
	portA, portB := freePort(t), freePort(t)
	appA, appB = fmt.Sprintf("http://127.0.0.1:%d", portA), fmt.Sprintf("http://127.0.0.1:%d", portB)
	i = startIdP(t, idpOptions{clients: []idpClient{
		registration("app-a", "secret-a", portA),
		registration("app-b", "secret-b", portB),
	}})
	up := newUpstream(t)
	dir := t.TempDir()
	admin := freePort(t)
	cfg := globalOptions(admin, filepath.Join(dir, "storage")) +
		siteConfig{port: portA, issuer: i.Issuer, clientID: "app-a", clientSecret: "secret-a", upstream: up, greeting: greetingA}.block() +
		siteConfig{port: portB, issuer: i.Issuer, clientID: "app-b", clientSecret: "secret-b", upstream: up, greeting: greetingB}.block()
	startCaddy(t, dir, admin, cfg, appA+"/signed-out")
	return appA, appB, i
}
