//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// stepUpSite protects / with a plain login and /admin with `require acr mfa`
// (one client, one session); both pages show the session's acr.
func stepUpSite(issuer string, port int) string {
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	route /admin* {
		%s
		header Content-Type "text/html; charset=utf-8"
		respond `+"`"+`<p id="page">admin {http.auth.user.id} {http.auth.user.acr}</p>`+"`"+`
	}
	route {
		%s
		header Content-Type "text/html; charset=utf-8"
		respond `+"`"+`<p id="page">home {http.auth.user.id} {http.auth.user.acr}</p>`+"`"+`
	}
}
`, port, oidcBlock(issuer, "app-a", "secret-a", "require acr mfa"), oidcBlock(issuer, "app-a", "secret-a"))
}

// TestStepUpBrowser: signed in with a password only (acr pwd), the user opens
// /admin, which needs acr mfa; the IdP is asked for it, shows its login form
// again, and after the second factor the user lands back on /admin.
func TestStepUpBrowser(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{profile: "resource-server", clients: []idpClient{registration("app-a", "secret-a", port)}})
	startSites(t, app+"/", stepUpSite(i.Issuer, port))
	ctx := newChromium(t)

	step(t, ctx, "open the app and reach the IdP login form",
		chromedp.Navigate(app+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
	)
	step(t, ctx, "sign in with a password",
		chromedp.SendKeys(chromedp.CSS("#login"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "alice-password"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#page")),
	)
	// The IdP names no acr unless asked for one.
	if got := strings.TrimSpace(value(t, ctx, "home page", chromedp.Text(chromedp.CSS("#page")))); got != "home "+aliceSub {
		t.Fatalf("home page says %q, want a session without acr", got)
	}
	step(t, ctx, "open /admin: the IdP asks to sign in again",
		chromedp.Navigate(app+"/admin?tab=keys"),
		chromedp.WaitVisible(chromedp.CSS("#otp")),
	)
	if loc := value(t, ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, i.Issuer+"/interaction/") {
		t.Fatalf("step-up login form at %s, want the IdP", loc)
	}
	step(t, ctx, "sign in with the second factor",
		chromedp.SendKeys(chromedp.CSS("#login"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "alice-password"),
		chromedp.SendKeys(chromedp.CSS("#otp"), "123456"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#page")),
	)
	if loc := value(t, ctx, "location", chromedp.Location()); loc != app+"/admin?tab=keys" {
		t.Errorf("after the step-up the browser is at %s, want %s/admin?tab=keys", loc, app)
	}
	if got := strings.TrimSpace(value(t, ctx, "admin page", chromedp.Text(chromedp.CSS("#page")))); got != "admin "+aliceSub+" mfa" {
		t.Errorf("admin page says %q, want an mfa session", got)
	}
	// The stronger session serves the rest of the site too.
	step(t, ctx, "back home", chromedp.Navigate(app+"/"), chromedp.WaitVisible(chromedp.CSS("#page")))
	if got := strings.TrimSpace(value(t, ctx, "home page", chromedp.Text(chromedp.CSS("#page")))); got != "home "+aliceSub+" mfa" {
		t.Errorf("home page after step-up says %q", got)
	}
}

// TestStepUpLoopGuardE2E: the authorization request for /admin asks the real
// IdP for acr_values=mfa; a user who signs in without the second factor gets
// acr pwd, and the login ends on an error page instead of going round again.
func TestStepUpLoopGuardE2E(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{profile: "resource-server", clients: []idpClient{registration("app-a", "secret-a", port)}})
	startSites(t, app+"/", stepUpSite(i.Issuer, port))
	b := newBrowser(t)

	j := b.login(app+"/admin", "alice", "alice-password")
	var asked url.Values
	for _, p := range j.chain {
		if loc := p.location(); strings.HasPrefix(loc, i.Issuer+"/oauth/authorize?") {
			u, _ := url.Parse(loc)
			asked = u.Query()
		}
	}
	if asked.Get("acr_values") != "mfa" {
		t.Fatalf("the authorization request did not ask for acr_values=mfa:\n%s", describeChain(j.chain))
	}
	if j.final.Status != http.StatusForbidden || !strings.Contains(j.final.Body, "stronger sign-in") {
		t.Fatalf("a login that stays too weak: want the 403 error page, got:\n%s", describeChain(j.chain))
	}
	authorizeCalls := 0
	for _, p := range j.chain {
		if strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize?") {
			authorizeCalls++
		}
	}
	if authorizeCalls != 1 {
		t.Errorf("the login went to the IdP %d times, want once:\n%s", authorizeCalls, describeChain(j.chain))
	}
	if p := b.do(http.MethodGet, app+"/admin", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("no session may come of the weak login: %s", p)
	}
}
