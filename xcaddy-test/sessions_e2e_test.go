//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Session control across two apps and two Caddy instances on Redis:
// idle_timeout, the admin sessions API and its CLI, membership webhooks and
// the bounded registry.

const (
	clientIDB     = "app-b"
	clientSecretB = "secret-b"
)

// twoApps is two Caddy instances, each serving app A and app B, on Redis.
type twoApps struct {
	t            *testing.T
	idp          *idp
	redis        *redisServer
	a, b         [2]string // origins of app A and app B on instance 1 and 2
	admin        [2]string // admin addresses
	caddies      [2]*caddy
	webhookKey   []byte
	webhookIDSeq int
}

func newTwoApps(t *testing.T, extra string) *twoApps {
	t.Helper()
	s := &twoApps{t: t, redis: newRedisServer(t), webhookKey: []byte(interopWebhookKey)}
	var pa, pb [2]int
	for k := range 2 {
		pa[k], pb[k] = freePort(t), freePort(t)
		s.a[k], s.b[k] = origin(pa[k]), origin(pb[k])
	}
	s.idp = startIdP(t, idpOptions{clients: []idpClient{
		registration(clientID, clientSecret, pa[0], pa[1]),
		registration(clientIDB, clientSecretB, pb[0], pb[1]),
	}})
	up := newUpstream(t)
	lines := fmt.Sprintf("store redis://%s/0\nwebhook_secret %s\n%s", s.redis.addr(), interopWebhookSecret(), extra)
	for k := range 2 {
		dir := t.TempDir()
		adminPort := freePort(t)
		s.admin[k] = fmt.Sprintf("127.0.0.1:%d", adminPort)
		cfg := globalOptions(adminPort, filepath.Join(dir, "storage")) +
			siteConfig{port: pa[k], issuer: s.idp.Issuer, clientID: clientID, clientSecret: clientSecret, upstream: up, extra: lines}.block() +
			siteConfig{port: pb[k], issuer: s.idp.Issuer, clientID: clientIDB, clientSecret: clientSecretB, upstream: up, extra: lines}.block()
		s.caddies[k] = startCaddy(t, dir, adminPort, cfg, s.a[k]+"/signed-out")
	}
	return s
}

// status is an API call with a copy of cookies at app.
func (s *twoApps) status(app string, cookies []*http.Cookie) int {
	return apiStatus(s.t, newBrowser(s.t), app, cookies, app+"/echo/x")
}

// adminJSON calls the admin API of instance k.
func (s *twoApps) adminJSON(k int, method, path, body string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(method, "http://"+s.admin[k]+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := plainClient().Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (s *twoApps) sessionsOf(k int, sub string) []map[string]any {
	s.t.Helper()
	code, out := s.adminJSON(k, http.MethodGet, "/oidc_auth/sessions?sub="+sub, "")
	if code != http.StatusOK {
		s.t.Fatalf("list on instance %d: %d %v", k+1, code, out)
	}
	var list []map[string]any
	for _, e := range out["sessions"].([]any) {
		list = append(list, e.(map[string]any))
	}
	return list
}

func (s *twoApps) webhook(app, typ, user, org string) int {
	s.webhookIDSeq++
	body := fmt.Sprintf(`{"spec_version":"1","id":"evt_%d","type":%q,"object":"OrgMembershipEvent","occurred_at":"2025-01-01T00:00:00Z","environment_id":"env_1","data":{"organization":{"id":%q},"user":{"id":%q,"membership":{"organization_id":%q,"roles":[{"id":"role_1"}]}}}}`, s.webhookIDSeq, typ, org, user, org)
	return postWebhook(s.t, app, "msg_"+strconv.Itoa(s.webhookIDSeq), time.Now(), body, s.webhookKey)
}

// TestAdminSessionsAcrossAppsAndInstances: the admin API of either instance
// lists alice's sessions of both apps, and a revocation by sub on one
// instance ends both apps' sessions on both instances within a second; the
// CLI does the same against the admin endpoint.
func TestAdminSessionsAcrossAppsAndInstances(t *testing.T) {
	s := newTwoApps(t, "")
	_, ca := loginAt(t, s.a[0])
	_, cb := loginAt(t, s.b[1])
	for _, app := range []string{s.a[0], s.a[1]} {
		if got := s.status(app, ca); got != http.StatusOK {
			t.Fatalf("app A session at %s: %d", app, got)
		}
	}

	for k := range 2 {
		list := s.sessionsOf(k, aliceSub)
		apps := map[string]bool{}
		for _, e := range list {
			apps[e["app"].(string)] = true
			if e["sub"] != aliceSub || e["user_agent"] == "" || e["session"] == "" {
				t.Errorf("entry %v", e)
			}
		}
		if len(list) != 2 || !apps[clientID] || !apps[clientIDB] {
			t.Fatalf("instance %d lists %v; want one session of each app", k+1, list)
		}
		raw, _ := json.Marshal(list)
		for _, c := range append(ca, cb...) {
			if strings.Contains(string(raw), c.Value) {
				t.Fatal("the list holds a cookie value")
			}
		}
	}
	out, err := s.caddies[1].command("oidc-auth", "sessions", "list", "--sub", aliceSub, "--address", s.admin[1])
	if err != nil || !strings.Contains(out, `"app": "`+clientID+`"`) || !strings.Contains(out, `"app": "`+clientIDB+`"`) {
		t.Fatalf("CLI list: %v\n%s", err, out)
	}

	start := time.Now()
	code, ans := s.adminJSON(0, http.MethodPost, "/oidc_auth/sessions/revoke", `{"sub":"`+aliceSub+`"}`)
	if code != http.StatusOK || ans["ended"] != 2.0 {
		t.Fatalf("revoke: %d %v", code, ans)
	}
	waitFor(t, "every app on every instance to refuse alice's sessions", time.Second, func() bool {
		for _, c := range []struct {
			app     string
			cookies []*http.Cookie
		}{{s.a[0], ca}, {s.a[1], ca}, {s.b[0], cb}, {s.b[1], cb}} {
			if s.status(c.app, c.cookies) != http.StatusUnauthorized {
				return false
			}
		}
		return true
	})
	t.Logf("all four refused the sessions %s after the revocation", time.Since(start).Round(time.Millisecond))
	if list := s.sessionsOf(1, aliceSub); len(list) != 0 {
		t.Fatalf("revoked sessions still listed: %v", list)
	}

	// A new login works, and the CLI ends it by session ID. Revocations by
	// sub count in whole seconds (sessions begun up to the revocation's
	// second end), so the new login waits for the next second.
	sleepUntil(start.Truncate(time.Second).Add(2100 * time.Millisecond))
	_, fresh := loginAt(t, s.a[1])
	list := s.sessionsOf(0, aliceSub)
	if len(list) != 1 {
		t.Fatalf("after a new login: %v", list)
	}
	out, err = s.caddies[0].command("oidc-auth", "sessions", "revoke", "--session", list[0]["session"].(string), "--address", s.admin[0])
	if err != nil || !strings.Contains(out, `"ended": 1`) {
		t.Fatalf("CLI revoke: %v\n%s", err, out)
	}
	waitFor(t, "the session ended by the CLI to be refused on instance 2", time.Second, func() bool {
		return s.status(s.a[1], fresh) == http.StatusUnauthorized
	})
	if code, _ := s.adminJSON(0, http.MethodPost, "/oidc_auth/sessions/revoke", `{"sub":"a","sid":"b"}`); code != http.StatusBadRequest {
		t.Errorf("two selectors: %d, want 400", code)
	}
}

// TestIdleTimeoutAcrossInstances: with idle_timeout 6s, a copy of the first
// cookie, idle by its own record, is kept alive on instance 1 by activity on
// instance 2 (recorded in Redis); once nothing happens for 6s, both
// instances refuse it (API: 401, navigation: to the IdP).
func TestIdleTimeoutAcrossInstances(t *testing.T) {
	s := newTwoApps(t, "idle_timeout 6s")
	_, c0 := loginAt(t, s.a[0])
	t0 := time.Now()
	sleepUntil(t0.Add(3 * time.Second))
	if got := s.status(s.a[1], c0); got != http.StatusOK {
		t.Fatalf("at 3s on instance 2: %d", got)
	}
	sleepUntil(t0.Add(7500 * time.Millisecond))
	if got := s.status(s.a[0], c0); got != http.StatusOK {
		t.Fatalf("at 7.5s on instance 1, 4.5s after activity on instance 2: %d, want 200", got)
	}
	sleepUntil(t0.Add(16 * time.Second))
	for k := range 2 {
		if got := s.status(s.a[k], c0); got != http.StatusUnauthorized {
			t.Errorf("after 8.5s idle, instance %d: %d, want 401", k+1, got)
		}
	}
	p := newBrowser(t).withCookies(s.a[1], c0).navigate(s.a[1] + "/page")
	if p.Status != http.StatusFound || !strings.HasPrefix(p.location(), s.idp.Issuer) {
		t.Errorf("navigation of an idle session: %d to %q, want a login redirect", p.Status, p.location())
	}
}

func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// TestMembershipWebhooks: user.organization_membership_deleted for
// alice's organization ends her sessions of both apps on both instances;
// for another organization it ends nothing; an update makes her next
// request refresh its tokens; unknown events are acknowledged.
func TestMembershipWebhooks(t *testing.T) {
	s := newTwoApps(t, "")
	_, ca := loginAt(t, s.a[0])
	_, cb := loginAt(t, s.b[0])

	if code := s.webhook(s.a[0], "user.organization_membership_updated", aliceSub, "org_1"); code != http.StatusNoContent {
		t.Fatalf("membership updated: %d", code)
	}
	before := s.idp.stats(t).Grants["refresh_token"]
	if got := s.status(s.a[1], ca); got != http.StatusOK {
		t.Fatalf("after the update: %d", got)
	}
	if after := s.idp.stats(t).Grants["refresh_token"]; after != before+1 {
		t.Fatalf("refresh grants %d -> %d; want the next request (on the other instance) to refresh once", before, after)
	}
	if got := s.status(s.a[1], ca); got != http.StatusOK || s.idp.stats(t).Grants["refresh_token"] != before+1 {
		t.Fatal("a second request refreshed again")
	}

	if code := s.webhook(s.a[0], "organization.created", aliceSub, "org_9"); code != http.StatusNoContent {
		t.Fatalf("unknown event: %d, want 204", code)
	}
	if code := s.webhook(s.a[0], "user.organization_membership_deleted", aliceSub, "org_2"); code != http.StatusNoContent {
		t.Fatalf("membership deleted (other org): %d", code)
	}
	if s.status(s.a[1], ca) != http.StatusOK || s.status(s.b[1], cb) != http.StatusOK {
		t.Fatal("a deleted membership of another organization ended a session")
	}
	if code := s.webhook(s.a[0], "user.organization_membership_deleted", aliceSub, "org_1"); code != http.StatusNoContent {
		t.Fatalf("membership deleted: %d", code)
	}
	waitFor(t, "both apps on both instances to refuse alice", time.Second, func() bool {
		return s.status(s.a[1], ca) == http.StatusUnauthorized && s.status(s.b[1], cb) == http.StatusUnauthorized &&
			s.status(s.a[0], ca) == http.StatusUnauthorized && s.status(s.b[0], cb) == http.StatusUnauthorized
	})
}

// TestRegistryBoundedUnderLoginFlood: 60 logins of one user keep her
// registry at 50 records per app in Redis, the newest listed.
func TestRegistryBoundedUnderLoginFlood(t *testing.T) {
	s := newTwoApps(t, "")
	b := newBrowser(t)
	j := b.login(s.a[0]+"/", "alice", "alice-password")
	if j.final.Status != http.StatusOK {
		t.Fatalf("login:\n%s", describeChain(j.chain))
	}
	for n := 1; n < 60; n++ {
		// The IdP session signs her in again without a password.
		chain := b.follow(b.navigate(s.a[n%2] + "/auth/login"))
		if last := chain[len(chain)-1]; last.Status != http.StatusOK {
			t.Fatalf("login %d:\n%s", n, describeChain(chain))
		}
	}
	latest := sessionCookies(b, s.a[0])
	if got := s.status(s.a[0], latest); got != http.StatusOK {
		t.Fatalf("the latest session: %d", got)
	}
	if list := s.sessionsOf(1, aliceSub); len(list) != 50 {
		t.Fatalf("%d sessions listed, want the cap of 50", len(list))
	}
	out, err := exec.Command("redis-cli", "-p", strconv.Itoa(s.redis.port), "--scan", "--pattern", "oidc_auth:*:sess:*").Output()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(string(out))); n > 50 {
		t.Fatalf("%d session records in Redis, want at most 50", n)
	}
}
