//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---------------------------------------------------------------- a) b)

func TestUnauthenticatedNavigationRedirectsToAuthorize(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)

	p := b.navigate(s.app + "/some/page?x=1")
	if p.Status != http.StatusFound {
		t.Fatalf("want 302 to the IdP, got %s", p)
	}
	loc, err := url.Parse(p.location())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loc.Scheme+"://"+loc.Host+loc.Path, s.idp.Issuer+"/oauth/authorize"; got != want {
		t.Fatalf("redirect goes to %s, want %s", got, want)
	}
	q := loc.Query()
	for name, want := range map[string]string{
		"response_type":         "code",
		"client_id":             clientID,
		"redirect_uri":          s.app + "/auth/callback",
		"code_challenge_method": "S256",
	} {
		if got := q.Get(name); got != want {
			t.Errorf("authorize %s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(name) == "" {
			t.Errorf("authorize request has no %s: %s", name, loc)
		}
	}
	if cc := q.Get("code_challenge"); len(cc) != 43 {
		t.Errorf("code_challenge %q is not a base64url SHA-256", cc)
	}
	scopes := strings.Fields(q.Get("scope"))
	for _, want := range []string{"openid", "profile", "email", "offline_access"} {
		if !contains(scopes, want) {
			t.Errorf("scope %q lacks %q", q.Get("scope"), want)
		}
	}
	if len(liveCookies(p.SetCookies)) == 0 {
		t.Errorf("the redirect sets no cookie to carry the login state")
	}

	// A second login start gets a fresh state and nonce.
	p2 := b.navigate(s.app + "/other")
	loc2, _ := url.Parse(p2.location())
	if loc2.Query().Get("state") == q.Get("state") || loc2.Query().Get("nonce") == q.Get("nonce") {
		t.Errorf("state or nonce reused across logins")
	}
}

func TestUnauthenticatedAPICallGets401(t *testing.T) {
	s := newStack(t, stackOptions{})
	cases := map[string]http.Header{
		"accept json": {"Accept": {"application/json"}},
		"fetch":       {"Accept": {"*/*"}, "Sec-Fetch-Mode": {"cors"}, "Sec-Fetch-Dest": {"empty"}},
		"xhr":         {"Accept": {"text/html, */*"}, "X-Requested-With": {"XMLHttpRequest"}},
	}
	for name, hdr := range cases {
		t.Run(name, func(t *testing.T) {
			b := newBrowser(t)
			p := b.do(http.MethodGet, s.app+"/api/things", hdr, nil)
			if p.Status != http.StatusUnauthorized {
				t.Fatalf("want 401, got %s", p)
			}
			if p.location() != "" {
				t.Errorf("a 401 with a Location header: %q", p.location())
			}
			if p.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("no WWW-Authenticate header")
			}
			if ct := p.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			var v any
			if err := json.Unmarshal([]byte(p.Body), &v); err != nil {
				t.Errorf("body is not JSON: %v: %q", err, p.Body)
			}
		})
	}
}

// ---------------------------------------------------------------- c)

func TestLoginJourney(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)

	j := s.mustLogin(b, s.app+"/some/page?x=1")
	if got := j.final.URL.Path + "?" + j.final.URL.RawQuery; got != "/some/page?x=1" {
		t.Errorf("after login the user is at %s, want /some/page?x=1\n%s", got, describeChain(j.chain))
	}
	want := "hello " + aliceSub + " " + aliceEmail
	if !strings.Contains(j.final.Body, want) {
		t.Errorf("protected page says %q, want %q", j.final.Body, want)
	}
	if j.callback == nil {
		t.Fatalf("the journey never passed the callback:\n%s", describeChain(j.chain))
	}
	if len(sessionCookies(b, s.app)) == 0 {
		t.Fatalf("no session cookie after login")
	}

	// The session now works for pages and for API calls, and the upstream
	// sees the identity the module established.
	p := b.navigate(s.app + "/another")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, want) {
		t.Errorf("second page: %s", p)
	}
	api := b.do(http.MethodGet, s.app+"/echo/x", apiCall, nil)
	if api.Status != http.StatusOK {
		t.Fatalf("API call with a session: %s", api)
	}
	var echo echoReply
	if err := json.Unmarshal([]byte(api.Body), &echo); err != nil {
		t.Fatal(err)
	}
	if echo.Header.Get("X-Auth-User-Id") != aliceSub || echo.Header.Get("X-Auth-User-Email") != aliceEmail {
		t.Errorf("upstream saw user %q/%q", echo.Header.Get("X-Auth-User-Id"), echo.Header.Get("X-Auth-User-Email"))
	}

	// A callback replayed after success must not work again.
	replay := b.navigate(j.callback.String())
	if replay.Status < 400 || replay.Status > 499 {
		t.Errorf("replayed callback: want 4xx, got %s", replay)
	}
	if len(liveCookies(replay.SetCookies)) > 0 && replay.Status >= 400 {
		t.Errorf("replayed callback set cookies %v", cookieNames(liveCookies(replay.SetCookies)))
	}
}

// ---------------------------------------------------------------- d)

func TestExpiredAccessTokenIsRefreshedTransparently(t *testing.T) {
	const ttl = 10 * time.Second
	s := newStack(t, stackOptions{accessTTL: ttl})

	// Three sessions, logged in now, used after their access tokens expired.
	nav, post, par := newBrowser(t), newBrowser(t), newBrowser(t)
	for _, b := range []*browser{nav, post, par} {
		s.mustLogin(b, s.app+"/")
	}
	before := s.idp.stats(t)
	time.Sleep(ttl + 2*time.Second)

	t.Run("navigation", func(t *testing.T) {
		p := nav.navigate(s.app + "/after-expiry")
		if p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
			t.Fatalf("want 200 without a redirect, got %s", p)
		}
		if len(liveCookies(p.SetCookies)) == 0 {
			t.Errorf("the refreshing response sets no new session cookie")
		}
		again := nav.navigate(s.app + "/after-refresh")
		if again.Status != http.StatusOK {
			t.Errorf("the refreshed session does not work: %s", again)
		}
	})

	t.Run("POST body survives", func(t *testing.T) {
		body := `{"note":"written after the token expired","n":42}`
		hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
		p := post.do(http.MethodPost, s.app+"/echo/submit?a=b", hdr, strings.NewReader(body))
		if p.Status != http.StatusOK {
			t.Fatalf("POST after expiry: %s", p)
		}
		var echo echoReply
		if err := json.Unmarshal([]byte(p.Body), &echo); err != nil {
			t.Fatal(err)
		}
		if echo.Method != http.MethodPost || echo.Body != body || echo.Query != "a=b" {
			t.Errorf("upstream got %s %s?%s body %q", echo.Method, echo.Path, echo.Query, echo.Body)
		}
	})

	t.Run("parallel requests refresh once", func(t *testing.T) {
		const n = 20
		var wg sync.WaitGroup
		results := make([]*page, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = par.do(http.MethodGet, fmt.Sprintf("%s/echo/p%d", s.app, i), apiCall, nil)
			}()
		}
		wg.Wait()
		for i, p := range results {
			if p.Status != http.StatusOK {
				t.Errorf("parallel request %d: %s", i, p)
			}
		}
	})

	after := s.idp.stats(t)
	refreshes := after.Grants["refresh_token"] - before.Grants["refresh_token"]
	if refreshes != 3 {
		t.Errorf("the IdP saw %d refresh grants for 3 expired sessions, want 3 (errors: %v)", refreshes, after.GrantErrors)
	}
	if after.GrantErrors["refresh_token"] != before.GrantErrors["refresh_token"] {
		t.Errorf("refresh errors at the IdP: %v (a reused refresh token revokes the whole grant)", after.GrantErrors)
	}
}

// ---------------------------------------------------------------- e)

func TestParallelTabsLoginInReverseOrder(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)

	tab1 := b.navigate(s.app + "/tab/one?x=1")
	tab2 := b.navigate(s.app + "/tab/two?y=2")
	for _, p := range []*page{tab1, tab2} {
		if p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer+"/oauth/authorize") {
			t.Fatalf("want a redirect to authorize, got %s", p)
		}
	}

	// Tab two finishes first, with the login form ...
	j2 := b.finishLogin(b.follow(tab2), "alice", "alice-password")
	// ... then tab one, where the IdP already has a session.
	j1 := b.finishLogin(b.follow(tab1), "alice", "alice-password")

	for _, c := range []struct {
		j    *journey
		want string
	}{{j1, "/tab/one?x=1"}, {j2, "/tab/two?y=2"}} {
		got := c.j.final.URL.Path + "?" + c.j.final.URL.RawQuery
		if c.j.final.Status != http.StatusOK || got != c.want {
			t.Errorf("tab for %s ended at %s:\n%s", c.want, got, describeChain(c.j.chain))
		}
	}
}

// ---------------------------------------------------------------- f)

func TestCallbackErrors(t *testing.T) {
	s := newStack(t, stackOptions{})

	t.Run("error parameter", func(t *testing.T) {
		b := newBrowser(t)
		start := b.navigate(s.app + "/wanted")
		loc, _ := url.Parse(start.location())
		q := url.Values{
			"error":             {"access_denied"},
			"error_description": {"<script>x</script>"},
			"state":             {loc.Query().Get("state")},
			"iss":               {s.idp.Issuer},
		}
		p := b.navigate(s.app + "/auth/callback?" + q.Encode())
		if p.Status >= 300 && p.Status < 400 {
			t.Fatalf("want an error page, got a redirect: %s", p)
		}
		if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type %q, want text/html", ct)
		}
		if strings.Contains(p.Body, "<script>x</script>") {
			t.Errorf("the error description is not escaped: %q", p.Body)
		}
		if !strings.Contains(p.Body, "&lt;script&gt;x&lt;/script&gt;") {
			t.Errorf("the page does not show the (escaped) error description: %q", p.Body)
		}
		if !strings.Contains(p.Body, "<a ") || !strings.Contains(p.Body, "href=") {
			t.Errorf("no retry link on the error page: %q", p.Body)
		}
		if len(liveCookies(p.SetCookies)) > 0 {
			t.Errorf("the error callback set cookies %v", cookieNames(liveCookies(p.SetCookies)))
		}
	})

	for name, query := range map[string]url.Values{
		"wrong state":   {"code": {"abc"}, "state": {"not-the-state"}},
		"missing state": {"code": {"abc"}},
	} {
		t.Run(name, func(t *testing.T) {
			b := newBrowser(t)
			start := b.navigate(s.app + "/wanted")
			if start.Status != http.StatusFound {
				t.Fatalf("no login redirect: %s", start)
			}
			query.Set("iss", s.idp.Issuer)
			p := b.navigate(s.app + "/auth/callback?" + query.Encode())
			if p.Status < 400 || p.Status > 499 {
				t.Errorf("want 4xx, got %s", p)
			}
			if live := liveCookies(p.SetCookies); len(live) > 0 {
				t.Errorf("the rejected callback set cookies %v", cookieNames(live))
			}
			after := b.navigate(s.app + "/wanted")
			if after.Status != http.StatusFound {
				t.Errorf("a session exists after a rejected callback: %s", after)
			}
		})
	}
}

// ---------------------------------------------------------------- g)

func TestLogout(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")

	// Neither HEAD nor a prefetch logs out.
	head := b.do(http.MethodHead, s.app+"/auth/logout", navigation, nil)
	if len(deletedCookies(head.SetCookies)) > 0 {
		t.Errorf("HEAD %s cleared cookies %v", "/auth/logout", deletedCookies(head.SetCookies))
	}
	prefetch := navigation.Clone()
	prefetch.Set("Sec-Purpose", "prefetch")
	prefetch.Set("Purpose", "prefetch")
	pf := b.do(http.MethodGet, s.app+"/auth/logout", prefetch, nil)
	if len(deletedCookies(pf.SetCookies)) > 0 {
		t.Errorf("a prefetch of /auth/logout cleared cookies %v", deletedCookies(pf.SetCookies))
	}
	if p := b.navigate(s.app + "/still-in"); p.Status != http.StatusOK {
		t.Fatalf("the session did not survive HEAD/prefetch of the logout path: %s", p)
	}

	old := sessionCookies(b, s.app)
	if len(old) == 0 {
		t.Fatal("no session cookies before logout")
	}

	p := b.navigate(s.app + "/auth/logout")
	if p.Status != http.StatusFound && p.Status != http.StatusSeeOther {
		t.Fatalf("logout: want a redirect to the IdP, got %s", p)
	}
	loc, err := url.Parse(p.location())
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != s.idp.Issuer+"/oidc/logout" {
		t.Errorf("logout redirects to %s, want %s/oidc/logout", got, s.idp.Issuer)
	}
	if loc.Query().Get("id_token_hint") == "" {
		t.Errorf("logout redirect has no id_token_hint: %s", loc)
	}
	if got := loc.Query().Get("post_logout_redirect_uri"); got != s.app+"/signed-out" {
		t.Errorf("post_logout_redirect_uri = %q, want %q", got, s.app+"/signed-out")
	}
	deleted := deletedCookies(p.SetCookies)
	for _, c := range old {
		if !deleted[c.Name] {
			t.Errorf("logout response does not clear cookie %q (cleared: %v)", c.Name, deleted)
		}
	}
	if left := sessionCookies(b, s.app); len(left) > 0 {
		t.Errorf("cookies left after logout: %v", cookieNames(left))
	}

	// A copy of the old cookies no longer works.
	thief := b.withCookies(s.app, old)
	if r := thief.navigate(s.app + "/"); r.Status == http.StatusOK {
		t.Errorf("the old session cookie still works after logout: %s", r)
	}
	thief2 := b.withCookies(s.app, old)
	if r := thief2.do(http.MethodGet, s.app+"/echo/x", apiCall, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("API call with the old session cookie: want 401, got %s", r)
	}

	// The IdP side: its confirmation page posts logout=yes and lands on
	// /signed-out; every client gets a back-channel logout.
	idpPage := b.navigate(loc.String())
	chain := b.follow(submitLogoutForm(t, b, idpPage))
	final := chain[len(chain)-1]
	if final.URL.Path != "/signed-out" || final.Status != http.StatusOK {
		t.Errorf("IdP logout did not end on /signed-out:\n%s", describeChain(append([]*page{idpPage}, chain...)))
	}
	waitFor(t, "the back-channel logout to be recorded", 5*time.Second, func() bool {
		return len(s.idp.stats(t).Backchannel) > 0
	})
	for _, r := range s.idp.stats(t).Backchannel {
		if !r.OK {
			t.Errorf("back-channel logout to %s failed: %s", r.ClientID, r.Error)
		}
	}
}

// submitLogoutForm posts the IdP's self-submitting logout confirmation form.
func submitLogoutForm(t *testing.T, b *browser, p *page) *page {
	t.Helper()
	if p.Status != http.StatusOK {
		t.Fatalf("IdP logout page: %s", p)
	}
	m := formAction.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no form on the IdP logout page: %s", p.Body)
	}
	action, _ := p.URL.Parse(m[1])
	form := url.Values{}
	for _, in := range hiddenInputs(p.Body) {
		form.Set(in[0], in[1])
	}
	if form.Get("logout") != "yes" {
		t.Fatalf("the IdP logout form does not say logout=yes: %v", form)
	}
	hdr := navigation.Clone()
	hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(http.MethodPost, action.String(), hdr, strings.NewReader(form.Encode()))
}

func hiddenInputs(html string) [][2]string {
	var out [][2]string
	for _, tag := range strings.Split(html, "<input")[1:] {
		tag = tag[:strings.Index(tag, ">")]
		name := attr(tag, "name")
		if name != "" {
			out = append(out, [2]string{name, attr(tag, "value")})
		}
	}
	return out
}

func attr(tag, name string) string {
	i := strings.Index(tag, name+`="`)
	if i < 0 {
		return ""
	}
	rest := tag[i+len(name)+2:]
	return rest[:strings.Index(rest, `"`)]
}

// ---------------------------------------------------------------- back-channel

func TestBackchannelLogoutEndsSession(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")

	// An invalid logout token is refused.
	bad := plainClient()
	resp, err := bad.PostForm(s.app+"/auth/backchannel-logout", url.Values{"logout_token": {"not.a.jwt"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("invalid logout_token: want 400, got %d", resp.StatusCode)
	}
	if p := b.navigate(s.app + "/"); p.Status != http.StatusOK {
		t.Fatalf("session gone after an invalid back-channel call: %s", p)
	}

	// The user signs out at the IdP directly (not through the app): the IdP
	// calls the app's back-channel endpoint, and the app session ends.
	q := url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {s.app + "/signed-out"}}
	idpPage := b.navigate(s.idp.Issuer + "/oidc/logout?" + q.Encode())
	b.follow(submitLogoutForm(t, b, idpPage))
	waitFor(t, "the back-channel logout", 5*time.Second, func() bool {
		return len(s.idp.stats(t).Backchannel) > 0
	})
	for _, r := range s.idp.stats(t).Backchannel {
		if !r.OK {
			t.Fatalf("back-channel logout to %s failed at the IdP: %s", r.ClientID, r.Error)
		}
	}
	if p := b.navigate(s.app + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer+"/oauth/authorize") {
		t.Errorf("after back-channel logout, want a redirect to login, got %s", p)
	}
}

// ---------------------------------------------------------------- h)

func TestRefusedRefreshEndsSession(t *testing.T) {
	const ttl = 6 * time.Second
	s := newStack(t, stackOptions{accessTTL: ttl})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")
	cookies := sessionCookies(b, s.app)

	s.idp.revokeUser(t, aliceSub)
	time.Sleep(ttl + 2*time.Second)

	nav := b.navigate(s.app + "/")
	if nav.Status != http.StatusFound || !strings.HasPrefix(nav.location(), s.idp.Issuer+"/oauth/authorize") {
		t.Errorf("navigation after a refused refresh: want 302 to authorize, got %s", nav)
	}
	api := b.withCookies(s.app, cookies).do(http.MethodGet, s.app+"/echo/x", apiCall, nil)
	if api.Status != http.StatusUnauthorized {
		t.Errorf("API call after a refused refresh: want 401, got %s", api)
	}
	if st := s.idp.stats(t); st.GrantErrors["refresh_token"] == 0 {
		t.Errorf("the IdP saw no failed refresh; grants=%v", st.Grants)
	}
}

// ---------------------------------------------------------------- i)

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	good := map[string]string{
		"issuer":        "http://127.0.0.1:1",
		"client_id":     clientID,
		"client_secret": clientSecret,
		"redirect_uri":  "/auth/callback",
		"cookie_secret": cookieSecret,
	}
	render := func(drop, key, value string) string {
		var sb strings.Builder
		sb.WriteString(globalOptions(freePort(t), filepath.Join(dir, "storage")))
		sb.WriteString("http://127.0.0.1:18081 {\n\toidc_auth {\n")
		for _, k := range []string{"issuer", "client_id", "client_secret", "redirect_uri", "cookie_secret"} {
			v := good[k]
			if k == drop {
				continue
			}
			if k == key {
				v = value
			}
			fmt.Fprintf(&sb, "\t\t%s %s\n", k, v)
		}
		sb.WriteString("\t}\n\trespond \"ok\"\n}\n")
		return sb.String()
	}
	validate := func(name, caddyfile string) (string, error) {
		f := filepath.Join(dir, name+".Caddyfile")
		if err := os.WriteFile(f, []byte(caddyfile), 0o600); err != nil {
			t.Fatal(err)
		}
		return runCaddy(t, dir, "validate", "--config", f, "--adapter", "caddyfile")
	}

	if out, err := validate("good", render("", "", "")); err != nil {
		t.Fatalf("a good config (issuer on a closed port) fails validation: %v\n%s", err, out)
	}

	for _, c := range []struct{ name, drop, key, value, mention string }{
		{"missing issuer", "issuer", "", "", "issuer"},
		{"missing client_id", "client_id", "", "", "client_id"},
		{"short cookie_secret", "", "cookie_secret", "tooshort", "cookie_secret"},
		{"relative redirect_uri", "", "redirect_uri", "auth/callback", "redirect_uri"},
		{"non-http redirect_uri", "", "redirect_uri", "ftp://127.0.0.1/cb", "redirect_uri"},
		{"http issuer on a public host", "", "issuer", "http://idp.example.com", "issuer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := validate(strings.ReplaceAll(c.name, " ", "-"), render(c.drop, c.key, c.value))
			if err == nil {
				t.Fatalf("caddy validate accepted it:\n%s", out)
			}
			if !strings.Contains(out, c.mention) {
				t.Errorf("the error does not name %q:\n%s", c.mention, tail(out, 5))
			}
		})
	}

	t.Run("unknown subdirective", func(t *testing.T) {
		cf := strings.Replace(render("", "", ""), "oidc_auth {\n", "oidc_auth {\n\t\tisuer http://x\n", 1)
		out, err := validate("typo", cf)
		if err == nil || !strings.Contains(out, "isuer") {
			t.Errorf("a typo in a subdirective is not reported: %v\n%s", err, tail(out, 5))
		}
	})
}

func TestListModules(t *testing.T) {
	out, err := runCaddy(t, t.TempDir(), "list-modules")
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	if !strings.Contains(out, "http.handlers.oidc_auth") {
		t.Errorf("list-modules does not list http.handlers.oidc_auth")
	}
}

func TestStartsWhileIdPIsDown(t *testing.T) {
	dead := fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))
	s := newStack(t, stackOptions{issuer: dead})
	if portOpen(strings.TrimPrefix(dead, "http://")) {
		t.Skip("the closed port got taken")
	}
	b := newBrowser(t)
	p := b.navigate(s.app + "/")
	if p.Status != http.StatusBadGateway && p.Status != http.StatusServiceUnavailable {
		t.Errorf("with the IdP down, want 502/503, got %s", p)
	}
	api := b.do(http.MethodGet, s.app+"/echo", apiCall, nil)
	if api.Status != http.StatusBadGateway && api.Status != http.StatusServiceUnavailable && api.Status != http.StatusUnauthorized {
		t.Errorf("API call with the IdP down: want 502/503 (or 401), got %s", api)
	}
	if pub := b.navigate(s.app + "/signed-out"); pub.Status != http.StatusOK {
		t.Errorf("public page with the IdP down: %s", pub)
	}
}

// ---------------------------------------------------------------- j)

func TestSessionSurvivesReload(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")

	opts := s.opts
	opts.greeting = "reloaded {http.auth.user.id}"
	s.reload(opts)

	// caddy reload returns once the new config is live.
	p := b.navigate(s.app + "/after-reload")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "reloaded "+aliceSub) {
		t.Errorf("after reload the session does not work: %s", p)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
