//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caddy is a running `caddy run`.
type caddy struct {
	t          *testing.T
	bin        string
	dir        string
	configFile string
	adminAddr  string
	proc       *process
}

// globalOptions is the block every test Caddyfile starts with: a private admin
// endpoint and storage, so tests never touch the machine's Caddy state.
func globalOptions(adminPort int, storageDir string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	debug
}
`, adminPort, storageDir)
}

func caddyEnv(dir string) []string {
	return append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"HOME="+dir,
	)
}

// startCaddy writes the Caddyfile (which must use adminPort) and runs Caddy,
// then waits until readyURL answers anything at all.
func startCaddy(t *testing.T, dir string, adminPort int, caddyfile, readyURL string) *caddy {
	t.Helper()
	c := &caddy{
		t:          t,
		bin:        caddyBinary(t),
		dir:        dir,
		configFile: filepath.Join(dir, "Caddyfile"),
		adminAddr:  fmt.Sprintf("127.0.0.1:%d", adminPort),
	}
	c.write(caddyfile)
	cmd := exec.Command(c.bin, "run", "--config", c.configFile, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = caddyEnv(dir)
	c.proc = startProcess(t, "caddy", cmd)
	waitFor(t, "caddy to answer "+readyURL, 20*time.Second, func() bool {
		if c.proc.exited() {
			t.Fatalf("caddy exited: %v", c.proc.err)
		}
		resp, err := plainClient().Get(readyURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return c
}

func (c *caddy) write(caddyfile string) {
	c.t.Helper()
	if err := os.WriteFile(c.configFile, []byte(caddyfile), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// reload replaces the running config with caddyfile through the admin API.
func (c *caddy) reload(caddyfile string) {
	c.t.Helper()
	c.write(caddyfile)
	out, err := c.command("reload", "--config", c.configFile, "--adapter", "caddyfile", "--address", c.adminAddr)
	if err != nil {
		c.t.Fatalf("caddy reload: %v\n%s", err, out)
	}
}

// command runs the Caddy binary with args and returns its combined output.
func (c *caddy) command(args ...string) (string, error) {
	return runCaddy(c.t, c.dir, args...)
}

func runCaddy(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = caddyEnv(dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *caddy) logs() string { return c.proc.log.String() }

// plainClient follows no redirects and keeps no cookies.
func plainClient() *http.Client {
	return &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ---------------------------------------------------------------- the app stack

const (
	clientID     = "app-a"
	clientSecret = "secret-a"
	cookieSecret = "0123456789abcdef0123456789abcdef0123"
	aliceSub     = "usr_alice"
	aliceEmail   = "alice@example.com"
)

// stack is one IdP plus one Caddy protecting one site with oidc_auth.
type stack struct {
	t        *testing.T
	idp      *idp
	caddy    *caddy
	appPort  int
	app      string // http://127.0.0.1:<appPort>
	upstream *httptest.Server
	opts     stackOptions
	dir      string
}

type stackOptions struct {
	accessTTL time.Duration // the IdP's access token lifetime; default 1h
	// extra lines inside the oidc_auth block
	extra string
	// text of the default respond; default "hello {http.auth.user.id} {http.auth.user.email}"
	greeting string
	// issuer override (e.g. a closed port); the IdP is still started
	issuer string
	// the cookie_secret line's values; default cookieSecret
	cookieSecret string
}

func newStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, opts: opts, dir: t.TempDir()}
	s.appPort = freePort(t)
	s.app = fmt.Sprintf("http://127.0.0.1:%d", s.appPort)
	s.upstream = httptest.NewServer(http.HandlerFunc(upstreamHandler))
	t.Cleanup(s.upstream.Close)

	s.idp = startIdP(t, idpOptions{
		accessTTL: opts.accessTTL,
		clients:   []idpClient{registration(clientID, clientSecret, s.appPort)},
	})
	adminPort := freePort(t)
	s.caddy = startCaddy(t, s.dir, adminPort, s.caddyfile(adminPort, opts), s.app+"/signed-out")
	return s
}

// caddyfile renders the test site for this stack.
func (s *stack) caddyfile(adminPort int, opts stackOptions) string {
	issuer := s.idp.Issuer
	if opts.issuer != "" {
		issuer = opts.issuer
	}
	return globalOptions(adminPort, filepath.Join(s.dir, "storage")) + siteConfig{
		port:         s.appPort,
		issuer:       issuer,
		clientID:     clientID,
		clientSecret: clientSecret,
		extra:        opts.extra,
		greeting:     opts.greeting,
		upstream:     s.upstream.URL,
		cookieSecret: opts.cookieSecret,
	}.block()
}

// siteConfig is one site protected by oidc_auth.
type siteConfig struct {
	port                   int
	issuer                 string
	clientID, clientSecret string
	extra                  string // more lines inside the oidc_auth block
	greeting               string // the respond text; default shows id and email
	upstream               string // URL of the Go upstream for /echo and /html
	cookieSecret           string // the cookie_secret line's values; default cookieSecret
}

// block renders the site: /signed-out is public, everything else is behind
// oidc_auth; /echo and /html go to the Go upstream, the rest is a respond.
func (c siteConfig) block() string {
	secret := c.cookieSecret
	if secret == "" {
		secret = cookieSecret
	}
	greeting := c.greeting
	if greeting == "" {
		greeting = "hello {http.auth.user.id} {http.auth.user.email}"
	}
	return fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	# The access-log filter the README recommends: no code, no state, no
	# id_token_hint (in the logout redirect's Location).
	log {
		format filter {
			request>uri query {
				delete code
				delete state
			}
			resp_headers>Location delete
		}
	}
	handle /signed-out {
		header Content-Type "text/html; charset=utf-8"
		respond "<!DOCTYPE html><title>bye</title><h1 id=\"signed-out\">signed out</h1>"
	}
	handle {
		oidc_auth {
			issuer %[2]s
			client_id %[3]s
			client_secret %[4]s
			redirect_uri /auth/callback
			post_logout_redirect_uri http://127.0.0.1:%[1]d/signed-out
			cookie_secret %[5]s
%[6]s
		}
		@upstream path /echo /echo/* /html /html/*
		handle @upstream {
			reverse_proxy %[7]s {
				header_up X-Auth-User-Id {http.auth.user.id}
				header_up X-Auth-User-Email {http.auth.user.email}
			}
		}
		handle {
			respond "%[8]s"
		}
	}
}
`, c.port, c.issuer, c.clientID, c.clientSecret, secret, indent(c.extra, "\t\t\t"), strings.TrimPrefix(c.upstream, "http://"), greeting)
}

// registration is the IdP client entry for an app on 127.0.0.1:port.
func registration(id, secret string, ports ...int) idpClient {
	c := idpClient{ClientID: id, ClientSecret: secret}
	for _, p := range ports {
		app := fmt.Sprintf("http://127.0.0.1:%d", p)
		c.RedirectURIs = append(c.RedirectURIs, app+"/auth/callback")
		c.PostLogoutRedirectURIs = append(c.PostLogoutRedirectURIs, app+"/signed-out")
	}
	if len(ports) > 0 {
		c.BackchannelLogoutURI = fmt.Sprintf("http://127.0.0.1:%d/auth/backchannel-logout", ports[0])
	}
	return c
}

func indent(s, prefix string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n")
}

// reload re-renders the Caddyfile with new options and reloads Caddy.
func (s *stack) reload(opts stackOptions) {
	s.t.Helper()
	adminPort := strings.TrimPrefix(s.caddy.adminAddr, "127.0.0.1:")
	var p int
	fmt.Sscan(adminPort, &p)
	s.caddy.reload(s.caddyfile(p, opts))
}

// echoReply is what the upstream answers on /echo.
type echoReply struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Body   string      `json:"body"`
	Header http.Header `json:"header"`
}

func upstreamHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if strings.HasPrefix(r.URL.Path, "/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><html><head><title>app</title></head><body>
<p id="hello">hello %s %s</p>
<p><a id="logout" href="/auth/logout">Sign out</a></p>
</body></html>`, htmlEscape(r.Header.Get("X-Auth-User-Id")), htmlEscape(r.Header.Get("X-Auth-User-Email")))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echoReply{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.RawQuery,
		Body:   string(body),
		Header: r.Header,
	})
}

func htmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// portOpen reports whether something accepts connections on addr.
func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
