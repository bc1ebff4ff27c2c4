//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is an HTTP client that behaves like a browser tab for the parts that
// matter here: one cookie jar, redirects followed by hand so tests can see them,
// and navigation headers on page loads.
type browser struct {
	t      *testing.T
	client *http.Client
	jar    *cookiejar.Jar

	mu sync.Mutex
	// every Set-Cookie seen, by the origin (scheme://host:port) that sent it
	setCookies map[string][]*http.Cookie
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, jar: jar, setCookies: map[string][]*http.Cookie{}}
	b.client = &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		Transport:     &recordingTransport{b: b, next: http.DefaultTransport},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return b
}

type recordingTransport struct {
	b    *browser
	next http.RoundTripper
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(r)
	if err == nil {
		if cs := resp.Cookies(); len(cs) > 0 {
			origin := r.URL.Scheme + "://" + r.URL.Host
			rt.b.mu.Lock()
			rt.b.setCookies[origin] = append(rt.b.setCookies[origin], cs...)
			rt.b.mu.Unlock()
		}
	}
	return resp, err
}

// cookieNamesSetBy lists the names of the cookies the origin has ever set.
func (b *browser) cookieNamesSetBy(origin string) map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := map[string]bool{}
	for _, c := range b.setCookies[origin] {
		names[c.Name] = true
	}
	return names
}

// appCookies returns the cookies the jar would send to origin that origin set
// itself. Cookies ignore ports, so the IdP's cookies on 127.0.0.1 are in the
// same jar; they are left out.
func (b *browser) appCookies(origin string) []*http.Cookie {
	u, _ := url.Parse(origin + "/")
	mine := b.cookieNamesSetBy(origin)
	var out []*http.Cookie
	for _, c := range b.jar.Cookies(u) {
		if mine[c.Name] {
			out = append(out, c)
		}
	}
	return out
}

// withCookies returns a fresh browser holding copies of cookies for origin.
func (b *browser) withCookies(origin string, cookies []*http.Cookie) *browser {
	nb := newBrowser(b.t)
	u, _ := url.Parse(origin + "/")
	nb.jar.SetCookies(u, cookies)
	nb.mu.Lock()
	nb.setCookies[origin] = append(nb.setCookies[origin], cookies...)
	nb.mu.Unlock()
	return nb
}

// page is a response with its body read.
type page struct {
	URL    *url.URL
	Status int
	Header http.Header
	Body   string
	// cookies set by this response
	SetCookies []*http.Cookie
}

func (p *page) location() string { return p.Header.Get("Location") }

func (p *page) String() string {
	return fmt.Sprintf("%s -> %d Location=%q body=%q", p.URL, p.Status, p.location(), shorten(p.Body, 300))
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Request kinds.
var (
	navigation = http.Header{
		"Accept":                    {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Sec-Fetch-Mode":            {"navigate"},
		"Sec-Fetch-Dest":            {"document"},
		"Sec-Fetch-User":            {"?1"},
		"Upgrade-Insecure-Requests": {"1"},
	}
	apiCall = http.Header{
		"Accept":         {"application/json"},
		"Sec-Fetch-Mode": {"cors"},
		"Sec-Fetch-Dest": {"empty"},
	}
)

// do sends one request without following redirects.
func (b *browser) do(method, rawURL string, hdr http.Header, body io.Reader) *page {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = append([]string(nil), vs...)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: reading body: %v", method, rawURL, err)
	}
	return &page{URL: req.URL, Status: resp.StatusCode, Header: resp.Header, Body: string(data), SetCookies: resp.Cookies()}
}

func (b *browser) navigate(rawURL string) *page { return b.do(http.MethodGet, rawURL, navigation, nil) }

// follow follows redirects from p like a browser (303 and 302 become GET) and
// returns every page on the way, p first.
func (b *browser) follow(p *page) []*page {
	b.t.Helper()
	chain := []*page{p}
	for i := 0; i < 20; i++ {
		if p.Status < 300 || p.Status > 399 || p.location() == "" {
			return chain
		}
		next, err := p.URL.Parse(p.location())
		if err != nil {
			b.t.Fatalf("bad Location %q: %v", p.location(), err)
		}
		p = b.navigate(next.String())
		chain = append(chain, p)
	}
	b.t.Fatalf("too many redirects:\n%s", describeChain(chain))
	return nil
}

func describeChain(chain []*page) string {
	var sb strings.Builder
	for _, p := range chain {
		sb.WriteString("  " + p.String() + "\n")
	}
	return sb.String()
}

var formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)

// journey is the record of a login.
type journey struct {
	chain    []*page // every page from the first request to the final page
	callback *url.URL
	final    *page
}

// login performs the whole login over HTTP: request startURL, follow the
// redirect to the IdP, fill in its form, follow the redirects back. It returns
// the journey; the final page is whatever the app answered at the end.
func (b *browser) login(startURL, user, password string) *journey {
	b.t.Helper()
	chain := b.follow(b.navigate(startURL))
	return b.finishLogin(chain, user, password)
}

// finishLogin continues a login from a chain that ended at the IdP's login form
// (or went straight through when the IdP session already exists).
func (b *browser) finishLogin(chain []*page, user, password string) *journey {
	b.t.Helper()
	last := chain[len(chain)-1]
	if strings.Contains(last.URL.Path, "/interaction/") {
		if last.Status != http.StatusOK || !strings.Contains(last.Body, `id="login"`) {
			b.t.Fatalf("expected the IdP login form, got:\n%s", describeChain(chain))
		}
		m := formAction.FindStringSubmatch(last.Body)
		if m == nil {
			b.t.Fatalf("no form on the IdP login page: %s", last.Body)
		}
		action, _ := last.URL.Parse(m[1])
		form := url.Values{"login": {user}, "password": {password}}
		hdr := navigation.Clone()
		hdr.Set("Content-Type", "application/x-www-form-urlencoded")
		hdr.Set("Origin", last.URL.Scheme+"://"+last.URL.Host)
		posted := b.do(http.MethodPost, action.String(), hdr, strings.NewReader(form.Encode()))
		chain = append(chain, b.follow(posted)...)
	}
	j := &journey{chain: chain, final: chain[len(chain)-1]}
	for _, p := range chain {
		if strings.HasSuffix(p.URL.Path, "/auth/callback") {
			j.callback = p.URL
		}
	}
	return j
}

// mustLogin logs alice in at startURL and fails unless she ends on a 200 page.
func (s *stack) mustLogin(b *browser, startURL string) *journey {
	s.t.Helper()
	j := b.login(startURL, "alice", "alice-password")
	if j.final.Status != http.StatusOK {
		s.t.Fatalf("login did not end on a 200 page:\n%s", describeChain(j.chain))
	}
	return j
}

// sessionCookies are the HttpOnly cookies with a value that the app set and the
// jar still holds.
func sessionCookies(b *browser, origin string) []*http.Cookie {
	var out []*http.Cookie
	for _, c := range b.appCookies(origin) {
		// The login-loop counter (<name>_lg) outlives sessions on purpose.
		if c.Value != "" && !strings.HasSuffix(c.Name, "_lg") {
			out = append(out, c)
		}
	}
	return out
}

func cookieNames(cs []*http.Cookie) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// liveCookies are the cookies in a response that set a value (not deletions).
func liveCookies(cs []*http.Cookie) []*http.Cookie {
	var out []*http.Cookie
	for _, c := range cs {
		if c.Value == "" || c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// deletedCookies are the cookies a response clears.
func deletedCookies(cs []*http.Cookie) map[string]bool {
	out := map[string]bool{}
	for _, c := range cs {
		if c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			out[c.Name] = true
		}
	}
	return out
}
