// Command login signs in to a protected site through its OpenID Provider's
// login form, like a browser would, and prints the Cookie header value that
// the site set (only the site's own cookies, not the provider's).
//
//	login -url http://127.0.0.1:8081/bench-1k.txt -user alice -password alice-password
//
// It follows every redirect by hand, fills the first form that has a
// "login" field with the user name and password, submits any other
// auto-submitting form it meets, and stops at the first 200 answer from
// the site's origin. It exits non-zero when the journey does not end there.
package main

import (
	"flag"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

var (
	formRe  = regexp.MustCompile(`(?is)<form[^>]*>.*?</form>`)
	actionR = regexp.MustCompile(`(?i)action="([^"]*)"`)
	methodR = regexp.MustCompile(`(?i)method="([^"]*)"`)
	inputRe = regexp.MustCompile(`(?i)<input[^>]*>`)
	nameRe  = regexp.MustCompile(`(?i)name="([^"]*)"`)
	valueRe = regexp.MustCompile(`(?i)value="([^"]*)"`)
)

func main() {
	target := flag.String("url", "", "protected URL on 127.0.0.1 to open")
	user := flag.String("user", "alice", "login name")
	password := flag.String("password", "alice-password", "password")
	verbose := flag.Bool("v", false, "print every step to stderr")
	flag.Parse()
	start, err := url.Parse(*target)
	if err != nil || start.Host == "" {
		fail("-url must be an absolute URL")
	}
	if h := start.Hostname(); h != "127.0.0.1" && h != "localhost" {
		fail("only loopback targets are allowed, got %s", h)
	}
	cookie, err := login(start, *user, *password, *verbose)
	if err != nil {
		fail("%v", err)
	}
	fmt.Println(cookie)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "login: "+format+"\n", args...)
	os.Exit(1)
}

func login(start *url.URL, user, password string, verbose bool) (string, error) {
	jar, _ := cookiejar.New(nil)
	origin := start.Scheme + "://" + start.Host
	siteCookies := map[string]bool{} // names of cookies set by the site's origin
	client := &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(method string, u *url.URL, form url.Values) (*http.Response, string, error) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, u.String(), body)
		if err != nil {
			return nil, "", err
		}
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench-login")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if u.Scheme+"://"+u.Host == origin {
			for _, c := range resp.Cookies() {
				siteCookies[c.Name] = true
			}
		}
		if verbose {
			fmt.Fprintf(os.Stderr, "%s %s -> %d %s\n", method, u, resp.StatusCode, resp.Header.Get("Location"))
		}
		return resp, string(data), nil
	}

	method, cur, form := http.MethodGet, start, url.Values(nil)
	filled := false
	for step := 0; step < 40; step++ {
		resp, body, err := do(method, cur, form)
		if err != nil {
			return "", err
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "":
			next, err := cur.Parse(resp.Header.Get("Location"))
			if err != nil {
				return "", fmt.Errorf("bad Location %q", resp.Header.Get("Location"))
			}
			method, cur, form = http.MethodGet, next, nil
			continue
		case resp.StatusCode == http.StatusOK && cur.Scheme+"://"+cur.Host == origin && !hasForm(body):
			return cookieHeader(jar, start, siteCookies)
		case resp.StatusCode == http.StatusOK && hasForm(body):
			m, action, values := parseForm(body)
			if _, ok := values["login"]; ok {
				if filled {
					return "", fmt.Errorf("the login form came back (wrong password?) at %s", cur)
				}
				values.Set("login", user)
				values.Set("password", password)
				filled = true
			}
			next, err := cur.Parse(action)
			if err != nil || action == "" {
				next = cur
			}
			if strings.EqualFold(m, "post") {
				method, cur, form = http.MethodPost, next, values
			} else {
				next.RawQuery = values.Encode()
				method, cur, form = http.MethodGet, next, nil
			}
			continue
		default:
			return "", fmt.Errorf("%s %s answered %d: %.300s", method, cur, resp.StatusCode, body)
		}
	}
	return "", fmt.Errorf("too many steps")
}

func hasForm(body string) bool { return formRe.MatchString(body) }

func parseForm(body string) (method, action string, values url.Values) {
	f := formRe.FindString(body)
	open := f[:strings.Index(f, ">")+1]
	method = "get"
	if m := methodR.FindStringSubmatch(open); m != nil {
		method = m[1]
	}
	if m := actionR.FindStringSubmatch(open); m != nil {
		action = html.UnescapeString(m[1])
	}
	values = url.Values{}
	for _, in := range inputRe.FindAllString(f, -1) {
		n := nameRe.FindStringSubmatch(in)
		if n == nil {
			continue
		}
		v := ""
		if m := valueRe.FindStringSubmatch(in); m != nil {
			v = html.UnescapeString(m[1])
		}
		values.Set(html.UnescapeString(n[1]), v)
	}
	return method, action, values
}

// cookieHeader returns "a=1; b=2" for the cookies the site itself set that
// the jar would still send to it.
func cookieHeader(jar http.CookieJar, u *url.URL, mine map[string]bool) (string, error) {
	var parts []string
	for _, c := range jar.Cookies(u) {
		if mine[c.Name] {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("signed in, but %s set no cookie", u.Host)
	}
	sort.Strings(parts)
	return strings.Join(parts, "; "), nil
}
