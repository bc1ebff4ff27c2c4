//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Health that follows the IdP after startup: the admin health endpoint and
// the idp_up gauge turn when the real IdP stops and starts again, with or
// without logins in between.

// waitHealth polls the admin health endpoint until it answers want
// for a report listing issuer, and returns that provider's entry.
func waitHealth(t *testing.T, admin, issuer string, want int, within time.Duration, what string) providerReport {
	t.Helper()
	deadline := time.Now().Add(within)
	start := time.Now()
	for {
		code, h, raw := health(t, admin)
		for _, p := range h.Providers {
			if p.Issuer == issuer && code == want {
				t.Logf("%s: health %d after %s: %s", what, code, time.Since(start).Round(10*time.Millisecond), raw)
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: health still %d after %s, want %d: %s", what, code, within, want, raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restartIdP starts the stack's IdP again on its port, with the same
// clients and keys.
func (s *stack) restartIdP() {
	s.t.Helper()
	s.idp = startIdP(s.t, idpOptions{
		port:      s.idp.Port,
		accessTTL: s.opts.accessTTL,
		clients:   []idpClient{registration(clientID, clientSecret, s.appPort)},
	})
}

// loginUpToCallback signs alice in at the IdP and returns the callback
// URL the IdP redirects to, without requesting it.
func (s *stack) loginUpToCallback(b *browser) string {
	s.t.Helper()
	chain := b.follow(b.navigate(s.app + "/"))
	last := chain[len(chain)-1]
	m := formAction.FindStringSubmatch(last.Body)
	if m == nil {
		s.t.Fatalf("expected the IdP login form:\n%s", describeChain(chain))
	}
	action, _ := last.URL.Parse(m[1])
	hdr := navigation.Clone()
	hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	hdr.Set("Origin", last.URL.Scheme+"://"+last.URL.Host)
	p := b.do(http.MethodPost, action.String(), hdr, strings.NewReader(url.Values{"login": {"alice"}, "password": {"alice-password"}}.Encode()))
	for range 20 {
		next, err := p.URL.Parse(p.location())
		if p.Status < 300 || p.Status > 399 || err != nil {
			s.t.Fatalf("the IdP did not redirect to the callback: %s", p)
		}
		if strings.HasPrefix(next.String(), s.app+"/auth/callback") {
			return next.String()
		}
		p = b.navigate(next.String())
	}
	s.t.Fatal("too many redirects before the callback")
	return ""
}

func idpUp(t *testing.T, admin, issuer string) float64 {
	t.Helper()
	return metricSum(scrape(t, admin), "caddy_oidc_auth_idp_up", map[string]string{"issuer": issuer})
}

// TestOpsHealthFollowsIdPOutage: with a 2 s probe interval, stopping the IdP
// turns health 503 within an interval with no request to the site at all,
// and starting it again turns health 200 within an interval; the same with
// a login failing while the IdP is down.
func TestOpsHealthFollowsIdPOutage(t *testing.T) {
	const interval = 2 * time.Second
	s := newStack(t, stackOptions{extra: "health_probe_interval 2s"})
	admin, issuer := s.caddy.adminAddr, s.idp.Issuer
	// One interval with its jitter, plus room for a slow, busy machine.
	within := interval*6/5 + 8*time.Second

	waitHealth(t, admin, issuer, http.StatusOK, 20*time.Second, "at start")
	if up := idpUp(t, admin, issuer); up != 1 {
		t.Errorf("idp_up at start = %v, want 1", up)
	}

	s.idp.proc.stop()
	h := waitHealth(t, admin, issuer, http.StatusServiceUnavailable, within, "IdP stopped, no request to the site")
	if h.Reachable || h.FailingEndpoint != "discovery" || !strings.Contains(h.Error, "discovery endpoint") {
		t.Errorf("IdP stopped: %+v, want unreachable with the discovery endpoint named", h)
	}
	if up := idpUp(t, admin, issuer); up != 0 {
		t.Errorf("idp_up with the IdP stopped = %v, want 0", up)
	}

	s.restartIdP()
	h = waitHealth(t, admin, issuer, http.StatusOK, within, "IdP started again")
	if !h.Reachable || h.FailingEndpoint != "" || h.ConsecutiveFailures != 0 {
		t.Errorf("IdP started again: %+v, want reachable", h)
	}
	if up := idpUp(t, admin, issuer); up != 1 {
		t.Errorf("idp_up with the IdP back = %v, want 1", up)
	}

	// Logins failing in between: the IdP stops between its redirect back
	// and the callback, so the code exchange cannot reach it.
	b := newBrowser(t)
	callback := s.loginUpToCallback(b)
	s.idp.proc.stop()
	if p := b.navigate(callback); p.Status != http.StatusBadGateway && p.Status != http.StatusServiceUnavailable {
		t.Errorf("callback with the IdP stopped: %s, want 502/503", p)
	}
	code, hr, raw := health(t, admin)
	if code != http.StatusServiceUnavailable || hr.Ready {
		t.Errorf("right after a login failed at the token endpoint: %d %s, want 503", code, raw)
	}
	for _, p := range hr.Providers {
		if p.Issuer == issuer && p.FailingEndpoint != "token" && p.FailingEndpoint != "discovery" {
			t.Errorf("failing endpoint %q, want token (or discovery, if a probe came in between): %s", p.FailingEndpoint, raw)
		}
	}
	// Another login attempt while the IdP is down: the site still sends
	// the user there, and health stays 503.
	if p := newBrowser(t).navigate(s.app + "/"); p.Status != http.StatusFound {
		t.Errorf("login attempt with the IdP down: %s, want 302 to the IdP", p)
	}
	waitHealth(t, admin, issuer, http.StatusServiceUnavailable, within, "IdP down after failed logins")

	s.restartIdP()
	waitHealth(t, admin, issuer, http.StatusOK, within, "IdP started again after failed logins")
	s.mustLogin(newBrowser(t), s.app+"/")
	waitHealth(t, admin, issuer, http.StatusOK, 0, "after a login")
}

// TestOpsHealthFollowsTokenEndpoint: a token endpoint that fails (the IdP
// answering 503) turns health 503 at once, naming it; one that refuses a
// code (invalid_grant) is an IdP that is up.
func TestOpsHealthFollowsTokenEndpoint(t *testing.T) {
	// A long interval: only the logins' own calls count here.
	s := newStack(t, stackOptions{extra: "health_probe_interval 1h"})
	admin, issuer := s.caddy.adminAddr, s.idp.Issuer
	s.mustLogin(newBrowser(t), s.app+"/")
	waitHealth(t, admin, issuer, http.StatusOK, 0, "after a login")

	b := newBrowser(t)
	start := b.navigate(s.app + "/")
	loc, err := url.Parse(start.location())
	if start.Status != http.StatusFound || err != nil {
		t.Fatalf("login start: %s", start)
	}
	bogus := s.app + "/auth/callback?" + url.Values{"code": {"not-a-code"}, "state": {loc.Query().Get("state")}, "iss": {issuer}}.Encode()
	if p := b.navigate(bogus); p.Status < 400 || p.Status >= 500 {
		t.Errorf("callback with a code the IdP refuses: %s, want 4xx", p)
	}
	h := waitHealth(t, admin, issuer, http.StatusOK, 0, "after the IdP refused a code")
	if !h.Reachable {
		t.Errorf("after the IdP refused a code: %+v, want reachable", h)
	}

	s.idp.admin(t, "/__test/token-failure", url.Values{"status": {"503"}, "count": {"-1"}})
	j := newBrowser(t).login(s.app+"/", "alice", "alice-password")
	if j.final.Status != http.StatusBadGateway && j.final.Status != http.StatusServiceUnavailable {
		t.Errorf("login with the token endpoint failing: %s, want 502/503", j.final)
	}
	code, hr, raw := health(t, admin)
	if code != http.StatusServiceUnavailable {
		t.Errorf("after a login failed at the token endpoint: %d %s, want 503", code, raw)
	}
	for _, p := range hr.Providers {
		if p.Issuer == issuer && (p.FailingEndpoint != "token" || !strings.Contains(p.Error, "token endpoint")) {
			t.Errorf("provider %+v, want the token endpoint named", p)
		}
	}

	s.idp.admin(t, "/__test/token-failure", url.Values{"count": {"0"}})
	s.mustLogin(newBrowser(t), s.app+"/")
	waitHealth(t, admin, issuer, http.StatusOK, 0, "after a login succeeded again")
}

// probeGoroutines counts the module's probe goroutines in the running
// Caddy, from the admin endpoint's goroutine dump.
func probeGoroutines(t *testing.T, admin string) int {
	t.Helper()
	resp, err := plainClient().Get("http://" + admin + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		t.Fatalf("goroutine dump: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("goroutine dump: %s %v", resp.Status, err)
	}
	return strings.Count(string(body), "oidcauth/internal/oidc.(*prober).run(")
}

// TestOpsHealthProbeAcrossReloads: a reload keeps the provider and its one
// probe, which goes on noticing an outage; a reload to another issuer ends
// the old provider's probe, leaving no goroutine behind.
func TestOpsHealthProbeAcrossReloads(t *testing.T) {
	s := newStack(t, stackOptions{extra: "health_probe_interval 1h"})
	admin, issuer := s.caddy.adminAddr, s.idp.Issuer
	waitHealth(t, admin, issuer, http.StatusOK, 20*time.Second, "at start")
	if n := probeGoroutines(t, admin); n != 1 {
		t.Fatalf("probe goroutines at start: %d, want 1", n)
	}

	// The reloaded config's shorter interval cuts the hour's wait short.
	opts := s.opts
	opts.extra = "health_probe_interval 2s"
	opts.greeting = "reloaded {http.auth.user.id}"
	s.reload(opts)
	if n := probeGoroutines(t, admin); n != 1 {
		t.Errorf("probe goroutines after a reload: %d, want 1", n)
	}
	s.idp.proc.stop()
	waitHealth(t, admin, issuer, http.StatusServiceUnavailable, 2*time.Second*6/5+8*time.Second, "IdP stopped after a reload")
	s.restartIdP()
	waitHealth(t, admin, issuer, http.StatusOK, 2*time.Second*6/5+8*time.Second, "IdP back after a reload")

	opts.issuer = fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))
	s.reload(opts)
	deadline := time.Now().Add(10 * time.Second)
	for n := probeGoroutines(t, admin); n != 1; n = probeGoroutines(t, admin) {
		if time.Now().After(deadline) {
			t.Fatalf("probe goroutines after a reload to another issuer: %d, want 1 (the old provider's left behind)", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, h, raw := health(t, admin)
	for _, p := range h.Providers {
		if p.Issuer == issuer {
			t.Errorf("health still lists the issuer no config uses: %s", raw)
		}
	}
}
