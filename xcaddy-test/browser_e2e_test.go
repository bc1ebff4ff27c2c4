//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// newChromium starts a headless Chromium with a fresh profile and returns a
// tab context. The returned context has no deadline: it bounds the browser's
// life, so per-step timeouts go on the calls instead.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	exe := os.Getenv("E2E_CHROMIUM")
	if exe == "" {
		exe = "/usr/bin/chromium"
	}
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("chromium not found at %s (run scripts/setup.sh or set E2E_CHROMIUM)", exe)
	}
	var browserLog logBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.UserDataDir(t.TempDir()),
		// No internet here: keep Chromium from trying to reach it.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.CombinedOutput(&browserLog),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("----- chromium output -----\n%s", tail(browserLog.String(), 50))
		}
	})
	// Start the browser now, on the context without a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a timeout.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (browser at %s)", what, err, loc)
	}
}

func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func TestBrowserLoginAndLogout(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := newChromium(t)

	step(t, ctx, "open the app and reach the IdP login form",
		chromedp.Navigate(s.app+"/html/welcome?from=browser"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
	)
	if loc := value(t, ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, s.idp.Issuer+"/interaction/") {
		t.Errorf("login form is at %s, want the IdP", loc)
	}
	step(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS("#login"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "alice-password"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#hello")),
	)
	hello := value(t, ctx, "read the greeting", chromedp.Text(chromedp.CSS("#hello")))
	if want := "hello " + aliceSub + " " + aliceEmail; strings.TrimSpace(hello) != want {
		t.Errorf("protected page says %q, want %q", hello, want)
	}
	if loc := value(t, ctx, "location", chromedp.Location()); loc != s.app+"/html/welcome?from=browser" {
		t.Errorf("after login the browser is at %s", loc)
	}

	step(t, ctx, "sign out through the app",
		chromedp.Click(chromedp.CSS("#logout")),
	)
	// The IdP's confirmation page submits itself and lands either on the app's
	// /signed-out page or on the IdP's own signed-out page.
	deadline := time.Now().Add(15 * time.Second)
	var loc string
	for {
		loc = value(t, ctx, "location", chromedp.Location())
		if loc == s.app+"/signed-out" || strings.HasPrefix(loc, s.idp.Issuer+"/oidc/logout/success") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after logout the browser is stuck at %s", loc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if loc == s.app+"/signed-out" {
		step(t, ctx, "see the signed-out page", chromedp.WaitVisible(chromedp.CSS("#signed-out")))
	} else {
		step(t, ctx, "see the IdP signed-out page", chromedp.WaitVisible(chromedp.CSS("#idp-signed-out")))
	}

	step(t, ctx, "the protected page asks for a login again",
		chromedp.Navigate(s.app+"/html/welcome"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
	)
}
