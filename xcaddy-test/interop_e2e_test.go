//go:build e2e

package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Login hints, IdP-initiated and third-party initiated login, and Scalekit
// user.logout webhooks, against the real IdP.

const interopWebhookKey = "interop-webhook-key-0123456789ab" // 32 bytes

func interopWebhookSecret() string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(interopWebhookKey))
}

// mintInitiation asks the test IdP for an idp_initiated_login JWT.
func (i *idp) mintInitiation(t *testing.T, q url.Values) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	profileGetJSON(t, i.Issuer+"/__test/idp-initiated?"+q.Encode(), &out)
	if out.Token == "" {
		t.Fatal("the IdP minted no idp_initiated_login token")
	}
	return out.Token
}

// expectAuthorizeWith checks a login redirect to the IdP and returns its query.
func expectAuthorizeWith(t *testing.T, s *stack, p *page, want map[string]string) url.Values {
	t.Helper()
	if p.Status != http.StatusFound {
		t.Fatalf("want 302 to the authorization endpoint, got %s", p)
	}
	loc, err := url.Parse(p.location())
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != s.idp.Issuer+"/oauth/authorize" {
		t.Fatalf("redirect goes to %s, want the authorization endpoint", got)
	}
	q := loc.Query()
	for k, v := range want {
		if got := q.Get(k); got != v {
			t.Errorf("authorize %s = %q, want %q (%s)", k, got, v, loc)
		}
	}
	if q.Get("redirect_uri") != s.app+"/auth/callback" || q.Get("state") == "" || q.Get("nonce") == "" || q.Get("code_challenge") == "" {
		t.Errorf("authorize request is not an ordinary login: %s", loc)
	}
	return q
}

// expectRefusedStart checks that an initiation was refused with 400 and
// started nothing: no redirect and no login state cookie.
func expectRefusedStart(t *testing.T, p *page, what string) {
	t.Helper()
	if p.Status != http.StatusBadRequest {
		t.Errorf("%s: want 400, got %s", what, p)
	}
	if p.location() != "" {
		t.Errorf("%s: redirects to %q", what, p.location())
	}
	if live := liveCookies(p.SetCookies); len(live) > 0 {
		t.Errorf("%s: sets cookies %v (a login was started)", what, cookieNames(live))
	}
}

// finalPathAfterLogin follows a login redirect through the IdP's form.
func finalPathAfterLogin(t *testing.T, b *browser, start *page) *journey {
	t.Helper()
	j := b.finishLogin(b.follow(start), "alice", "alice-password")
	if j.final.Status != http.StatusOK {
		t.Fatalf("login did not end on a 200 page:\n%s", describeChain(j.chain))
	}
	return j
}

func TestInterop(t *testing.T) {
	s := newStack(t, stackOptions{extra: "webhook_secret " + interopWebhookSecret()})

	t.Run("login hints reach the authorize request", func(t *testing.T) {
		b := newBrowser(t)
		q := url.Values{
			"login_hint": {"a@b.c"}, "organization_id": {"org_1"}, "connection_id": {"conn_1"},
			"domain_hint": {"x.com"}, "prompt": {"login"}, "provider": {"google"},
			"evil": {"1"}, "redirect_uri": {"https://evil.example/cb"}, "return_to": {"/hinted/page"},
		}
		p := b.navigate(s.app + "/auth/login?" + q.Encode())
		aq := expectAuthorizeWith(t, s, p, map[string]string{
			"login_hint": "a@b.c", "organization_id": "org_1", "connection_id": "conn_1",
			"domain_hint": "x.com", "prompt": "login", "provider": "google",
		})
		if aq.Has("evil") {
			t.Errorf("a parameter outside the allow-list reached the IdP: evil=%q", aq.Get("evil"))
		}
		if got := aq["redirect_uri"]; len(got) != 1 || got[0] != s.app+"/auth/callback" {
			t.Errorf("redirect_uri = %v, want only %s", got, s.app+"/auth/callback")
		}
		// The real IdP takes the request and the login completes.
		j := finalPathAfterLogin(t, b, p)
		if j.final.URL.Path != "/hinted/page" || !strings.Contains(j.final.Body, "hello "+aliceSub) {
			t.Errorf("after a hinted login: %s", j.final)
		}
		// prompt=login asks again even though the IdP session exists.
		again := b.follow(b.navigate(s.app + "/auth/login?prompt=login"))
		if last := again[len(again)-1]; !strings.Contains(last.URL.Path, "/interaction/") || !strings.Contains(last.Body, `id="login"`) {
			t.Errorf("prompt=login did not show the IdP's form:\n%s", describeChain(again))
		}
	})

	t.Run("IdP-initiated login", func(t *testing.T) {
		b := newBrowser(t)
		tok := s.idp.mintInitiation(t, url.Values{
			"connection_id": {"conn_1"}, "organization_id": {"org_1"}, "login_hint": {"alice@example.com"},
			"relay_state": {"/deep/relay?q=1"}, "exp": {"300"},
		})
		p := b.navigate(s.app + "/auth/initiate?idp_initiated_login=" + url.QueryEscape(tok))
		aq := expectAuthorizeWith(t, s, p, map[string]string{
			"connection_id": "conn_1", "organization_id": "org_1", "login_hint": "alice@example.com",
		})
		if aq.Has("relay_state") || aq.Has("idp_initiated_login") {
			t.Errorf("the initiation token or its relay_state reached the authorize request: %v", aq)
		}
		if aq.Get("state") == "/deep/relay?q=1" {
			t.Errorf("relay_state was used as the OAuth state")
		}
		j := finalPathAfterLogin(t, b, p)
		if got := j.final.URL.Path + "?" + j.final.URL.RawQuery; got != "/deep/relay?q=1" || !strings.Contains(j.final.Body, "hello "+aliceSub) {
			t.Errorf("after an IdP-initiated login the user is at %s:\n%s", got, describeChain(j.chain))
		}
	})

	t.Run("IdP-initiated login with an off-site relay_state lands on /", func(t *testing.T) {
		b := newBrowser(t)
		tok := s.idp.mintInitiation(t, url.Values{"connection_id": {"conn_1"}, "relay_state": {"https://evil.example/x"}})
		p := b.navigate(s.app + "/auth/initiate?idp_initiated_login=" + url.QueryEscape(tok))
		expectAuthorizeWith(t, s, p, map[string]string{"connection_id": "conn_1"})
		j := finalPathAfterLogin(t, b, p)
		if j.final.URL.Host != strings.TrimPrefix(s.app, "http://") || j.final.URL.Path != "/" {
			t.Errorf("an off-site relay_state led to %s", j.final.URL)
		}
	})

	t.Run("IdP-initiated login refusals", func(t *testing.T) {
		for name, q := range map[string]url.Values{
			"signed by another key": {"connection_id": {"conn_1"}, "key": {"foreign"}},
			"expired":               {"connection_id": {"conn_1"}, "exp": {"-120"}},
			"foreign iss":           {"connection_id": {"conn_1"}, "iss": {"https://other-idp.example"}},
		} {
			t.Run(name, func(t *testing.T) {
				tok := s.idp.mintInitiation(t, q)
				expectRefusedStart(t, newBrowser(t).navigate(s.app+"/auth/initiate?idp_initiated_login="+url.QueryEscape(tok)), name)
			})
		}
		t.Run("not a JWT", func(t *testing.T) {
			expectRefusedStart(t, newBrowser(t).navigate(s.app+"/auth/initiate?idp_initiated_login=not.a.jwt"), "not a JWT")
		})
	})

	t.Run("third-party initiated login", func(t *testing.T) {
		b := newBrowser(t)
		q := url.Values{"iss": {s.idp.Issuer}, "login_hint": {"alice"}, "target_link_uri": {s.app + "/deep/page"}}
		p := b.navigate(s.app + "/auth/initiate?" + q.Encode())
		expectAuthorizeWith(t, s, p, map[string]string{"login_hint": "alice"})
		j := finalPathAfterLogin(t, b, p)
		if j.final.URL.Path != "/deep/page" || !strings.Contains(j.final.Body, "hello "+aliceSub) {
			t.Errorf("after a third-party initiated login the user is at %s:\n%s", j.final.URL, describeChain(j.chain))
		}
	})

	t.Run("third-party initiated login refusals", func(t *testing.T) {
		port := strconv.Itoa(s.appPort)
		otherPort := strconv.Itoa(s.appPort + 1)
		for name, q := range map[string]url.Values{
			"foreign iss":     {"iss": {"https://other-idp.example"}, "target_link_uri": {s.app + "/deep/page"}},
			"missing iss":     {"login_hint": {"alice"}, "target_link_uri": {s.app + "/deep/page"}},
			"other port":      {"iss": {s.idp.Issuer}, "target_link_uri": {"http://127.0.0.1:" + otherPort + "/deep/page"}},
			"other host":      {"iss": {s.idp.Issuer}, "target_link_uri": {"http://localhost:" + port + "/deep/page"}},
			"other scheme":    {"iss": {s.idp.Issuer}, "target_link_uri": {"https://127.0.0.1:" + port + "/deep/page"}},
			"scheme-relative": {"iss": {s.idp.Issuer}, "target_link_uri": {"//evil.example/deep/page"}},
		} {
			t.Run(name, func(t *testing.T) {
				expectRefusedStart(t, newBrowser(t).navigate(s.app+"/auth/initiate?"+q.Encode()), name)
			})
		}
	})

	t.Run("user.logout webhook ends the session", func(t *testing.T) {
		b := newBrowser(t)
		s.mustLogin(b, s.app+"/")
		status, info := sessionInfo(t, b, s.app)
		claims, _ := info["claims"].(map[string]any)
		sid, _ := claims["sid"].(string)
		if status != http.StatusOK || sid == "" {
			t.Fatalf("/auth/session: %d, no sid in %v", status, info)
		}
		old := sessionCookies(b, s.app)
		body := fmt.Sprintf(`{"id":"evt_1","type":"user.logout","occurred_at":%q,"data":{"user_session":{"session_id":%q}}}`,
			time.Now().UTC().Format(time.RFC3339), sid)

		// A wrong signature is refused and ends nothing.
		if code := postWebhook(t, s.app, "msg_bad", time.Now(), body, []byte("another-key-0123456789abcdef")); code != http.StatusUnauthorized {
			t.Errorf("webhook signed with another key: %d, want 401", code)
		}
		if p := b.do(http.MethodGet, s.app+"/echo/x", apiCall, nil); p.Status != http.StatusOK {
			t.Fatalf("the session ended after a badly signed webhook: %s", p)
		}

		if code := postWebhook(t, s.app, "msg_1", time.Now(), body, []byte(interopWebhookKey)); code != http.StatusNoContent {
			t.Fatalf("signed user.logout webhook: %d, want 204", code)
		}
		if p := b.withCookies(s.app, old).do(http.MethodGet, s.app+"/echo/x", apiCall, nil); p.Status != http.StatusUnauthorized {
			t.Errorf("the old cookie after the user.logout webhook: want 401, got %s", p)
		}
		if p := b.navigate(s.app + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer+"/oauth/authorize?") {
			t.Errorf("navigation after the user.logout webhook: want 302 to authorize, got %s", p)
		}
		// A redelivery is acknowledged.
		if code := postWebhook(t, s.app, "msg_1", time.Now(), body, []byte(interopWebhookKey)); code != http.StatusNoContent {
			t.Errorf("redelivered webhook: %d, want 204", code)
		}
	})
}

// postWebhook posts a Standard Webhooks request signed with key.
func postWebhook(t *testing.T, app, id string, ts time.Time, body string, key []byte) int {
	t.Helper()
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + stamp + "." + body))
	req, err := http.NewRequest(http.MethodPost, app+"/auth/webhook", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", stamp)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	resp, err := plainClient().Do(req)
	if err != nil {
		t.Fatalf("POST webhook: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
