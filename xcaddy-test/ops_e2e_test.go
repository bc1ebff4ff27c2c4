//go:build e2e

package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Operations: Prometheus metrics, logs free of secrets, cookie key rotation
// across reloads, token revocation at logout (RFC 7009), form posts kept
// through a new login, and the health endpoint and check command.

// ---------------------------------------------------------------- helpers

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// issuedSecrets mirrors GET /__test/issued of the test IdP.
type issuedSecrets struct {
	Codes         []string `json:"codes"`
	AccessTokens  []string `json:"access_tokens"`
	RefreshTokens []string `json:"refresh_tokens"`
	IDTokens      []string `json:"id_tokens"`
	LogoutTokens  []string `json:"logout_tokens"`
}

func (i *idp) issued(t *testing.T) issuedSecrets {
	t.Helper()
	var out issuedSecrets
	opsGetJSON(t, i.Issuer+"/__test/issued", &out)
	return out
}

// issuedRefreshToken mirrors one entry of GET /__test/refresh-tokens.
type issuedRefreshToken struct {
	Token    string `json:"token"`
	Sub      string `json:"sub"`
	ClientID string `json:"client_id"`
	Active   bool   `json:"active"`
}

func (i *idp) refreshTokens(t *testing.T, sub, client string) []issuedRefreshToken {
	t.Helper()
	var out []issuedRefreshToken
	opsGetJSON(t, i.Issuer+"/__test/refresh-tokens?"+url.Values{"sub": {sub}, "client_id": {client}}.Encode(), &out)
	return out
}

// revocationCalls lists the calls to the IdP's revocation endpoint.
func (i *idp) revocationCalls(t *testing.T) []struct {
	Status        int    `json:"status"`
	TokenTypeHint string `json:"token_type_hint"`
} {
	t.Helper()
	var out struct {
		Revocations []struct {
			Status        int    `json:"status"`
			TokenTypeHint string `json:"token_type_hint"`
		} `json:"revocations"`
	}
	opsGetJSON(t, i.Issuer+"/__test/stats", &out)
	return out.Revocations
}

func opsGetJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := plainClient().Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %s: decoding: %v", u, resp.Status, err)
	}
	return resp.StatusCode
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape reads Caddy's metrics from its admin endpoint.
func scrape(t *testing.T, adminAddr string) []sample {
	t.Helper()
	resp, err := plainClient().Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := sampleLine.FindStringSubmatch(sc.Text())
		if m == nil || strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, lp := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[lp[1]] = lp[2]
		}
		out = append(out, s)
	}
	return out
}

// metricSum adds up the samples of name whose labels include want.
func metricSum(samples []sample, name string, want map[string]string) float64 {
	var sum float64
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		sum += s.value
	}
	return sum
}

// metric names one counter (or histogram count) with the labels that select
// it, written name{k="v",...}.
type metric string

func (m metric) parts() (string, map[string]string) {
	name, rest, _ := strings.Cut(string(m), "{")
	labels := map[string]string{}
	for _, lp := range labelPair.FindAllStringSubmatch(rest, -1) {
		labels[lp[1]] = lp[2]
	}
	return name, labels
}

func (m metric) in(samples []sample) float64 {
	name, labels := m.parts()
	return metricSum(samples, name, labels)
}

var (
	mLoginStarted   = metric(`caddy_oidc_auth_logins_total{result="started"}`)
	mLoginCompleted = metric(`caddy_oidc_auth_logins_total{result="completed"}`)
	mLoginIdPError  = metric(`caddy_oidc_auth_logins_total{result="failed",reason="idp_error"}`)
	mRefreshOK      = metric(`caddy_oidc_auth_refreshes_total{result="ok"}`)
	mLogoutRP       = metric(`caddy_oidc_auth_logouts_total{kind="rp",result="accepted"}`)
	mLogoutBC       = metric(`caddy_oidc_auth_logouts_total{kind="backchannel",result="accepted"}`)
	mRejectRevoked  = metric(`caddy_oidc_auth_sessions_rejected_total{reason="revoked"}`)
	mTokenCalls     = metric(`caddy_oidc_auth_idp_request_duration_seconds_count{endpoint="token"}`)
	mRevokeCalls    = metric(`caddy_oidc_auth_idp_request_duration_seconds_count{endpoint="revocation"}`)
	mJWKSOK         = metric(`caddy_oidc_auth_jwks_fetches_total{reason="startup",result="ok"}`)
	allMetrics      = []metric{mLoginStarted, mLoginCompleted, mLoginIdPError, mRefreshOK, mLogoutRP, mLogoutBC, mRejectRevoked, mTokenCalls, mRevokeCalls, mJWKSOK}
)

// metricStep is what one step of a journey did to the counters.
type metricStep struct {
	what   string
	before []sample
	after  []sample
	want   map[metric]float64 // exact increase; metrics not listed must not change
}

func checkMetricStep(t *testing.T, st metricStep) {
	t.Helper()
	for _, m := range allMetrics {
		d := m.in(st.after) - m.in(st.before)
		if want := st.want[m]; d != want {
			t.Errorf("%s: %s rose by %v, want %v", st.what, m, d, want)
		}
	}
}

// secret is a value that must never reach a log.
type secret struct {
	kind, value string
}

func addSecret(list []secret, kind string, values ...string) []secret {
	for _, v := range values {
		if len(v) < 12 {
			continue
		}
		list = append(list, secret{kind, v})
		// A JWT cut short in a log still gives itself away by its signature.
		if parts := strings.Split(v, "."); len(parts) == 3 && len(parts[2]) >= 20 {
			list = append(list, secret{kind + " (signature)", parts[2]})
		}
	}
	return list
}

// logEntry is one line of Caddy's output, decoded when it is JSON.
type logEntry struct {
	raw    string
	logger string
	msg    string
	fields map[string]any
}

func caddyLogEntries(logs string) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(logs, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		e := logEntry{raw: line}
		if json.Unmarshal([]byte(line), &e.fields) == nil {
			e.logger, _ = e.fields["logger"].(string)
			e.msg, _ = e.fields["msg"].(string)
		}
		out = append(out, e)
	}
	return out
}

// ---------------------------------------------------------------- 1 and 2

// TestOpsJourneyMetricsAndLogs runs one whole journey (login, refresh, an error
// callback, RP logout, back-channel logout, replays of revoked cookies) with
// Caddy logging at DEBUG, then checks the Prometheus counters step by step and
// that no token, secret or cookie value reached any log line.
//
// The secrets reach Caddy as {env.*} placeholders, as the README recommends:
// at DEBUG, Caddy itself prints the whole JSON config ("adjusted config" of
// http.auto_https), so a secret written literally into a Caddyfile is in the
// log whatever the module does.
func TestOpsJourneyMetricsAndLogs(t *testing.T) {
	const ttl = 6 * time.Second
	port := freePort(t)
	app := origin(port)
	clientSecret := "client-secret-" + randomHex(t, 16)
	cookieSecret := "cookie-secret-" + randomHex(t, 20)
	t.Setenv("OPS_E2E_CLIENT_SECRET", clientSecret)
	t.Setenv("OPS_E2E_COOKIE_SECRET", cookieSecret)
	i := startIdP(t, idpOptions{accessTTL: ttl, clients: []idpClient{registration(clientID, clientSecret, port)}})
	dir := t.TempDir()
	admin := freePort(t)
	cfg := globalOptions(admin, filepath.Join(dir, "storage")) + siteConfig{
		port: port, issuer: i.Issuer, clientID: clientID,
		clientSecret: "{env.OPS_E2E_CLIENT_SECRET}", cookieSecret: "{env.OPS_E2E_COOKIE_SECRET}",
		upstream: newUpstream(t), extra: "pass_access_token",
	}.block()
	if !strings.Contains(cfg, "\tdebug\n") {
		t.Fatalf("the test Caddyfile does not turn on debug logging:\n%s", cfg)
	}
	c := startCaddy(t, dir, admin, cfg, app+"/signed-out")

	var steps []metricStep
	var seen []secret // values seen passing through the rig
	seen = addSecret(seen, "client secret", clientSecret)
	seen = addSecret(seen, "cookie secret", cookieSecret)
	snap := func() []sample { return scrape(t, c.adminAddr) }

	// Login.
	m0 := snap()
	b := newBrowser(t)
	j := b.login(app+"/", "alice", "alice-password")
	if j.final.Status != http.StatusOK || j.callback == nil {
		t.Fatalf("login:\n%s", describeChain(j.chain))
	}
	seen = addSecret(seen, "authorization code (callback URL)", j.callback.Query().Get("code"))
	m1 := snap()
	steps = append(steps, metricStep{what: "login", before: m0, after: m1,
		want: map[metric]float64{mLoginStarted: 1, mLoginCompleted: 1, mTokenCalls: 1, mJWKSOK: 1}})
	firstAT := passedToken(t, b, app+"/echo/first")
	seen = addSecret(seen, "access token (upstream Authorization)", firstAT)
	var info struct {
		Claims map[string]any `json:"claims"`
	}
	if p := b.do(http.MethodGet, app+"/auth/session", apiCall, nil); p.Status != http.StatusOK || json.Unmarshal([]byte(p.Body), &info) != nil {
		t.Fatalf("session info: %s", p)
	}
	sid, _ := info.Claims["sid"].(string)
	if sid == "" {
		t.Fatalf("the session has no sid: %v", info.Claims)
	}

	// Refresh: the access token is due.
	m2 := snap()
	time.Sleep(ttl)
	secondAT := passedToken(t, b, app+"/echo/after-refresh")
	if secondAT == firstAT {
		t.Fatalf("the access token was not refreshed after %s", ttl)
	}
	seen = addSecret(seen, "access token (upstream Authorization)", secondAT)
	m3 := snap()
	steps = append(steps, metricStep{what: "refresh", before: m2, after: m3,
		want: map[metric]float64{mRefreshOK: 1, mTokenCalls: 1}})

	// The IdP reports an error on the callback.
	st := b.navigate(app + "/auth/login?return_to=/after-error")
	loc, err := url.Parse(st.location())
	if err != nil || st.Status != http.StatusFound {
		t.Fatalf("login_path: %s", st)
	}
	q := url.Values{"error": {"access_denied"}, "error_description": {"the user said no"}, "state": {loc.Query().Get("state")}, "iss": {i.Issuer}}
	if p := b.navigate(app + "/auth/callback?" + q.Encode()); p.Status < 400 || !strings.Contains(p.Body, "access_denied") {
		t.Errorf("error callback: %s", p)
	}
	m4 := snap()
	steps = append(steps, metricStep{what: "error callback", before: m3, after: m4,
		want: map[metric]float64{mLoginStarted: 1, mLoginIdPError: 1}})

	// RP logout, then a replay of the logged-out cookie.
	old := sessionCookies(b, app)
	out := b.navigate(app + "/auth/logout")
	hint, err := url.Parse(out.location())
	if err != nil || out.Status != http.StatusFound || hint.Query().Get("id_token_hint") == "" {
		t.Fatalf("logout: %s", out)
	}
	seen = addSecret(seen, "ID token (id_token_hint)", hint.Query().Get("id_token_hint"))
	// The revocation runs after the redirect is sent: wait for it (its
	// absence shows in the RP logout step's counters).
	var m5 []sample
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m5 = snap(); mRevokeCalls.in(m5) > mRevokeCalls.in(m4) || time.Now().After(deadline) {
			break
		}
	}
	steps = append(steps, metricStep{what: "RP logout", before: m4, after: m5,
		want: map[metric]float64{mLogoutRP: 1, mRevokeCalls: 1}})
	if p := b.withCookies(app, old).do(http.MethodGet, app+"/echo/replay-1", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("replay of the logged-out cookie: want 401, got %s", p)
	}
	m6 := snap()
	steps = append(steps, metricStep{what: "replay after RP logout", before: m5, after: m6,
		want: map[metric]float64{mRejectRevoked: 1}})

	// A second login (the IdP session is still there: no form), then a
	// back-channel logout from the IdP, then a replay.
	j2 := b.login(app+"/again", "alice", "alice-password")
	if j2.final.Status != http.StatusOK || j2.callback == nil {
		t.Fatalf("second login:\n%s", describeChain(j2.chain))
	}
	seen = addSecret(seen, "authorization code (callback URL)", j2.callback.Query().Get("code"))
	seen = addSecret(seen, "access token (upstream Authorization)", passedToken(t, b, app+"/echo/second"))
	m7 := snap()
	steps = append(steps, metricStep{what: "second login", before: m6, after: m7,
		want: map[metric]float64{mLoginStarted: 1, mLoginCompleted: 1, mTokenCalls: 1}})
	old2 := sessionCookies(b, app)
	idpLogout(t, b, i, clientID, app+"/signed-out")
	waitFor(t, "the back-channel logout", 10*time.Second, func() bool { return len(i.stats(t).Backchannel) > 0 })
	for _, r := range i.stats(t).Backchannel {
		if !r.OK {
			t.Fatalf("back-channel logout failed at the IdP: %s", r.Error)
		}
	}
	m8 := snap()
	steps = append(steps, metricStep{what: "back-channel logout", before: m7, after: m8,
		want: map[metric]float64{mLogoutBC: 1}})
	if p := b.withCookies(app, old2).do(http.MethodGet, app+"/echo/replay-2", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("replay after back-channel logout: want 401, got %s", p)
	}
	m9 := snap()
	steps = append(steps, metricStep{what: "replay after back-channel logout", before: m8, after: m9,
		want: map[metric]float64{mRejectRevoked: 1}})

	t.Run("metrics", func(t *testing.T) {
		for _, st := range steps {
			checkMetricStep(t, st)
		}
		// Labels hold a few fixed words, or the configured issuer: never a
		// user, a session or a path.
		fixed := regexp.MustCompile(`^[a-z_]*$`)
		n := 0
		for _, s := range m9 {
			if !strings.HasPrefix(s.name, "caddy_oidc_auth_") {
				continue
			}
			n++
			for k, v := range s.labels {
				if k == "le" || (k == "issuer" && v == i.Issuer) {
					continue
				}
				if !fixed.MatchString(v) || strings.Contains(v, aliceSub) || strings.Contains(v, sid) || strings.Contains(v, "/") {
					t.Errorf("metric %s has label %s=%q: labels must be fixed words, not users, sessions or paths", s.name, k, v)
				}
			}
		}
		if n == 0 {
			t.Fatalf("no caddy_oidc_auth_ metrics on the admin endpoint")
		}
	})

	accessLeaks := map[string]string{}
	t.Run("no secrets in logs", func(t *testing.T) {
		secrets := append([]secret(nil), seen...)
		iss := i.issued(t)
		secrets = addSecret(secrets, "authorization code", iss.Codes...)
		secrets = addSecret(secrets, "access token", iss.AccessTokens...)
		secrets = addSecret(secrets, "refresh token", iss.RefreshTokens...)
		secrets = addSecret(secrets, "ID token", iss.IDTokens...)
		secrets = addSecret(secrets, "logout token", iss.LogoutTokens...)
		for _, ck := range b.setCookies[app] {
			secrets = addSecret(secrets, "cookie "+ck.Name, ck.Value)
		}
		if len(iss.Codes) < 2 || len(iss.RefreshTokens) < 3 || len(iss.IDTokens) < 2 || len(iss.LogoutTokens) < 1 {
			t.Fatalf("the IdP reports too few issued secrets to check: %d codes, %d refresh, %d ID, %d logout tokens",
				len(iss.Codes), len(iss.RefreshTokens), len(iss.IDTokens), len(iss.LogoutTokens))
		}

		entries := caddyLogEntries(c.logs())
		debugLines := 0
		leaks := map[string]int{}
		for _, e := range entries {
			if lvl, _ := e.fields["level"].(string); lvl == "debug" {
				debugLines++
			}
			for _, s := range secrets {
				if !strings.Contains(e.raw, s.value) {
					continue
				}
				where := e.logger
				if where == "" {
					where = "(not JSON)"
				}
				key := fmt.Sprintf("%s in a log line of %s (msg %q)", s.kind, where, e.msg)
				if strings.HasPrefix(e.logger, "http.log.access") && (strings.HasPrefix(s.kind, "authorization code") || strings.HasPrefix(s.kind, "ID token")) {
					// Checked by the "access log" subtest below.
					accessLeaks[key] = shorten(e.raw, 300)
					continue
				}
				if leaks[key] == 0 {
					t.Errorf("%s: %s", key, shorten(e.raw, 400))
				}
				leaks[key]++
			}
		}
		if debugLines == 0 {
			t.Errorf("no debug lines in Caddy's output: the check ran without DEBUG logging")
		}

		// The module's own records name the user and the session.
		want := map[string]bool{"login": false, "logout": false, "back-channel logout": false}
		for _, e := range entries {
			if !strings.HasPrefix(e.logger, "http.handlers.oidc_auth") {
				continue
			}
			if _, ok := want[e.msg]; ok && strings.Contains(e.raw, `"sub":"`+aliceSub+`"`) && e.fields["sid"] != nil && e.fields["sid"] != "" {
				want[e.msg] = true
			}
		}
		for msg, ok := range want {
			if !ok {
				t.Errorf("no %q log line of the module with \"sub\":%q and a sid", msg, aliceSub)
			}
		}
	})

	// Caddy's access log (the site has `log`) records every request URI and
	// the response headers other than cookies and Authorization: the
	// callback's ?code= and the logout redirect's id_token_hint (an ID token
	// with the user's email and name) land there.
	t.Run("access log", func(t *testing.T) {
		if len(accessLeaks) == 0 {
			return
		}
		var keys []string
		for k := range accessLeaks {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Errorf("with the README's access-log filter, Caddy's access log still holds %s; e.g. %s",
			strings.Join(keys, "; "), accessLeaks[keys[0]])
	})
}

// ---------------------------------------------------------------- 3

// TestOpsCookieKeyRotationAcrossReloads: cookie_secret A, then B A (old
// cookies still work and are rewritten with B), then B alone (rewritten
// sessions work, cookies still sealed with A are refused).
func TestOpsCookieKeyRotationAcrossReloads(t *testing.T) {
	keyA := cookieSecret
	keyB := "rotated-cookie-secret-" + randomHex(t, 16)
	s := newStack(t, stackOptions{cookieSecret: keyA})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")
	sealedA := sessionCookies(b, s.app)
	if len(sealedA) == 0 {
		t.Fatal("no session cookies after login")
	}
	valueA := map[string]string{}
	for _, c := range sealedA {
		valueA[c.Name] = c.Value
	}

	// The JSON form of `cookie_secret B A`.
	s.reload(stackOptions{cookieSecret: keyB + " " + keyA})
	adapted, err := s.caddy.command("adapt", "--config", s.caddy.configFile, "--adapter", "caddyfile")
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, adapted)
	}
	if !strings.Contains(adapted, `"cookie_secret":"`+keyB+`"`) || !strings.Contains(adapted, `"previous_cookie_secrets":["`+keyA+`"]`) {
		t.Errorf("cookie_secret B A does not adapt to cookie_secret B and previous_cookie_secrets [A]:\n%s", shorten(adapted, 2000))
	}

	p := b.do(http.MethodGet, s.app+"/echo/rotation-1", apiCall, nil)
	if p.Status != http.StatusOK {
		t.Fatalf("after reloading with cookie_secret B A, the session sealed with A: %s", p)
	}
	rewritten := map[string]bool{}
	for _, c := range liveCookies(p.SetCookies) {
		if old, ok := valueA[c.Name]; ok && c.Value != old {
			rewritten[c.Name] = true
		}
	}
	for name := range valueA {
		if !rewritten[name] {
			t.Errorf("the response does not rewrite session cookie %q with the new secret (Set-Cookie: %v)", name, cookieNames(p.SetCookies))
		}
	}
	p = b.do(http.MethodGet, s.app+"/echo/rotation-2", apiCall, nil)
	if p.Status != http.StatusOK {
		t.Fatalf("the rewritten session: %s", p)
	}
	for _, c := range liveCookies(p.SetCookies) {
		if _, ok := valueA[c.Name]; ok {
			t.Errorf("a cookie already sealed with the current secret is rewritten again (%s)", c.Name)
		}
	}

	s.reload(stackOptions{cookieSecret: keyB})
	if p := b.do(http.MethodGet, s.app+"/echo/rotation-3", apiCall, nil); p.Status != http.StatusOK {
		t.Errorf("after reloading with cookie_secret B alone, the rewritten session: %s", p)
	}
	if p := b.navigate(s.app + "/page"); p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
		t.Errorf("after reloading with cookie_secret B alone, a page of the rewritten session: %s", p)
	}
	if p := b.withCookies(s.app, sealedA).do(http.MethodGet, s.app+"/echo/rotation-4", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("a copy of the cookie sealed with A after A was removed: want 401, got %s", p)
	}

	// The rewritten session can still sign out properly. The ID token has
	// its own cookie, sent only to logout_path, so no request before the
	// logout can have rewritten it.
	t.Run("logout after the rotation", func(t *testing.T) {
		out := b.navigate(s.app + "/auth/logout")
		loc, err := url.Parse(out.location())
		if err != nil || out.Status != http.StatusFound || !strings.HasPrefix(out.location(), s.idp.Issuer+"/oidc/logout") {
			t.Fatalf("logout: %s", out)
		}
		// Retired before session_lifetime (the README says to wait one), the
		// old secret took the ID token cookie with it: the logout names the
		// client instead, which RP-initiated logout allows.
		if loc.Query().Get("id_token_hint") == "" && loc.Query().Get("client_id") != clientID {
			t.Errorf("logout after an early rotation names neither the ID token nor the client: %s", out.location())
		}
	})
}

// ---------------------------------------------------------------- 4

// TestOpsLogoutRevokesRefreshTokenAtIdP: an RP logout revokes the session's
// refresh token at the IdP's revocation endpoint (RFC 7009), so a copy of it
// is worthless. Only the app's logout runs: the IdP's end-session page is never
// visited, so nothing else could end the token.
func TestOpsLogoutRevokesRefreshTokenAtIdP(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	s.mustLogin(b, s.app+"/")

	var held []string
	for _, rt := range s.idp.refreshTokens(t, aliceSub, clientID) {
		if rt.Active {
			held = append(held, rt.Token)
		}
	}
	if len(held) != 1 {
		t.Fatalf("after one login the IdP has %d active refresh tokens for %s, want 1", len(held), aliceSub)
	}

	if p := b.navigate(s.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("logout: %s", p)
	}
	waitFor(t, "the refresh token to be dead at the IdP", 10*time.Second, func() bool {
		for _, rt := range s.idp.refreshTokens(t, aliceSub, clientID) {
			if rt.Token == held[0] {
				return !rt.Active
			}
		}
		return false
	})
	calls := s.idp.revocationCalls(t)
	if len(calls) != 1 || calls[0].Status != http.StatusOK || calls[0].TokenTypeHint != "refresh_token" {
		t.Errorf("revocation endpoint calls: %+v, want one answered 200 with token_type_hint refresh_token", calls)
	}

	// The IdP's token endpoint agrees: the old refresh token is refused.
	resp, err := plainClient().PostForm(s.idp.Issuer+"/oauth/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {held[0]},
		"client_id": {clientID}, "client_secret": {clientSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		Error       string `json:"error"`
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode != http.StatusBadRequest || tok.Error != "invalid_grant" {
		t.Errorf("refresh_token grant with the logged-out session's refresh token: %s error=%q (got an access token: %v), want 400 invalid_grant",
			resp.Status, tok.Error, tok.AccessToken != "")
	}
}

// ---------------------------------------------------------------- 5

// formRecorder is an upstream that shows the form it received.
type formRecorder struct {
	mu   sync.Mutex
	seen []formSeen
}

type formSeen struct {
	method string
	fields url.Values
	user   string
}

func (f *formRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	fields := r.PostForm
	f.mu.Lock()
	f.seen = append(f.seen, formSeen{r.Method, fields, r.Header.Get("X-Seen-User")})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!DOCTYPE html><title>echo</title><p id=\"method\">%s</p><p id=\"user\">%s</p>\n", r.Method, htmlEscape(r.Header.Get("X-Seen-User")))
	for _, name := range []string{"title", "note", "choice", "evil"} {
		fmt.Fprintf(w, "<pre id=\"f-%s\">%s</pre>\n", name, htmlEscape(fields.Get(name)))
	}
}

func (f *formRecorder) posts() []formSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []formSeen
	for _, s := range f.seen {
		if s.method == http.MethodPost {
			out = append(out, s)
		}
	}
	return out
}

// TestOpsBrowserFormPostSurvivesEndedSession: in Chromium, a form submitted
// after the session ended (signed out in another tab) is kept through the IdP's
// login form and posted again afterwards; a post from another origin is not.
func TestOpsBrowserFormPostSurvivesEndedSession(t *testing.T) {
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{clients: []idpClient{registration(clientID, clientSecret, port)}})
	rec := &formRecorder{}
	echo := httptest.NewServer(rec)
	t.Cleanup(echo.Close)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><title>elsewhere</title>
<form id="f" method="post" action="%s/echo-form"><input name="evil" value="posted-from-elsewhere"><button id="go" type="submit">Go</button></form>`, app)
	}))
	t.Cleanup(evil.Close)

	site := fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	handle /signed-out {
		header Content-Type "text/html; charset=utf-8"
		respond "<!DOCTYPE html><title>bye</title><h1 id=\"signed-out\">signed out</h1>"
	}
	handle {
		%[2]s
		handle /form {
			header Content-Type "text/html; charset=utf-8"
			respond `+"`"+`<!DOCTYPE html><title>form</title>
<form id="f" method="post" action="/echo-form?from=form">
<input id="title" name="title"><textarea id="note" name="note"></textarea>
<input type="hidden" name="choice" value="b &amp; c"><button id="send" type="submit">Send</button></form>`+"`"+`
		}
		handle /echo-form {
			reverse_proxy %[3]s {
				header_up X-Seen-User {http.auth.user.id}
			}
		}
		respond "hello {http.auth.user.id}"
	}
}
`, port, oidcBlock(i.Issuer, clientID, clientSecret, "post_logout_redirect_uri "+app+"/signed-out"), strings.TrimPrefix(echo.URL, "http://"))
	startSites(t, app+"/signed-out", site)

	ctx := newChromium(t)
	signIn := func(what string) {
		t.Helper()
		step(t, ctx, what+": the IdP login form", chromedp.WaitVisible(chromedp.CSS("#login")))
		if loc := value(t, ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, i.Issuer+"/interaction/") {
			t.Fatalf("%s: login form at %s, want the IdP", what, loc)
		}
		step(t, ctx, what+": sign in",
			chromedp.SendKeys(chromedp.CSS("#login"), "alice"),
			chromedp.SendKeys(chromedp.CSS("#password"), "alice-password"),
			chromedp.Click(chromedp.CSS("#submit")),
		)
	}
	// signOutElsewhere ends the user's IdP session in another tab; the IdP's
	// back-channel logout revokes the app session under the first tab.
	signOutElsewhere := func() {
		t.Helper()
		before := len(i.stats(t).Backchannel)
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab); err != nil {
			t.Fatalf("opening a second tab: %v", err)
		}
		q := url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {app + "/signed-out"}}
		step(t, tab, "sign out at the IdP in another tab",
			chromedp.Navigate(i.Issuer+"/oidc/logout?"+q.Encode()),
			chromedp.WaitVisible(chromedp.CSS("#signed-out, #idp-signed-out")),
		)
		waitFor(t, "the back-channel logout", 10*time.Second, func() bool { return len(i.stats(t).Backchannel) > before })
		if r := i.stats(t).Backchannel[before]; !r.OK {
			t.Fatalf("back-channel logout failed: %s", r.Error)
		}
	}

	step(t, ctx, "open the form", chromedp.Navigate(app+"/form"))
	signIn("first login")
	step(t, ctx, "the form after login", chromedp.WaitVisible(chromedp.CSS("#title")))

	signOutElsewhere()

	const title = "Quarterly report & plan"
	const note = "line one\nline two: ü € <b>"
	step(t, ctx, "fill in and send the form",
		chromedp.SendKeys(chromedp.CSS("#title"), title),
		chromedp.SetValue(chromedp.CSS("#note"), note),
		chromedp.Click(chromedp.CSS("#send")),
	)
	signIn("login after the session ended")
	step(t, ctx, "the form arrives", chromedp.WaitVisible(chromedp.CSS("#method")))
	if loc := value(t, ctx, "location", chromedp.Location()); loc != app+"/echo-form?from=form" {
		t.Errorf("after the re-post the browser is at %s, want %s", loc, app+"/echo-form?from=form")
	}
	if m := value(t, ctx, "method", chromedp.Text(chromedp.CSS("#method"))); m != http.MethodPost {
		t.Errorf("the form arrived with method %q, want POST", m)
	}
	posts := rec.posts()
	if len(posts) != 1 {
		t.Fatalf("the upstream got %d POSTs, want 1 (the re-post after login): %+v", len(posts), posts)
	}
	got := posts[0]
	if got.fields.Get("title") != title || strings.ReplaceAll(got.fields.Get("note"), "\r\n", "\n") != note || got.fields.Get("choice") != "b & c" {
		t.Errorf("re-posted fields = %q, want title=%q note=%q choice=%q", got.fields, title, note, "b & c")
	}
	if got.user != aliceSub {
		t.Errorf("the re-post reached the upstream as user %q, want %s", got.user, aliceSub)
	}

	// A post from a page of another origin is not kept and not re-sent.
	signOutElsewhere()
	step(t, ctx, "a page elsewhere posts to the app",
		chromedp.Navigate(evil.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#go")),
		chromedp.Click(chromedp.CSS("#go")),
	)
	signIn("login after the cross-origin post")
	step(t, ctx, "the app after the login", chromedp.WaitVisible(chromedp.CSS("#method")))
	if m := value(t, ctx, "method", chromedp.Text(chromedp.CSS("#method"))); m != http.MethodGet {
		t.Errorf("after a cross-origin post and a login, the app got method %q, want GET (no re-post)", m)
	}
	for _, p := range rec.posts() {
		if p.fields.Get("evil") != "" {
			t.Errorf("a post from another origin was re-sent after login: %q", p.fields)
		}
	}
}

// ---------------------------------------------------------------- 6

type healthReport struct {
	Ready     bool             `json:"ready"`
	Providers []providerReport `json:"providers"`
	Stores    []struct {
		App       string `json:"app"`
		Kind      string `json:"kind"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"stores"`
}

type providerReport struct {
	Issuer              string `json:"issuer"`
	Discovered          bool   `json:"discovered"`
	Reachable           bool   `json:"reachable"`
	Error               string `json:"error"`
	FailingEndpoint     string `json:"failing_endpoint"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	JWKSKeys            int    `json:"jwks_keys"`
}

func health(t *testing.T, adminAddr string) (int, healthReport, string) {
	t.Helper()
	resp, err := plainClient().Get("http://" + adminAddr + "/oidc_auth/health")
	if err != nil {
		t.Fatalf("GET /oidc_auth/health: %v", err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("GET /oidc_auth/health: %s: %v", resp.Status, err)
	}
	var h healthReport
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("health report %s: %v", raw, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("health Content-Type %q", ct)
	}
	return resp.StatusCode, h, string(raw)
}

// checkCommand runs `caddy oidc-auth check` on a Caddyfile and returns its
// output and exit code.
func checkCommand(t *testing.T, dir, caddyfile string) (string, int) {
	t.Helper()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCaddy(t, dir, "oidc-auth", "check", "--config", file)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &exit):
		return out, exit.ExitCode()
	default:
		t.Fatalf("running caddy oidc-auth check: %v\n%s", err, out)
		return "", -1
	}
}

// TestOpsHealthAndCheckCommand: the admin health endpoint reports the provider
// and the Redis store (503 when Redis is down), and `caddy oidc-auth check`
// tells a working client from a wrong secret and an unreachable issuer.
func TestOpsHealthAndCheckCommand(t *testing.T) {
	redis := newRedisServer(t)
	s := newStack(t, stackOptions{extra: "store redis://" + redis.addr() + "/0"})
	admin := s.caddy.adminAddr

	if code, _, raw := health(t, admin); code != http.StatusOK {
		// Discovery is lazy: until a request needs the provider, it is not
		// discovered yet.
		t.Logf("health before any login: %d %s", code, raw)
	}
	s.mustLogin(newBrowser(t), s.app+"/")
	code, h, raw := health(t, admin)
	if code != http.StatusOK || !h.Ready {
		t.Errorf("health after a login: %d %s, want 200 and ready", code, raw)
	}
	found := false
	for _, p := range h.Providers {
		if p.Issuer == s.idp.Issuer {
			found = true
			if !p.Discovered || p.JWKSKeys < 1 {
				t.Errorf("provider %s: discovered=%v jwks_keys=%d, want discovered and at least one key", p.Issuer, p.Discovered, p.JWKSKeys)
			}
		}
	}
	if !found {
		t.Errorf("health does not list the provider %s: %s", s.idp.Issuer, raw)
	}
	redisListed := func(h healthReport) (bool, bool) {
		for _, st := range h.Stores {
			if st.Kind == "redis" {
				return true, st.Reachable
			}
		}
		return false, false
	}
	if listed, reachable := redisListed(h); !listed || !reachable {
		t.Errorf("health with Redis up: redis store listed=%v reachable=%v: %s", listed, reachable, raw)
	}

	dir := t.TempDir()
	adminPort, _ := strconv.Atoi(strings.TrimPrefix(admin, "127.0.0.1:"))
	out, exit := checkCommand(t, dir, s.caddyfile(adminPort, s.opts))
	if exit != 0 || !strings.Contains(out, "client authentication at the token endpoint works") || strings.Contains(out, "PROBLEM") {
		t.Errorf("check against the real IdP: exit %d\n%s", exit, out)
	}

	wrong := strings.Replace(s.caddyfile(adminPort, s.opts), "client_secret "+clientSecret, "client_secret not-the-secret", 1)
	if !strings.Contains(wrong, "client_secret not-the-secret") {
		t.Fatalf("could not put a wrong secret into the Caddyfile")
	}
	out, exit = checkCommand(t, dir, wrong)
	if !strings.Contains(out, "client_id "+clientID) || !problemLine(out, "refused the client") {
		t.Errorf("check with a wrong client_secret: want a PROBLEM line about client %s\n%s", clientID, out)
	}
	if exit == 0 {
		t.Errorf("check with a wrong client_secret printed a PROBLEM but exited 0; scripts and CI cannot tell it failed\n%s", out)
	}

	closed := fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))
	out, exit = checkCommand(t, dir, s.caddyfile(adminPort, stackOptions{issuer: closed}))
	if !problemLine(out, "discovery") {
		t.Errorf("check with the issuer on a closed port: want a discovery PROBLEM\n%s", out)
	}
	if exit == 0 {
		t.Errorf("check with the issuer on a closed port printed a PROBLEM but exited 0\n%s", out)
	}

	redis.stop()
	code, h, raw = health(t, admin)
	if code != http.StatusServiceUnavailable || h.Ready {
		t.Errorf("health with Redis down: %d %s, want 503 and not ready", code, raw)
	}
	if listed, reachable := redisListed(h); !listed || reachable {
		t.Errorf("health with Redis down: redis store listed=%v reachable=%v, want listed and unreachable: %s", listed, reachable, raw)
	}
}

func problemLine(out, word string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "PROBLEM") && strings.Contains(line, word) {
			return true
		}
	}
	return false
}
