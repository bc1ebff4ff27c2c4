//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// idpClient is one client registration at the test IdP (see idp/idp.mjs).
type idpClient struct {
	ClientID               string   `json:"client_id"`
	ClientSecret           string   `json:"client_secret"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris"`
	BackchannelLogoutURI   string   `json:"backchannel_logout_uri,omitempty"`
	TokenEndpointAuth      string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
}

// idp is a running test IdP.
type idp struct {
	Port   int
	Issuer string
	proc   *process
}

type idpOptions struct {
	port        int // 0: pick a free one
	accessTTL   time.Duration
	keysFile    string
	clients     []idpClient
	issuerAlias string
	// profile is IDP_PROFILE (see idp/idp.mjs); empty: the Scalekit-shaped
	// default.
	profile string
}

// startIdP starts idp/idp.mjs with node and waits for its discovery document.
func startIdP(t *testing.T, opts idpOptions) *idp {
	t.Helper()
	port := opts.port
	if port == 0 {
		port = freePort(t)
	}
	dir := t.TempDir()
	clientsFile := filepath.Join(dir, "clients.json")
	b, err := json.MarshalIndent(opts.clients, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clientsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ttl := opts.accessTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	env := append(os.Environ(),
		"IDP_PORT="+strconv.Itoa(port),
		"IDP_CLIENTS="+clientsFile,
		"IDP_AT_TTL="+strconv.Itoa(int(ttl/time.Second)),
	)
	keys := opts.keysFile
	if keys == "" {
		keys = sharedKeysFile
	}
	env = append(env, "IDP_KEYS_FILE="+keys)
	if opts.profile != "" {
		env = append(env, "IDP_PROFILE="+opts.profile)
	}
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	// A start normally takes a second or two. Rarely, a node process has
	// been seen to stay silent before listening for minutes: such a start is
	// abandoned after a while (with node's diagnostic report, which shows
	// where it stood) and the IdP started again on the same port.
	const attempts, perAttempt = 3, 40 * time.Second
	for attempt := 1; ; attempt++ {
		reports := filepath.Join(dir, fmt.Sprintf("report-%d", attempt))
		if err := os.MkdirAll(reports, 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("node", "--report-on-signal", "--report-signal=SIGUSR2", "--report-directory="+reports,
			filepath.Join(rigDir, "idp", "idp.mjs"))
		cmd.Dir = filepath.Join(rigDir, "idp")
		cmd.Env = env
		p := startProcess(t, "idp", cmd)
		i := &idp{Port: port, Issuer: issuer, proc: p}
		if waitUntil(perAttempt, func() bool {
			if p.exited() {
				t.Fatalf("the IdP exited: %v\n%s", p.err, p.log.String())
			}
			resp, err := http.Get(issuer + "/.well-known/openid-configuration")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}) {
			return i
		}
		_ = p.cmd.Process.Signal(syscall.SIGUSR2)
		time.Sleep(2 * time.Second)
		stack := nodeReportStack(reports)
		p.stop()
		if attempt == attempts {
			t.Fatalf("the IdP served no discovery document in %d starts of %s each; last output:\n%s\nnode's JavaScript stack:\n%s", attempts, perAttempt, p.log.String(), stack)
		}
		t.Logf("the IdP served no discovery document within %s (start %d); starting it again. Output:\n%s\nnode's JavaScript stack:\n%s", perAttempt, attempt, p.log.String(), stack)
	}
}

// nodeReportStack returns the JavaScript stack of the diagnostic report
// node wrote into dir (empty when there is none).
func nodeReportStack(dir string) string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r struct {
			JavaScriptStack struct {
				Message string   `json:"message"`
				Stack   []string `json:"stack"`
			} `json:"javascriptStack"`
		}
		if json.Unmarshal(b, &r) == nil {
			return r.JavaScriptStack.Message + "\n" + strings.Join(r.JavaScriptStack.Stack, "\n")
		}
	}
	return ""
}

// idpStats mirrors GET /__test/stats of the test IdP.
type idpStats struct {
	Grants         map[string]int            `json:"grants"`
	GrantsByClient map[string]map[string]int `json:"grants_by_client"`
	GrantErrors    map[string]int            `json:"grant_errors"`
	Backchannel    []struct {
		ClientID string `json:"client_id"`
		Sub      string `json:"sub"`
		Sid      string `json:"sid"`
		OK       bool   `json:"ok"`
		Error    string `json:"error"`
	} `json:"backchannel"`
	RevokedGrants       int `json:"revoked_grants"`
	TokenFailuresServed int `json:"token_failures_served"`
}

func (i *idp) stats(t *testing.T) idpStats {
	t.Helper()
	resp, err := http.Get(i.Issuer + "/__test/stats")
	if err != nil {
		t.Fatalf("reading IdP stats: %v", err)
	}
	defer resp.Body.Close()
	var s idpStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decoding IdP stats: %v", err)
	}
	return s
}

// admin calls a POST endpoint of the IdP's test-only admin API.
func (i *idp) admin(t *testing.T, path string, q url.Values) {
	t.Helper()
	u := i.Issuer + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := http.Post(u, "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", path, resp.Status)
	}
}

// revokeUser makes every refresh token of sub invalid at the IdP.
func (i *idp) revokeUser(t *testing.T, sub string) {
	i.admin(t, "/__test/revoke-user", url.Values{"sub": {sub}})
}

func (i *idp) logs() string { return i.proc.log.String() }
