//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Single logout across apps, in a real browser: two apps with their own
// client_ids share one IdP session; signing out of one ends the IdP session,
// the IdP calls both apps' back-channel logout URIs, and neither app keeps
// its session.

// pagesSeen records the URL of every document the tab commits (redirect hops
// are not documents, so they are not in it).
type pagesSeen struct {
	mu   sync.Mutex
	urls []string
}

func (p *pagesSeen) add(u string) {
	p.mu.Lock()
	p.urls = append(p.urls, u)
	p.mu.Unlock()
}

// since returns the URLs committed after the first n.
func (p *pagesSeen) since(n int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.urls[n:]...)
}

func (p *pagesSeen) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.urls)
}

// landing navigates the tab to u and reports where it ends: "app" when the
// protected page (#hello) shows, "login" when the IdP's form (#login) shows.
func landing(t *testing.T, ctx context.Context, u string) (string, string) {
	t.Helper()
	step(t, ctx, "open "+u, chromedp.Navigate(u))
	deadline := time.Now().Add(15 * time.Second)
	for {
		what, err := chromedp.Run(ctx, chromedp.Evaluate[string](
			`document.querySelector('#hello') ? 'app' : (document.querySelector('#login') ? 'login' : '')`))
		if err == nil && what != "" {
			loc := value(t, ctx, "location", chromedp.Location())
			return what, loc
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("after opening %s the browser shows neither the app nor the IdP login form (at %s)", u, loc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBrowserSingleLogoutAcrossApps(t *testing.T) {
	appA, appB, i := startTwoApps(t, "", "")

	ctx := newChromium(t)
	seen := &pagesSeen{}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*cdppage.EventFrameNavigated); ok && e.Frame.ParentID == "" {
			seen.add(e.Frame.URL)
		}
	}); err != nil {
		t.Fatalf("listening to the tab: %v", err)
	}

	// Sign in at app A through the IdP's form.
	if what, loc := landing(t, ctx, appA+"/html/a"); what != "login" || !strings.HasPrefix(loc, i.Issuer+"/interaction/") {
		t.Fatalf("app A without a session: want the IdP login form, got %s at %s", what, loc)
	}
	if c := value(t, ctx, "the client named on the form", chromedp.Text(chromedp.CSS("#client"))); c != "app-a" {
		t.Errorf("the login form is for %q, want app-a", c)
	}
	step(t, ctx, "sign in at app A",
		chromedp.SendKeys(chromedp.CSS("#login"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "alice-password"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#hello")),
	)
	if loc := value(t, ctx, "location", chromedp.Location()); loc != appA+"/html/a" {
		t.Errorf("after signing in the browser is at %s, want %s/html/a", loc, appA)
	}
	if hello := value(t, ctx, "app A's greeting", chromedp.Text(chromedp.CSS("#hello"))); strings.TrimSpace(hello) != "hello "+aliceSub+" "+aliceEmail {
		t.Errorf("app A says %q", hello)
	}

	// App B: single sign-on, no form.
	before := seen.len()
	what, loc := landing(t, ctx, appB+"/html/b")
	if what != "app" || loc != appB+"/html/b" {
		t.Fatalf("app B after signing in at app A: want its protected page, got %s at %s", what, loc)
	}
	for _, u := range seen.since(before) {
		if strings.Contains(u, "/interaction/") {
			t.Errorf("app B showed an IdP page on the way (%s): no single sign-on", u)
		}
	}
	if hello := value(t, ctx, "app B's greeting", chromedp.Text(chromedp.CSS("#hello"))); strings.TrimSpace(hello) != "hello "+aliceSub+" "+aliceEmail {
		t.Errorf("app B says %q", hello)
	}
	if n := len(i.stats(t).Backchannel); n != 0 {
		t.Fatalf("back-channel logouts before anyone signed out: %d", n)
	}

	// Sign out at app A; the IdP's confirmation page submits itself.
	step(t, ctx, "sign out at app A", chromedp.Navigate(appA+"/auth/logout"))
	waitFor(t, "the browser to leave the IdP's logout page", 15*time.Second, func() bool {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && (loc == appA+"/signed-out" || strings.HasPrefix(loc, i.Issuer+"/oidc/logout/success"))
	})
	waitFor(t, "the IdP's back-channel logouts to both apps", 10*time.Second, func() bool {
		return len(i.stats(t).Backchannel) >= 2
	})
	called := map[string]bool{}
	for _, r := range i.stats(t).Backchannel {
		if !r.OK {
			t.Errorf("back-channel logout to %s failed: %s", r.ClientID, r.Error)
		}
		if r.Sub != aliceSub || r.Sid == "" {
			t.Errorf("back-channel logout to %s names sub=%q sid=%q", r.ClientID, r.Sub, r.Sid)
		}
		called[r.ClientID] = true
	}
	if !called["app-a"] || !called["app-b"] {
		t.Errorf("back-channel logouts went to %v, want app-a and app-b", called)
	}

	// App B's session ended with the IdP session: the form again.
	if what, loc := landing(t, ctx, appB+"/html/b-again"); what != "login" || !strings.HasPrefix(loc, i.Issuer+"/interaction/") {
		t.Errorf("app B after signing out at app A: want the IdP login form, got %s at %s", what, loc)
	} else if c := value(t, ctx, "the client named on the form", chromedp.Text(chromedp.CSS("#client"))); c != "app-b" {
		t.Errorf("the login form is for %q, want app-b", c)
	}
	if what, loc := landing(t, ctx, appA+"/html/a-again"); what != "login" || !strings.HasPrefix(loc, i.Issuer+"/interaction/") {
		t.Errorf("app A after signing out: want the IdP login form, got %s at %s", what, loc)
	}
}

// idpLogout signs the browser's user out at the IdP directly (not through an
// app), answering the confirmation with logout=yes, so the IdP sends its
// back-channel logouts. It returns the pages from the confirmation on.
func idpLogout(t *testing.T, b *browser, i *idp, client, postLogout string) []*page {
	t.Helper()
	q := url.Values{"client_id": {client}, "post_logout_redirect_uri": {postLogout}}
	confirm := b.navigate(i.Issuer + "/oidc/logout?" + q.Encode())
	return append([]*page{confirm}, b.follow(submitLogoutForm(t, b, confirm))...)
}

// apiStatus makes an API call with a copy of cookies and returns its status.
func apiStatus(t *testing.T, b *browser, origin string, cookies []*http.Cookie, u string) int {
	t.Helper()
	return b.withCookies(origin, cookies).do(http.MethodGet, u, apiCall, nil).Status
}
