//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Config reloads under load: every request in flight or sent during a
// `caddy reload` is answered 200, sessions and revocations survive each
// reload, and the module's pooled state (providers, apps) leaves no
// goroutines behind.

const (
	reloadLoadWorkers   = 8
	reloadLoadMinimum   = 6 * time.Second
	reloadGoroutineSlop = 15
)

// reloadGoroutines reads the goroutine count from Caddy's pprof handler on
// the admin endpoint (enabled by default at /debug/pprof/).
func reloadGoroutines(t *testing.T, adminAddr string) int {
	t.Helper()
	// No keep-alive: an idle admin connection would be one more goroutine.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + adminAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("reading the goroutine profile: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/pprof/goroutine: %s %s", resp.Status, shorten(string(body), 300))
	}
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no goroutine total in the profile: %s", shorten(string(body), 300))
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// reloadLoad sends GETs with one session's cookies from several workers and
// records every answer that is not a 200 for that session.
//
// Connection handling: the workers keep connections alive, as browsers do.
// A graceful reload closes the old server's idle keep-alive connections; a
// GET that races with such a close is retried by net/http's Transport itself
// (only for replayable requests on a reused connection with no answer yet).
// Those retries are counted through httptrace (a second GetConn for one
// request) and reported; no other retry is made, so a connection error that
// reaches the test is a failed request.
type reloadLoad struct {
	app       string
	cookie    string // the Cookie header
	transport *http.Transport
	client    *http.Client

	requests  atomic.Int64
	retries   atomic.Int64 // attempts beyond the first, made by the Transport
	newConns  atomic.Int64 // connections opened (not reused)
	setCookie atomic.Int64

	mu       sync.Mutex
	failures []string
	failed   int
}

func newReloadLoad(app, cookie string) *reloadLoad {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = reloadLoadWorkers * 2
	return &reloadLoad{
		app:       app,
		cookie:    cookie,
		transport: tr,
		client: &http.Client{
			Transport:     tr,
			Timeout:       20 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (l *reloadLoad) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	if len(l.failures) < 20 {
		l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// one sends a GET and checks the answer: 200, alice's identity in the body,
// and no cookie set (the session is neither renewed nor replaced).
func (l *reloadLoad) one(path string, hdr http.Header, want string) {
	req, err := http.NewRequest(http.MethodGet, l.app+path, nil)
	if err != nil {
		l.fail("%s: %v", path, err)
		return
	}
	for k, vs := range hdr {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Cookie", l.cookie)
	var attempts int32
	trace := &httptrace.ClientTrace{
		GetConn: func(string) { atomic.AddInt32(&attempts, 1) },
		GotConn: func(info httptrace.GotConnInfo) {
			if !info.Reused {
				l.newConns.Add(1)
			}
		},
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	l.requests.Add(1)
	resp, err := l.client.Do(req)
	if n := atomic.LoadInt32(&attempts); n > 1 {
		l.retries.Add(int64(n - 1))
	}
	if err != nil {
		l.fail("GET %s: %v", path, err)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		l.fail("GET %s: reading body: %v", path, err)
		return
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		l.fail("GET %s: %d Location=%q body=%q", path, resp.StatusCode, resp.Header.Get("Location"), shorten(string(body), 200))
		return
	}
	if cs := resp.Cookies(); len(cs) > 0 {
		l.setCookie.Add(1)
		l.fail("GET %s set cookies %v", path, cookieNames(cs))
	}
}

// run starts the workers; stop ends them and waits. Worker i sends API calls
// to /echo (through reverse_proxy) and to the respond handler; every fourth
// request of worker 0 is a page navigation.
func (l *reloadLoad) run() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < reloadLoadWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				switch {
				case w == 0 && i%4 == 0:
					l.one(fmt.Sprintf("/page/%d", i), navigation, aliceSub)
				case (w+i)%2 == 0:
					l.one(fmt.Sprintf("/echo/api/%d/%d", w, i), apiCall, `"X-Auth-User-Id":["`+aliceSub+`"]`)
				default:
					l.one(fmt.Sprintf("/api/%d/%d", w, i), apiCall, aliceSub)
				}
				// Paced a little, so that a busy 2-core machine still has
				// room for the reload itself.
				time.Sleep(5 * time.Millisecond)
			}
		}(w)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// quiesce drops every idle connection that our clients (the load's and the
// browsers', which share http.DefaultTransport) and Caddy's reverse_proxy
// hold, so that the goroutine count measures only what Caddy itself keeps.
func (l *reloadLoad) quiesce(s *stack) {
	l.transport.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	s.upstream.CloseClientConnections()
}

func TestReloadUnderLoad(t *testing.T) {
	s := newStack(t, stackOptions{accessTTL: 2 * time.Hour})
	adminAddr := s.caddy.adminAddr

	// alice's session, used by the load.
	alice := newBrowser(t)
	s.mustLogin(alice, s.app+"/")
	aliceCookies := sessionCookies(alice, s.app)
	if len(aliceCookies) == 0 {
		t.Fatal("no session cookies after login")
	}
	var parts []string
	for _, c := range aliceCookies {
		parts = append(parts, c.Name+"="+c.Value)
	}
	cookieHeader := strings.Join(parts, "; ")

	// carol's session, ended by an RP logout before any reload; a copy of its
	// cookies is kept. carol's email passes the require rule added below, so
	// only the revocation can refuse the copy.
	carol := newBrowser(t)
	if j := carol.login(s.app+"/", "carol", "carol-password"); j.final.Status != http.StatusOK {
		t.Fatalf("carol's login did not end on a 200 page:\n%s", describeChain(j.chain))
	}
	carolCookies := sessionCookies(carol, s.app)
	if len(carolCookies) == 0 {
		t.Fatal("no session cookies for carol")
	}
	if p := carol.navigate(s.app + "/auth/logout"); p.Status != http.StatusFound && p.Status != http.StatusSeeOther {
		t.Fatalf("carol's logout: want a redirect to the IdP, got %s", p)
	}
	checkRevoked := func(when string) {
		t.Helper()
		if p := carol.withCookies(s.app, carolCookies).do(http.MethodGet, s.app+"/echo/revoked", apiCall, nil); p.Status != http.StatusUnauthorized {
			t.Errorf("%s: API call with carol's logged-out cookies: want 401, got %s", when, p)
		}
		if p := carol.withCookies(s.app, carolCookies).navigate(s.app + "/revoked"); p.Status == http.StatusOK {
			t.Errorf("%s: navigation with carol's logged-out cookies got 200: %s", when, p)
		}
	}
	checkRevoked("before the reloads")

	// Warm-up with the same load shape, so that whatever Caddy creates lazily
	// (reverse_proxy's transport, the module's caches) exists before the
	// baseline is taken.
	load := newReloadLoad(s.app, cookieHeader)
	stopWarm := load.run()
	time.Sleep(time.Second)
	stopWarm()
	if load.failed > 0 {
		t.Fatalf("%d of %d warm-up requests failed before any reload:\n%s", load.failed, load.requests.Load(), strings.Join(load.failures, "\n"))
	}
	load.quiesce(s)
	time.Sleep(500 * time.Millisecond)
	baseline := reloadGoroutines(t, adminAddr)
	t.Logf("goroutines after warm-up: %d", baseline)

	// The measured run starts with fresh counters.
	load = newReloadLoad(s.app, cookieHeader)
	stop := load.run()
	defer stop()
	start := time.Now()

	// Each config differs from the one before in its JSON (a comment alone
	// would be adapted away and `caddy reload` would skip it).
	steps := []struct {
		greeting string
		extra    string
	}{
		{greeting: "reload-1 {http.auth.user.id}"},
		{greeting: "reload-2 {http.auth.user.id}", extra: "require email *@example.com"},
		{greeting: "reload-3 {http.auth.user.id}", extra: "# third config\nrequire email *@example.com"},
	}
	for i, step := range steps {
		time.Sleep(time.Second)
		opts := s.opts
		opts.greeting = step.greeting
		opts.extra = step.extra
		began := time.Now()
		s.reload(opts)
		t.Logf("reload %d took %s (at %s into the load)", i+1, time.Since(began).Round(time.Millisecond), began.Sub(start).Round(time.Millisecond))

		// `caddy reload` returns once the new config is live: the same
		// cookies reach the new respond text, with no new login.
		want := fmt.Sprintf("reload-%d %s", i+1, aliceSub)
		p := alice.withCookies(s.app, aliceCookies).navigate(s.app + "/after-reload")
		if p.Status != http.StatusOK || !strings.Contains(p.Body, want) {
			t.Errorf("after reload %d the session does not reach the new config: %s", i+1, p)
		}
		if len(p.SetCookies) > 0 {
			t.Errorf("after reload %d the session's cookies were replaced: %v", i+1, cookieNames(p.SetCookies))
		}
	}
	// For the record: the count moves with the load (connections).
	t.Logf("goroutines under load: %d", reloadGoroutines(t, adminAddr))
	if rest := reloadLoadMinimum - time.Since(start); rest > 0 {
		time.Sleep(rest)
	} else {
		time.Sleep(time.Second)
	}
	stop()
	elapsed := time.Since(start)

	t.Logf("load: %d requests in %s from %d workers; %d transport retries, %d new connections",
		load.requests.Load(), elapsed.Round(time.Millisecond), reloadLoadWorkers, load.retries.Load(), load.newConns.Load())
	if load.failed > 0 {
		t.Errorf("%d of %d requests failed during the reloads (first ones):\n%s", load.failed, load.requests.Load(), strings.Join(load.failures, "\n"))
	}
	if load.requests.Load() < 100 {
		t.Errorf("only %d requests were sent; the load did not run", load.requests.Load())
	}

	// The original cookies, unchanged, still work on the last config.
	if p := alice.withCookies(s.app, aliceCookies).do(http.MethodGet, s.app+"/echo/final", apiCall, nil); p.Status != http.StatusOK || !strings.Contains(p.Body, aliceSub) {
		t.Errorf("after the reloads the session's API calls fail: %s", p)
	}
	checkRevoked("after the reloads")

	// The require rule of the last config is in force: bob (example.org)
	// signs in and is refused.
	if j := newBrowser(t).login(s.app+"/", "bob", "bob-password"); j.final.Status != http.StatusForbidden {
		t.Errorf("bob after the reloads: want 403 from the require rule, got:\n%s", describeChain(j.chain))
	}

	// No goroutine left behind by the old configs.
	load.quiesce(s)
	var last int
	deadline := time.Now().Add(10 * time.Second)
	for {
		last = reloadGoroutines(t, adminAddr)
		if last <= baseline+reloadGoroutineSlop || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("goroutines: %d after warm-up, %d after the reloads and the load", baseline, last)
	if last > baseline+reloadGoroutineSlop {
		t.Errorf("goroutines grew from %d to %d across 3 reloads (allowed +%d)", baseline, last, reloadGoroutineSlop)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, err := client.Get("http://" + adminAddr + "/debug/pprof/goroutine?debug=1"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("goroutine profile:\n%s", tail(string(body), 200))
		}
	}
	if strings.Contains(s.caddy.logs(), "panic") {
		t.Errorf("caddy logged a panic:\n%s", tail(s.caddy.logs(), 60))
	}
}
