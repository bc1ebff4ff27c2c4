//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The core journey (login, protected page, expiry and refresh, logout) against
// every IdP profile of idp/idp.mjs, each standing in for a family of real
// providers (see docs/idp-support.md).

// profileInfo mirrors GET /__test/profile of the test IdP.
type profileInfo struct {
	Profile             string         `json:"profile"`
	SigningAlg          string         `json:"signing_alg"`
	ActiveKid           string         `json:"active_kid"`
	PublishedKids       []string       `json:"published_kids"`
	JWKSFetches         int            `json:"jwks_fetches"`
	TokenAuth           map[string]int `json:"token_auth"`
	AccessTokens        map[string]int `json:"access_tokens"`
	RefreshTokensIssued int            `json:"refresh_tokens_issued"`
	RefreshAnswers      map[string]int `json:"refresh_answers"`
}

func (i *idp) profileInfo(t *testing.T) profileInfo {
	t.Helper()
	var p profileInfo
	profileGetJSON(t, i.Issuer+"/__test/profile", &p)
	return p
}

// rotateSigningKey makes the IdP sign with a fresh key from now on; it
// returns the new kid.
func (i *idp) rotateSigningKey(t *testing.T) string {
	t.Helper()
	resp, err := http.Post(i.Issuer+"/__test/rotate-key", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatalf("rotating the IdP's key: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Kid string `json:"kid"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || out.Kid == "" {
		t.Fatalf("rotating the IdP's key: %s", resp.Status)
	}
	return out.Kid
}

func profileGetJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := plainClient().Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// discoveryDoc is the IdP's discovery document as the module reads it.
func discoveryDoc(t *testing.T, issuer string) map[string]any {
	t.Helper()
	var d map[string]any
	profileGetJSON(t, issuer+"/.well-known/openid-configuration", &d)
	return d
}

// profileStackOptions describe one app in front of an IdP of some profile.
type profileStackOptions struct {
	profile   string
	accessTTL time.Duration
	extra     string // more lines inside the oidc_auth block; {idp} is the IdP's issuer
}

// newProfileStack starts an IdP with the given profile and a Caddy whose
// site is the usual test site (siteConfig) for it.
func newProfileStack(t *testing.T, opts profileStackOptions) *stack {
	t.Helper()
	s := &stack{t: t, dir: t.TempDir(), opts: stackOptions{accessTTL: opts.accessTTL, extra: opts.extra}}
	s.appPort = freePort(t)
	s.app = fmt.Sprintf("http://127.0.0.1:%d", s.appPort)
	s.upstream = httptest.NewServer(http.HandlerFunc(upstreamHandler))
	t.Cleanup(s.upstream.Close)
	s.idp = startIdP(t, idpOptions{
		accessTTL: opts.accessTTL,
		clients:   []idpClient{registration(clientID, clientSecret, s.appPort)},
		profile:   opts.profile,
	})
	adminPort := freePort(t)
	cf := globalOptions(adminPort, filepath.Join(s.dir, "storage")) + siteConfig{
		port:         s.appPort,
		issuer:       s.idp.Issuer,
		clientID:     clientID,
		clientSecret: clientSecret,
		extra:        strings.ReplaceAll(opts.extra, "{idp}", s.idp.Issuer),
		upstream:     s.upstream.URL,
	}.block()
	s.caddy = startCaddy(t, s.dir, adminPort, cf, s.app+"/signed-out")
	return s
}

// sessionInfo reads /auth/session as an API call.
func sessionInfo(t *testing.T, b *browser, app string) (int, map[string]any) {
	t.Helper()
	p := b.do(http.MethodGet, app+"/auth/session", apiCall, nil)
	var info map[string]any
	if p.Status == http.StatusOK {
		if err := json.Unmarshal([]byte(p.Body), &info); err != nil {
			t.Fatalf("/auth/session is not JSON: %s", p)
		}
	}
	return p.Status, info
}

// profileCase is what one profile is expected to do.
type profileCase struct {
	profile    string
	refresh    bool   // the IdP issues refresh tokens
	endSession bool   // discovery announces end_session_endpoint
	alg        string // signing alg of its tokens
	jwtAccess  bool   // access tokens are JWTs
	check      func(t *testing.T, s *stack, b *browser, loggedIn time.Time)
}

var profileCases = []profileCase{
	{profile: "scalekit", refresh: true, endSession: true, alg: "RS256", jwtAccess: true,
		check: func(t *testing.T, s *stack, _ *browser, _ time.Time) {
			if got := s.idp.profileInfo(t).RefreshAnswers["rotated"]; got < 1 {
				t.Errorf("the IdP rotated no refresh token: %+v", s.idp.profileInfo(t))
			}
		}},
	{profile: "opaque", refresh: true, endSession: true, alg: "RS256", jwtAccess: false},
	{profile: "no-end-session", refresh: true, endSession: false, alg: "RS256", jwtAccess: true},
	{profile: "no-refresh", refresh: false, endSession: true, alg: "RS256", jwtAccess: true},
	{profile: "no-rotation", refresh: true, endSession: true, alg: "RS256", jwtAccess: true,
		check: func(t *testing.T, s *stack, b *browser, _ time.Time) {
			// The refresh token is used again for a second refresh.
			time.Sleep(profileTTL + time.Second)
			if p := b.navigate(s.app + "/after-second-expiry"); p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
				t.Fatalf("second refresh with the same (unrotated) refresh token: %s", p)
			}
			info := s.idp.profileInfo(t)
			if info.RefreshAnswers["rotated"] != 0 || info.RefreshAnswers["same"]+info.RefreshAnswers["none"] < 2 {
				t.Errorf("refresh answers %v, want two refreshes without a new refresh token", info.RefreshAnswers)
			}
			if st := s.idp.stats(t); st.GrantErrors["refresh_token"] != 0 {
				t.Errorf("refresh errors at the IdP: %v", st.GrantErrors)
			}
		}},
	{profile: "basic-only", refresh: true, endSession: true, alg: "RS256", jwtAccess: true,
		check: func(t *testing.T, s *stack, _ *browser, _ time.Time) {
			d := discoveryDoc(t, s.idp.Issuer)
			if m, _ := d["token_endpoint_auth_methods_supported"].([]any); len(m) != 1 || m[0] != "client_secret_basic" {
				t.Errorf("discovery announces %v, want only client_secret_basic", d["token_endpoint_auth_methods_supported"])
			}
			info := s.idp.profileInfo(t)
			if info.TokenAuth["basic"] < 2 || info.TokenAuth["post"] != 0 {
				t.Errorf("token endpoint client authentication: %v, want basic only (code + refresh)", info.TokenAuth)
			}
		}},
	{profile: "resource-server", refresh: true, endSession: true, alg: "RS256", jwtAccess: true},
	{profile: "es256", refresh: true, endSession: true, alg: "ES256", jwtAccess: true},
	{profile: "multi-key", refresh: true, endSession: true, alg: "RS256", jwtAccess: true,
		check: func(t *testing.T, s *stack, b *browser, loggedIn time.Time) {
			before := s.idp.profileInfo(t)
			if len(before.PublishedKids) < 3 {
				t.Fatalf("the JWKS has %d keys, want several", len(before.PublishedKids))
			}
			// The IdP rotates its signing key mid-session: the next refresh
			// brings tokens with a kid the module has not seen, which it
			// fetches at once (no cooldown for tokens from the IdP). Wait
			// for the current access token to expire, so a refresh comes.
			kid := s.idp.rotateSigningKey(t)
			time.Sleep(profileTTL + time.Second)
			if p := b.navigate(s.app + "/after-rotation"); p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
				t.Fatalf("after the IdP's key rotation: %s", p)
			}
			after := s.idp.profileInfo(t)
			if after.ActiveKid != kid || after.PublishedKids[0] != kid {
				t.Errorf("the IdP signs with %s (published %v), want the new key %s", after.ActiveKid, after.PublishedKids, kid)
			}
			if after.JWKSFetches <= before.JWKSFetches {
				t.Errorf("the module did not refetch the JWKS for the new kid (fetches %d -> %d)", before.JWKSFetches, after.JWKSFetches)
			}
			if after.RefreshAnswers["rotated"] < 2 {
				t.Errorf("want a refresh after the rotation, got %v", after.RefreshAnswers)
			}
			if status, _ := sessionInfo(t, b, s.app); status != http.StatusOK {
				t.Errorf("/auth/session after the key rotation: %d", status)
			}
		}},
}

// profileTTL is the access token lifetime of the profile journeys.
const profileTTL = 4 * time.Second

// TestIdPProfiles runs the core journey against every IdP profile.
func TestIdPProfiles(t *testing.T) {
	for _, pc := range profileCases {
		t.Run(pc.profile, func(t *testing.T) {
			t.Parallel()
			runProfileJourney(t, pc)
		})
	}
}

func runProfileJourney(t *testing.T, pc profileCase) {
	s := newProfileStack(t, profileStackOptions{profile: pc.profile, accessTTL: profileTTL})

	// The IdP is what the profile says.
	d := discoveryDoc(t, s.idp.Issuer)
	if _, ok := d["end_session_endpoint"]; ok != pc.endSession {
		t.Fatalf("discovery end_session_endpoint present=%v, want %v", ok, pc.endSession)
	}
	if algs, _ := d["id_token_signing_alg_values_supported"].([]any); len(algs) == 0 || algs[0] != pc.alg {
		t.Fatalf("discovery id_token_signing_alg_values_supported = %v, want %s", d["id_token_signing_alg_values_supported"], pc.alg)
	}

	// Login over HTTP; the protected page shows the user.
	b := newBrowser(t)
	j := s.mustLogin(b, s.app+"/profile/page?x=1")
	loggedIn := time.Now()
	if got := j.final.URL.Path + "?" + j.final.URL.RawQuery; got != "/profile/page?x=1" {
		t.Errorf("after login the user is at %s\n%s", got, describeChain(j.chain))
	}
	if want := "hello " + aliceSub + " " + aliceEmail; !strings.Contains(j.final.Body, want) {
		t.Fatalf("protected page says %q, want %q", j.final.Body, want)
	}
	status, info := sessionInfo(t, b, s.app)
	if status != http.StatusOK || info["sub"] != aliceSub || info["authenticated_by"] != "session" {
		t.Fatalf("/auth/session: %d %v", status, info)
	}
	pi := s.idp.profileInfo(t)
	if pi.Profile != pc.profile || pi.SigningAlg != pc.alg {
		t.Fatalf("IdP profile %q alg %q, want %q %q", pi.Profile, pi.SigningAlg, pc.profile, pc.alg)
	}
	if pc.jwtAccess && (pi.AccessTokens["jwt"] == 0 || pi.AccessTokens["opaque"] != 0) ||
		!pc.jwtAccess && (pi.AccessTokens["opaque"] == 0 || pi.AccessTokens["jwt"] != 0) {
		t.Fatalf("access tokens handed out: %v (want JWTs: %v)", pi.AccessTokens, pc.jwtAccess)
	}
	if (pi.RefreshTokensIssued > 0) != pc.refresh {
		t.Fatalf("refresh tokens issued: %d, want some: %v", pi.RefreshTokensIssued, pc.refresh)
	}

	// The access token expires.
	cookies := sessionCookies(b, s.app)
	before := s.idp.stats(t)
	time.Sleep(profileTTL + time.Second)
	if pc.refresh {
		p := b.navigate(s.app + "/after-expiry")
		if p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
			t.Fatalf("after expiry, want a transparent refresh (200), got %s", p)
		}
		api := b.do(http.MethodGet, s.app+"/echo/after-refresh", apiCall, nil)
		if api.Status != http.StatusOK {
			t.Fatalf("API call after the refresh: %s", api)
		}
		after := s.idp.stats(t)
		if n := after.Grants["refresh_token"] - before.Grants["refresh_token"]; n != 1 {
			t.Errorf("refresh grants at the IdP: %d, want 1 (errors %v)", n, after.GrantErrors)
		}
	} else {
		// No refresh token: the session ends cleanly at expiry.
		api := b.withCookies(s.app, cookies).do(http.MethodGet, s.app+"/echo/after-expiry", apiCall, nil)
		if api.Status != http.StatusUnauthorized {
			t.Errorf("API call after expiry without a refresh token: want 401, got %s", api)
		}
		p := b.navigate(s.app + "/after-expiry")
		if p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer+"/oauth/authorize?") {
			t.Fatalf("navigation after expiry without a refresh token: want 302 to authorize, got %s", p)
		}
		if left := sessionCookies(b, s.app); len(left) > 0 {
			for _, c := range left {
				if !strings.Contains(c.Name, "_s_") { // login state cookies of the new attempt
					t.Errorf("session cookie %s kept after the session ended", c.Name)
				}
			}
		}
		if n := s.idp.stats(t).Grants["refresh_token"]; n != 0 {
			t.Errorf("refresh grants at the IdP: %d, want none", n)
		}
		// Signing in again works (the IdP session lets it through without a form).
		j := s.mustLogin(b, s.app+"/again")
		if !strings.Contains(j.final.Body, "hello "+aliceSub) {
			t.Fatalf("second login: %s", j.final)
		}
	}

	if pc.check != nil {
		pc.check(t, s, b, loggedIn)
	}

	// Logout.
	old := sessionCookies(b, s.app)
	p := b.navigate(s.app + "/auth/logout")
	if p.Status != http.StatusFound {
		t.Fatalf("logout: want 302, got %s", p)
	}
	loc, err := url.Parse(p.location())
	if err != nil {
		t.Fatal(err)
	}
	deleted := deletedCookies(p.SetCookies)
	for _, c := range old {
		if !deleted[c.Name] {
			t.Errorf("logout does not clear cookie %s (cleared: %v)", c.Name, deleted)
		}
	}
	if left := sessionCookies(b, s.app); len(left) > 0 {
		t.Errorf("cookies left after logout: %v", cookieNames(left))
	}
	if pc.endSession {
		if got := loc.Scheme + "://" + loc.Host + loc.Path; got != s.idp.Issuer+"/oidc/logout" {
			t.Fatalf("logout goes to %s, want the end_session_endpoint", got)
		}
		if loc.Query().Get("id_token_hint") == "" || loc.Query().Get("post_logout_redirect_uri") != s.app+"/signed-out" {
			t.Errorf("end session request lacks id_token_hint or post_logout_redirect_uri: %s", loc)
		}
		chain := b.follow(submitLogoutForm(t, b, b.navigate(loc.String())))
		if final := chain[len(chain)-1]; final.URL.Path != "/signed-out" || final.Status != http.StatusOK {
			t.Errorf("IdP logout did not end on /signed-out:\n%s", describeChain(chain))
		}
	} else {
		// No end_session_endpoint: a local logout straight to the
		// post_logout_redirect_uri.
		if p.location() != s.app+"/signed-out" {
			t.Fatalf("local logout goes to %q, want %q", p.location(), s.app+"/signed-out")
		}
		if final := b.navigate(p.location()); final.Status != http.StatusOK {
			t.Errorf("post-logout page: %s", final)
		}
	}
	if r := b.withCookies(s.app, old).do(http.MethodGet, s.app+"/echo/stale", apiCall, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("API call with a copy of the logged-out cookies: want 401, got %s", r)
	}
	if r := b.navigate(s.app + "/after-logout"); r.Status != http.StatusFound || !strings.HasPrefix(r.location(), s.idp.Issuer+"/oauth/authorize?") {
		t.Errorf("navigation after logout: want 302 to authorize, got %s", r)
	}
}

// TestIdPProfileForeignAudience documents a limitation: JWT access tokens
// whose aud does not name the client (Keycloak without an audience mapper,
// Okta custom authorization servers, Auth0 with an API audience, Entra ID's
// Microsoft Graph tokens) are refused, so the login does not complete. It
// must fail cleanly: an error page, no session, no redirect loop.
func TestIdPProfileForeignAudience(t *testing.T) {
	s := newProfileStack(t, profileStackOptions{profile: "foreign-aud", accessTTL: time.Minute})
	b := newBrowser(t)
	j := b.login(s.app+"/wanted", "alice", "alice-password")
	if j.callback == nil {
		t.Fatalf("the login never reached the callback:\n%s", describeChain(j.chain))
	}
	if j.final.Status == http.StatusOK || j.final.URL.Path != "/auth/callback" {
		t.Fatalf("want the callback to refuse tokens of another audience, got:\n%s", describeChain(j.chain))
	}
	if j.final.Status < 400 {
		t.Errorf("callback answered %d, want an error status", j.final.Status)
	}
	for _, c := range sessionCookies(b, s.app) {
		if !strings.Contains(c.Name, "_s_") {
			t.Errorf("a session cookie %s was set", c.Name)
		}
	}
	t.Logf("callback answer: %d %s", j.final.Status, shorten(j.final.Body, 200))
	if pi := s.idp.profileInfo(t); pi.AccessTokens["jwt"] != 1 {
		t.Errorf("access tokens handed out: %v, want one JWT", pi.AccessTokens)
	}
}

// TestIdPProfileForeignAudienceAccepted: with the API's audience listed in
// access_token_audiences, the same IdP's tokens are accepted: login,
// identity, and the audience the token really carries.
func TestIdPProfileForeignAudienceAccepted(t *testing.T) {
	s := newProfileStack(t, profileStackOptions{
		profile: "foreign-aud", accessTTL: time.Minute,
		extra: "access_token_audiences {idp}/api\n\t\t\tpass_access_token",
	})
	b := newBrowser(t)
	j := b.login(s.app+"/wanted", "alice", "alice-password")
	if j.final.Status != http.StatusOK || !strings.Contains(j.final.Body, aliceSub) {
		t.Fatalf("login with access_token_audiences:\n%s", describeChain(j.chain))
	}
	status, info := sessionInfo(t, b, s.app)
	if status != http.StatusOK || info["sub"] != aliceSub {
		t.Fatalf("/auth/session: %d %v", status, info)
	}
	if aud := fmt.Sprint(info["claims"].(map[string]any)["aud"]); aud != "" && aud != "<nil>" {
		t.Logf("claims carry aud %s", aud)
	}
}
