//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// Access control and identity: require rules per path, the identity that
// reaches an upstream (and the headers a client may not forge), bearer mode,
// the session info endpoint, and handle_errors.

// oidcBlock renders an oidc_auth block for one client of the IdP.
func oidcBlock(issuer, id, secret string, extra ...string) string {
	return fmt.Sprintf(`oidc_auth {
			issuer %s
			client_id %s
			client_secret %s
			cookie_secret %s
%s
		}`, issuer, id, secret, cookieSecret, indent(strings.Join(extra, "\n"), "\t\t\t"))
}

// startSites runs one Caddy with the given site blocks and waits for readyURL.
func startSites(t *testing.T, readyURL string, sites ...string) *caddy {
	t.Helper()
	dir := t.TempDir()
	admin := freePort(t)
	return startCaddy(t, dir, admin, globalOptions(admin, filepath.Join(dir, "storage"))+strings.Join(sites, "\n"), readyURL)
}

func origin(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// jwtClaims decodes the payload of a JWT without checking it.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", shorten(tok, 80))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return claims
}

var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// echoed decodes what the Go upstream saw.
func echoed(t *testing.T, p *page) echoReply {
	t.Helper()
	if p.Status != http.StatusOK {
		t.Fatalf("upstream request: %s", p)
	}
	var e echoReply
	if err := json.Unmarshal([]byte(p.Body), &e); err != nil {
		t.Fatalf("upstream reply %q: %v", shorten(p.Body, 200), err)
	}
	return e
}

// passedToken is the access token the upstream received from pass_access_token.
func passedToken(t *testing.T, b *browser, echoURL string) string {
	t.Helper()
	e := echoed(t, b.do(http.MethodGet, echoURL, apiCall, nil))
	auth := e.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") {
		t.Fatalf("the upstream got no bearer token (Authorization %q)", auth)
	}
	return strings.TrimPrefix(auth, "Bearer ")
}

// withBearer sends a request with only an Authorization header (no cookies).
func withBearer(t *testing.T, rawURL, token string, kind http.Header) *page {
	t.Helper()
	hdr := kind.Clone()
	hdr.Set("Authorization", "Bearer "+token)
	return newBrowser(t).do(http.MethodGet, rawURL, hdr, nil)
}

// forgeJWT signs claims as an at+jwt under the given kid with an RSA key
// the IdP never had.
func forgeJWT(kid string, claims map[string]any) string {
	return oidctest.NewRSAKey(kid, 2).Sign(claims, "at+jwt")
}

// idpKid is the kid of the IdP's signing key.
func idpKid(t *testing.T, i *idp) string {
	t.Helper()
	resp, err := http.Get(i.Issuer + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("reading the IdP's JWKS: %v", err)
	}
	return set.Keys[0].Kid
}

// clientCredentialsToken gets a machine token for a client from the IdP.
func clientCredentialsToken(t *testing.T, i *idp, id, secret string) string {
	t.Helper()
	resp, err := http.PostForm(i.Issuer+"/oauth/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if out.AccessToken == "" {
		t.Fatalf("client_credentials for %s: %s %s", id, resp.Status, out.Error)
	}
	return out.AccessToken
}

// tamperSignature changes one character in the middle of a JWT's signature.
func tamperSignature(tok string) string {
	i := strings.LastIndex(tok, ".") + 20
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// checkForbidden asserts a 403 for a signed-in user: an HTML page with a
// sign-out link for a navigation, JSON for an API call, never a redirect and
// never a cleared session.
func checkForbidden(t *testing.T, what string, p *page, nav bool) {
	t.Helper()
	if p.Status != http.StatusForbidden {
		t.Errorf("%s: want 403, got %s", what, p)
		return
	}
	if p.location() != "" {
		t.Errorf("%s: 403 with a Location header %q", what, p.location())
	}
	if d := deletedCookies(p.SetCookies); len(d) > 0 {
		t.Errorf("%s: a 403 clears cookies %v; the user is still signed in", what, d)
	}
	ct := p.Header.Get("Content-Type")
	if nav {
		if !strings.HasPrefix(ct, "text/html") || !strings.Contains(p.Body, `href="/auth/logout"`) {
			t.Errorf("%s: want an HTML page with a sign-out link, got %q %s", what, ct, p)
		}
		return
	}
	var body map[string]any
	if !strings.HasPrefix(ct, "application/json") || json.Unmarshal([]byte(p.Body), &body) != nil || body["error"] != "forbidden" {
		t.Errorf("%s: want a JSON error \"forbidden\", got %q %s", what, ct, p)
	}
}

// ---------------------------------------------------------------- require

// TestRequireRulesPerPath: equality, array membership, globs, a nested claim
// and several lines that must all hold, each on its own path; the rest of the
// site only needs a session. A denied user gets 403 (HTML or JSON), never a
// redirect loop, and stays signed in. The same Caddy serves the session info
// endpoint (item checks below) and a second site with handle_errors.
func TestRequireRulesPerPath(t *testing.T) {
	port, errPort := freePort(t), freePort(t)
	app, errApp := origin(port), origin(errPort)
	i := startIdP(t, idpOptions{clients: []idpClient{registration(clientID, clientSecret, port, errPort)}})
	up := newUpstream(t)
	common := func(extra ...string) string { return oidcBlock(i.Issuer, clientID, clientSecret, extra...) }
	area := func(path string, rules ...string) string {
		return fmt.Sprintf(`
	handle %s/* {
		%s
		respond "%s {http.auth.user.id}"
	}`, path, common(rules...), strings.TrimPrefix(path, "/"))
	}
	site := fmt.Sprintf(`
http://127.0.0.1:%d {
	%s%s%s%s%s
	handle {
		%s
		handle /echo {
			reverse_proxy %s
		}
		handle {
			respond "hello {http.auth.user.id} roles={http.auth.user.roles} oid={http.auth.user.oid} country={http.auth.user.address.country}"
		}
	}
}
`, port,
		area("/admin", "require roles admin"),
		area("/org1", "require oid org_1"),
		area("/staff", "require email *@example.com"),
		area("/nl", "require address.country NL"),
		area("/editors", "require roles admin editor", "require oid org_2"),
		common("pass_access_token"), up)
	errSite := fmt.Sprintf(`
http://127.0.0.1:%d {
	handle_errors {
		respond "custom {http.error.status_code}: {http.error.message}"
	}
	%s
	respond "admins {http.auth.user.id}"
}
`, errPort, common("require roles admin"))
	startSites(t, app+"/", site, errSite)

	// Bob starts at a page he may not see: one login, then a 403 page.
	bob := newBrowser(t)
	j := bob.login(app+"/admin/report", "bob", "bob-password")
	callbacks := 0
	for _, p := range j.chain {
		if p.URL.Path == "/auth/callback" {
			callbacks++
		}
	}
	if callbacks != 1 || len(j.chain) > 8 {
		t.Errorf("bob's login should pass the callback once and end: %d callbacks\n%s", callbacks, describeChain(j.chain))
	}
	checkForbidden(t, "bob at /admin after login", j.final, true)

	alice, carol := newBrowser(t), newBrowser(t)
	for b, user := range map[*browser]string{alice: "alice", carol: "carol"} {
		if j := b.login(app+"/", user, user+"-password"); j.final.Status != http.StatusOK {
			t.Fatalf("%s's login:\n%s", user, describeChain(j.chain))
		}
	}

	users := map[string]*browser{"alice": alice, "bob": bob, "carol": carol}
	subs := map[string]string{"alice": "usr_alice", "bob": "usr_bob", "carol": "usr_carol"}
	matrix := []struct {
		path    string
		allowed map[string]bool
	}{
		{"/admin/x", map[string]bool{"alice": true}},                              // array contains
		{"/org1/x", map[string]bool{"alice": true}},                               // equality
		{"/staff/x", map[string]bool{"alice": true, "carol": true}},               // glob
		{"/nl/x", map[string]bool{"alice": true}},                                 // nested claim
		{"/editors/x", map[string]bool{"carol": true}},                            // two lines, both must hold
		{"/anything", map[string]bool{"alice": true, "bob": true, "carol": true}}, // no rule
	}
	for _, row := range matrix {
		for name, b := range users {
			what := name + " at " + row.path
			if row.allowed[name] {
				for _, p := range []*page{b.navigate(app + row.path), b.do(http.MethodGet, app+row.path, apiCall, nil)} {
					if p.Status != http.StatusOK || !strings.Contains(p.Body, subs[name]) {
						t.Errorf("%s: want 200, got %s", what, p)
					}
				}
				continue
			}
			checkForbidden(t, what+" (navigation)", b.navigate(app+row.path), true)
			checkForbidden(t, what+" (API)", b.do(http.MethodGet, app+row.path, apiCall, nil), false)
		}
	}

	// Placeholders: arrays joined with commas, nested claims by dotted name.
	for name, want := range map[string]string{
		"alice": "hello usr_alice roles=admin oid=org_1 country=NL",
		"carol": "hello usr_carol roles=editor,viewer oid=org_2 country=DE",
	} {
		if p := users[name].navigate(app + "/"); !strings.Contains(p.Body, want) {
			t.Errorf("%s's placeholders: want %q, got %s", name, want, p)
		}
	}

	// The 403 page's link signs bob out so he can use another account.
	if p := bob.navigate(app + "/auth/logout"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oidc/logout") {
		t.Errorf("the sign-out link of the 403 page: %s", p)
	}

	t.Run("session info", func(t *testing.T) {
		token := passedToken(t, alice, app+"/echo")
		for kind, hdr := range map[string]http.Header{"navigation": navigation, "API": apiCall} {
			p := alice.do(http.MethodGet, app+"/auth/session", hdr, nil)
			if p.Status != http.StatusOK || !strings.HasPrefix(p.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("/auth/session (%s) with a session: %s", kind, p)
			}
			var info struct {
				Sub    string         `json:"sub"`
				Claims map[string]any `json:"claims"`
				Sess   struct {
					ExpiresAt int64 `json:"expires_at"`
				} `json:"session"`
				ATExpiresAt int64 `json:"access_token_expires_at"`
			}
			if err := json.Unmarshal([]byte(p.Body), &info); err != nil {
				t.Fatalf("/auth/session body %q: %v", p.Body, err)
			}
			now := time.Now().Unix()
			if info.Sub != aliceSub || info.Claims["email"] != aliceEmail {
				t.Errorf("/auth/session (%s): sub %q email %v, body %s", kind, info.Sub, info.Claims["email"], p.Body)
			}
			if info.Sess.ExpiresAt < now+23*3600 || info.Sess.ExpiresAt > now+24*3600+60 {
				t.Errorf("/auth/session (%s): session.expires_at %d, want about 24h from now (%d)", kind, info.Sess.ExpiresAt, now)
			}
			if exp := int64(jwtClaims(t, token)["exp"].(float64)); info.ATExpiresAt != exp {
				t.Errorf("/auth/session (%s): access_token_expires_at %d, want the token's exp %d", kind, info.ATExpiresAt, exp)
			}
			if strings.Contains(p.Body, token) || jwtShape.MatchString(p.Body) {
				t.Errorf("/auth/session (%s) reveals a token: %s", kind, p.Body)
			}
			for _, word := range []string{"refresh_token", `"access_token"`, "id_token"} {
				if strings.Contains(p.Body, word) {
					t.Errorf("/auth/session (%s) mentions %s: %s", kind, word, p.Body)
				}
			}
			if cc := p.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("/auth/session (%s): Cache-Control %q, want no-store", kind, cc)
			}
		}
	})

	t.Run("session info without a session", func(t *testing.T) {
		// 401 JSON, even for a navigation; never a redirect.
		var htmlFor []string
		for _, kind := range []string{"API", "navigation"} {
			hdr := map[string]http.Header{"navigation": navigation, "API": apiCall}[kind]
			p := newBrowser(t).do(http.MethodGet, app+"/auth/session", hdr, nil)
			if p.Status != http.StatusUnauthorized || p.location() != "" || len(liveCookies(p.SetCookies)) > 0 {
				t.Errorf("/auth/session (%s) without a session: want 401, no redirect, no cookies, got %s", kind, p)
				continue
			}
			if !strings.HasPrefix(p.Header.Get("Content-Type"), "application/json") {
				if kind == "API" {
					t.Errorf("/auth/session (API) without a session: want JSON, got %q %s", p.Header.Get("Content-Type"), p)
				}
				htmlFor = append(htmlFor, kind)
			}
		}
		if len(htmlFor) > 0 {
			t.Errorf("/auth/session without a session answered HTML, not JSON, for: %v", htmlFor)
		}
	})

	t.Run("handle_errors", func(t *testing.T) {
		// Same client and cookie secret: the session of the first site works here.
		carolPage := carol.navigate(errApp + "/")
		const want403 = "custom 403: You are signed in, but this account may not access this page."
		if carolPage.Status != http.StatusForbidden || strings.TrimSpace(carolPage.Body) != want403 {
			t.Errorf("denied user on a site with handle_errors: want 403 %q, got %s", want403, carolPage)
		}
		if p := carol.do(http.MethodGet, errApp+"/", apiCall, nil); p.Status != http.StatusForbidden || !strings.HasPrefix(p.Body, "custom 403: ") {
			t.Errorf("denied API call on a site with handle_errors: %s", p)
		}
		if p := alice.navigate(errApp + "/"); p.Status != http.StatusOK || !strings.Contains(p.Body, "admins usr_alice") {
			t.Errorf("allowed user on a site with handle_errors: %s", p)
		}
		if p := newBrowser(t).do(http.MethodGet, errApp+"/", apiCall, nil); p.Status != http.StatusUnauthorized || !strings.HasPrefix(p.Body, "custom 401: ") {
			t.Errorf("unauthenticated API call on a site with handle_errors: want the custom 401, got %s", p)
		}
		if p := newBrowser(t).navigate(errApp + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize") {
			t.Errorf("unauthenticated navigation on a site with handle_errors: want the login redirect, got %s", p)
		}
	})
}

// ---------------------------------------------------------------- upstream

// TestIdentityReachesUpstream: header_up with the identity placeholders gives
// the upstream the signed-in user; identity headers a client forges never
// arrive; pass_access_token hands over the current access token, and after a
// refresh the new one.
func TestIdentityReachesUpstream(t *testing.T) {
	t.Parallel()
	const ttl = 4 * time.Second
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{accessTTL: ttl, clients: []idpClient{registration(clientID, clientSecret, port)}})
	up := newUpstream(t)
	startSites(t, app+"/", fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	reverse_proxy %s {
		header_up X-Auth-User {http.auth.user.id}
		header_up X-Auth-Email {http.auth.user.email}
		header_up X-Auth-Roles {http.auth.user.roles}
		header_up X-Auth-Country {http.auth.user.address.country}
	}
}
`, port, oidcBlock(i.Issuer, clientID, clientSecret, "pass_access_token", "session_info_path /api/me"), up))

	b := newBrowser(t)
	if j := b.login(app+"/start", "carol", "carol-password"); j.final.Status != http.StatusOK {
		t.Fatalf("carol's login:\n%s", describeChain(j.chain))
	}

	forged := apiCall.Clone()
	for k, v := range map[string]string{
		"X-Auth-User":      "mallory",
		"X-Auth-Email":     "mallory@evil.example",
		"X-Auth-Roles":     "admin-mallory",
		"X-Forwarded-User": "mallory",
		"Remote-User":      "mallory",
		"X-Remote-User":    "mallory",
		"X-User-Id":        "mallory",
		"X-Oidc-Sub":       "mallory",
		"Authorization":    "Bearer mallory",
	} {
		forged.Set(k, v)
	}
	forged["X_Auth_User"] = []string{"mallory"} // not canonical: sent as written
	e := echoed(t, b.do(http.MethodGet, app+"/whoami", forged, nil))
	for name, want := range map[string]string{
		"X-Auth-User":    "usr_carol",
		"X-Auth-Email":   "carol@example.com",
		"X-Auth-Roles":   "editor,viewer",
		"X-Auth-Country": "DE",
	} {
		if got := e.Header[name]; len(got) != 1 || got[0] != want {
			t.Errorf("upstream got %s = %q, want [%q]", name, got, want)
		}
	}
	for name, vals := range e.Header {
		for _, v := range vals {
			if strings.Contains(v, "mallory") {
				t.Errorf("a forged header reached the upstream: %s: %s", name, v)
			}
		}
	}

	first := passedToken(t, b, app+"/echo")
	claims := jwtClaims(t, first)
	if claims["sub"] != "usr_carol" {
		t.Errorf("the passed access token has sub %v, want usr_carol", claims["sub"])
	}
	if aud, _ := claims["aud"].([]any); len(aud) == 0 || aud[0] != clientID {
		t.Errorf("the passed access token has aud %v, want [%s]", claims["aud"], clientID)
	}

	// session_info_path moves the info endpoint; the old path is the app's.
	if p := b.do(http.MethodGet, app+"/api/me", apiCall, nil); p.Status != http.StatusOK || !strings.Contains(p.Body, `"sub":"usr_carol"`) {
		t.Errorf("session_info_path /api/me: %s", p)
	}
	if e := echoed(t, b.do(http.MethodGet, app+"/auth/session", apiCall, nil)); e.Path != "/auth/session" {
		t.Errorf("/auth/session should reach the upstream when session_info_path is moved, got path %q", e.Path)
	}

	// Past the token's expiry the module refreshes and passes the new token.
	exp := time.Unix(int64(claims["exp"].(float64)), 0)
	time.Sleep(time.Until(exp) + 700*time.Millisecond)
	second := passedToken(t, b, app+"/echo")
	if second == first {
		t.Fatalf("after the access token expired the upstream still gets the old one")
	}
	c2 := jwtClaims(t, second)
	if c2["sub"] != "usr_carol" || int64(c2["exp"].(float64)) <= time.Now().Unix() {
		t.Errorf("the refreshed token: sub %v exp %v (now %d)", c2["sub"], c2["exp"], time.Now().Unix())
	}
	if n := i.stats(t).Grants["refresh_token"]; n < 1 {
		t.Errorf("no refresh at the IdP (grants %v)", i.stats(t).Grants)
	}
}

// ---------------------------------------------------------------- bearer

// TestBearerMode: with `bearer`, an access token of this IdP for this client
// authenticates an API client without cookies; expired, tampered, forged and
// foreign-audience tokens get 401 invalid_token; `bearer app-b` accepts app-b's
// tokens; without `bearer` a token is no login.
func TestBearerMode(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Second
	portA, portB, portAB, portNo := freePort(t), freePort(t), freePort(t), freePort(t)
	appA, appB, appAB, appNo := origin(portA), origin(portB), origin(portAB), origin(portNo)
	regA := registration("app-a", "secret-a", portA)
	regA.GrantTypes = []string{"authorization_code", "refresh_token", "client_credentials"}
	i := startIdP(t, idpOptions{accessTTL: ttl, clients: []idpClient{regA, registration("app-b", "secret-b", portB)}})
	up := newUpstream(t)
	site := func(port int, name, id, secret string, extra ...string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	handle /echo {
		reverse_proxy %s
	}
	handle {
		respond "%s {http.auth.user.id} {http.auth.user.email}"
	}
}
`, port, oidcBlock(i.Issuer, id, secret, extra...), up, name)
	}
	startSites(t, appA+"/",
		site(portA, "A", "app-a", "secret-a", "bearer", "pass_access_token"),
		site(portB, "B", "app-b", "secret-b", "pass_access_token"),
		site(portAB, "AB", "app-a", "secret-a", "bearer app-b"),
		site(portNo, "NO", "app-a", "secret-a"),
	)

	b := newBrowser(t)
	if j := b.login(appA+"/", "alice", "alice-password"); j.final.Status != http.StatusOK {
		t.Fatalf("login at A:\n%s", describeChain(j.chain))
	}
	token := passedToken(t, b, appA+"/echo")

	refused := func(what string, p *page) {
		t.Helper()
		if p.Status != http.StatusUnauthorized || !strings.Contains(p.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: want 401 with error=\"invalid_token\", got WWW-Authenticate %q %s", what, p.Header.Get("WWW-Authenticate"), p)
		}
		if p.location() != "" || len(p.SetCookies) > 0 {
			t.Errorf("%s: a bearer answer must not redirect or set cookies: %s %v", what, p, cookieNames(p.SetCookies))
		}
	}

	for kind, hdr := range map[string]http.Header{"API": apiCall, "navigation": navigation} {
		p := withBearer(t, appA+"/whoami", token, hdr)
		// An access token carries no email (the ID token does), so only
		// the access token's claims are placeholders in bearer mode.
		if p.Status != http.StatusOK || !strings.HasPrefix(p.Body, "A usr_alice ") {
			t.Errorf("bearer token (%s): want 200 as alice, got %s", kind, p)
		}
		if len(p.Header.Values("Set-Cookie")) > 0 {
			t.Errorf("bearer request (%s) got cookies: %q", kind, p.Header.Values("Set-Cookie"))
		}
	}
	if p := withBearer(t, appA+"/auth/session", token, apiCall); p.Status != http.StatusOK ||
		!strings.Contains(p.Body, `"authenticated_by":"bearer"`) || !strings.Contains(p.Body, `"sub":"usr_alice"`) || strings.Contains(p.Body, token) {
		t.Errorf("/auth/session with a bearer token: %s", p)
	}

	// A machine token of the same client (sub = client_id) is accepted too.
	if p := withBearer(t, appA+"/whoami", clientCredentialsToken(t, i, "app-a", "secret-a"), apiCall); p.Status != http.StatusOK || !strings.HasPrefix(p.Body, "A app-a") {
		t.Errorf("client_credentials token of app-a: %s", p)
	}

	refused("tampered signature", withBearer(t, appA+"/whoami", tamperSignature(token), apiCall))
	parts := strings.Split(token, ".")
	claims := jwtClaims(t, token)
	claims["sub"] = "usr_bob"
	payload, _ := json.Marshal(claims)
	refused("payload changed, signature kept", withBearer(t, appA+"/whoami", parts[0]+"."+base64.RawURLEncoding.EncodeToString(payload)+"."+parts[2], apiCall))
	refused("not a JWT", withBearer(t, appA+"/whoami", "opaque-token-value", apiCall))

	// Forged tokens: another RSA key under the IdP's kid.
	kid := idpKid(t, i)
	now := time.Now().Unix()
	forgedClaims := func(iss string) map[string]any {
		return map[string]any{"iss": iss, "sub": "usr_alice", "aud": []string{"app-a"}, "iat": now, "exp": now + 300, "client_id": "app-a"}
	}
	refused("forged token with a wrong issuer", withBearer(t, appA+"/whoami", forgeJWT(kid, forgedClaims("http://evil.example")), apiCall))
	refused("forged token with the right issuer", withBearer(t, appA+"/whoami", forgeJWT(kid, forgedClaims(i.Issuer)), apiCall))

	// A token of another client: refused unless its audience is listed.
	if j := b.login(appB+"/", "alice", "alice-password"); j.final.Status != http.StatusOK {
		t.Fatalf("login at B:\n%s", describeChain(j.chain))
	}
	tokenB := passedToken(t, b, appB+"/echo")
	if aud, _ := jwtClaims(t, tokenB)["aud"].([]any); len(aud) != 1 || aud[0] != "app-b" {
		t.Fatalf("app-b's token has aud %v", aud)
	}
	refused("app-b's token at an app-a site", withBearer(t, appA+"/whoami", tokenB, apiCall))
	if p := withBearer(t, appAB+"/whoami", tokenB, apiCall); p.Status != http.StatusOK || !strings.HasPrefix(p.Body, "AB usr_alice") {
		t.Errorf("app-b's token where `bearer app-b` is set: want 200, got %s", p)
	}
	t.Run("accepted audiences are per site", func(t *testing.T) {
		p := withBearer(t, appA+"/whoami", tokenB, apiCall)
		if p.Status == http.StatusOK {
			t.Fatalf("once a `bearer app-b` site accepted app-b's token, a plain `bearer` site of the same client accepts it too: %s", p)
		}
		refused("app-b's token at an app-a site after another site accepted it", p)
	})

	// Without `bearer`, a bearer token is no login.
	if p := withBearer(t, appNo+"/whoami", token, apiCall); p.Status != http.StatusUnauthorized || p.location() != "" {
		t.Errorf("bearer token at a site without `bearer` (API): want 401, got %s", p)
	}
	if p := withBearer(t, appNo+"/whoami", token, navigation); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize") {
		t.Errorf("bearer token at a site without `bearer` (navigation): want a login redirect, got %s", p)
	}

	t.Run("ID token is no access token", func(t *testing.T) {
		// The ID token travels in the logout URL (id_token_hint); it must not
		// work as an API credential.
		other := newBrowser(t)
		if j := other.login(appA+"/", "alice", "alice-password"); j.final.Status != http.StatusOK {
			t.Fatalf("login:\n%s", describeChain(j.chain))
		}
		out := other.navigate(appA + "/auth/logout")
		loc, err := url.Parse(out.location())
		if err != nil || loc.Query().Get("id_token_hint") == "" {
			t.Fatalf("no id_token_hint in the logout redirect: %s", out)
		}
		idToken := loc.Query().Get("id_token_hint")
		p := withBearer(t, appA+"/whoami", idToken, apiCall)
		if p.Status == http.StatusOK {
			head, _ := base64.RawURLEncoding.DecodeString(strings.Split(idToken, ".")[0])
			t.Fatalf("bearer mode accepts the ID token (header %s, aud %v, nonce present: %v) as an access token: %s",
				head, jwtClaims(t, idToken)["aud"], jwtClaims(t, idToken)["nonce"] != nil, p)
		}
		refused("ID token as bearer", p)
	})

	// Past its expiry the token is refused.
	exp := time.Unix(int64(jwtClaims(t, token)["exp"].(float64)), 0)
	time.Sleep(time.Until(exp) + 700*time.Millisecond)
	refused("expired token", withBearer(t, appA+"/whoami", token, apiCall))
}
