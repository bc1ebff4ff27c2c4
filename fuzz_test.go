package oidcauth

// Fuzz targets for the code that reads what a client or an IdP sends:
// back-channel logout tokens and the Caddyfile (the cookie targets are in
// internal/cookie). Each target checks invariants, not just the absence of
// panics. Run them with `bash scripts/fuzz.sh [seconds]`; their seed
// corpora are under testdata/fuzz/<FuzzName>/ and run with every
// `go test`. Every target is hermetic: no network (the logout target's
// JWKS is served from memory), no timers and a fixed clock, so that a
// short fuzz on a loaded machine can fail only on a real finding.

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// Fixed inputs, so that the committed seed corpora (which hold signed
// tokens) stay valid from run to run.
const (
	fuzzCookieSecret = "fuzz-cookie-secret-0123456789abcdef"
	fuzzIssuer       = "https://idp.fuzz.example"
	fuzzClientID     = "fuzz-app"
	fuzzCookieName   = "oidc_fuzz"
	fuzzKeyID        = "fuzz-key-1"
)

// fuzzNow is the handler's clock in the fuzz targets: the committed logout
// tokens are issued at this time.
var fuzzNow = time.Unix(1_800_000_000, 0)

// fuzzSigningKey is a fixed RS256 key, so committed logout tokens verify.
func fuzzSigningKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz_signing_key.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		tb.Fatal("testdata/fuzz_signing_key.pem: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// fuzzHandler is a handler for fuzzIssuer with every endpoint configured
// (so no discovery), the clock at fuzzNow for the handler and its store,
// and its JWKS (the fixed key) served from memory: the target is
// hermetic, with no network, no timer and no wall clock that could make a
// slow machine fail an input (a JWKS fetch that fails is a 503).
func fuzzHandler(tb testing.TB, key *rsa.PrivateKey) *OIDCAuth {
	tb.Helper()
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &key.PublicKey, KeyID: fuzzKeyID, Algorithm: "RS256", Use: "sig"},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "oidcauth-fuzz-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	clock := func() time.Time { return fuzzNow }
	m := &OIDCAuth{
		Issuer:                fuzzIssuer,
		ClientID:              fuzzClientID,
		ClientSecret:          "fuzz-client-secret-0123456789abcdef",
		CookieSecret:          fuzzCookieSecret,
		CookieName:            fuzzCookieName,
		AuthorizationEndpoint: fuzzIssuer + "/authorize",
		TokenEndpoint:         fuzzIssuer + "/token",
		JWKSURI:               fuzzIssuer + "/jwks",
		now:                   clock,
	}
	p := &provider{Provider: oidc.NewProvider(oidc.Config{
		Issuer:    m.Issuer,
		Overrides: endpoints{Authorization: m.AuthorizationEndpoint, Token: m.TokenEndpoint, JWKS: m.JWKSURI},
		Transport: staticTransport{m.JWKSURI: jwks},
		Now:       clock, // the key set's refetch and max-age rules
	})}
	tb.Cleanup(func() { _ = p.Destruct() })
	provisionForTest(tb, m, p, dir, clock)
	return m
}

// staticTransport answers GETs of its URLs from memory and fails any
// other request without touching the network.
type staticTransport map[string][]byte

func (t staticTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	body, ok := t[r.URL.String()]
	if !ok || r.Method != http.MethodGet {
		return nil, fmt.Errorf("no network in fuzz targets: %s %s", r.Method, r.URL)
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(body)),
		Request:    r,
	}, nil
}

// fuzzLogoutClaims are a valid logout token's claims at fuzzNow.
func fuzzLogoutClaims(jti string) map[string]any {
	return oidctest.LogoutClaims(fuzzIssuer, fuzzClientID, "user-1", "sid-1", jti, fuzzNow)
}

func fuzzLogoutSeeds(key *rsa.PrivateKey) []string {
	sign := func(c map[string]any, typ string) string {
		return oidctest.SignJWS(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: fuzzKeyID}}, c, typ)
	}
	valid := sign(fuzzLogoutClaims("seed-valid"), "logout+jwt")
	noSID := fuzzLogoutClaims("seed-no-sid")
	delete(noSID, "sid")
	withNonce := fuzzLogoutClaims("seed-nonce")
	withNonce["nonce"] = nil
	parts := strings.Split(valid, ".")
	return []string{
		valid,
		sign(noSID, "logout+jwt"),
		sign(fuzzLogoutClaims("seed-untyped"), ""),
		sign(withNonce, "logout+jwt"),
		oidctest.SignNone(fuzzLogoutClaims("seed-none"), fuzzKeyID),
		oidctest.SignHS256(fuzzLogoutClaims("seed-hs256-pem"), oidctest.PublicKeyPEM(&key.PublicKey), fuzzKeyID),
		oidctest.SignHS256(fuzzLogoutClaims("seed-hs256-secret"), []byte("fuzz-client-secret-0123456789abcdef"), fuzzKeyID),
		parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1] + "." + parts[2] + ".AAAA.BBBB", // five parts, as a JWE
		parts[0] + ".." + parts[2],
		"eyJ.eyJ.x",
		"",
		strings.Repeat("a", 70<<10),
	}
}

// FuzzLogoutToken: the back-channel endpoint answers 200 only for a token
// signed with the IdP's key that names this issuer and client, and never
// a 5xx, whatever the token or the body.
func FuzzLogoutToken(f *testing.F) {
	key := fuzzSigningKey(f)
	m := fuzzHandler(f, key)
	for _, tok := range fuzzLogoutSeeds(key) {
		f.Add(tok, "", "application/x-www-form-urlencoded")
	}
	f.Add("", "logout_token=a&logout_token=b", "application/x-www-form-urlencoded")
	f.Add("", `{"logout_token":"x"}`, "application/json")
	f.Add("", "logout_token=%zz", "application/x-www-form-urlencoded")
	f.Add("", "--b\r\nContent-Disposition: form-data; name=\"logout_token\"\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b")
	f.Add("x", "", "application/x-www-form-urlencoded; charset=\"")
	f.Add("x", "", "")

	f.Fuzz(func(t *testing.T, token, body, contentType string) {
		checkLogoutToken(t, m, key, token, body, contentType)
	})
}

// checkLogoutToken posts one input to the back-channel endpoint and checks
// the answer: 200 only for a token really signed by the IdP's key for this
// issuer, with the event and without a nonce; otherwise 400. It returns
// the status.
func checkLogoutToken(t *testing.T, m *OIDCAuth, key *rsa.PrivateKey, token, body, contentType string) int {
	if body == "" {
		body = "logout_token=" + url.QueryEscape(token)
	}
	r := httptest.NewRequest(http.MethodPost, "/auth/backchannel-logout", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	status := 0
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("panic: %v", p)
			}
		}()
		if err := m.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Fatal("the back-channel endpoint called the next handler")
			return nil
		})); err != nil {
			status = http.StatusInternalServerError
			var he caddyhttp.HandlerError
			if errors.As(err, &he) && he.StatusCode != 0 {
				status = he.StatusCode
			}
		}
	}()
	if status == 0 {
		status = rec.Code
	}
	switch status {
	case http.StatusOK:
	case http.StatusBadRequest:
		return status
	default:
		t.Fatalf("status %d, want 200 or 400; body %q", status, rec.Body)
	}

	// Accepted: the posted token must really be the IdP's.
	form, err := url.ParseQuery(body)
	if err != nil || len(form["logout_token"]) != 1 {
		t.Fatalf("accepted a body without exactly one logout_token: %q", body)
	}
	raw := form.Get("logout_token")
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("accepted a token that is not a JWS: %v", err)
	}
	payload, err := jws.Verify(&key.PublicKey)
	if err != nil {
		t.Fatalf("accepted a token not signed by the IdP: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatalf("accepted a token whose payload is not JSON: %v", err)
	}
	if c["iss"] != fuzzIssuer {
		t.Fatalf("accepted iss %v", c["iss"])
	}
	if _, ok := c["nonce"]; ok {
		t.Fatal("accepted a token with a nonce")
	}
	if ev, _ := c["events"].(map[string]any); ev == nil || ev[oidc.BackchannelEvent] == nil {
		t.Fatalf("accepted a token without the back-channel event: %v", c["events"])
	}
	return status
}

// FuzzCaddyfile: UnmarshalCaddyfile never panics on any token stream, and
// what it accepts validates (or fails) the same way twice and survives a
// JSON round trip.
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"oidc_auth",
		"oidc_auth {\n}",
		"oidc_auth {\n issuer https://idp.example.com\n client_id a\n client_secret b\n}",
		"oidc_auth /x {\n issuer https://idp.example.com\n client_id a\n client_secret b\n cookie_secret 0123456789abcdef0123456789abcdef old-0123456789abcdef0123456789abcdef\n}",
		"oidc_auth {\n require email *@example.com\n require roles admin editor\n auth_param prompt login\n auth_param prompt consent\n}",
		"oidc_auth {\n session_lifetime 1h30m\n session_lifetime 1d\n}",
		"oidc_auth {\n session_lifetime -5s\n}",
		"oidc_auth {\n issuer https://idp.example.com\n client_id a\n client_secret b\n health_probe_interval 500ms\n}",
		"oidc_auth {\n bearer\n bearer api\n pass_access_token extra\n}",
		"oidc_auth {\n scopes\n}",
		"oidc_auth {\n redirect_uri https://app.example.com/cb?x=1\n}",
		"oidc_auth {\n issuer {env.X}\n client_secret {file./etc/passwd}\n}",
		"oidc_auth {\n webhook_secret whsec_AAAA\n}",
		"oidc_auth {\n token_auth_method none\n}",
		"oidc_auth extra {\n}",
		"oidc_auth {\n unknown 1\n}",
		"oidc_auth {\n issuer \"a b\" `c`\n}",
		"oidc_auth {\n {\n}\n}",
		"oidc_auth {\n issuer https://idp.example.com\n client_id a\n client_secret b\n login_path /auth/callback\n}",
		"oidc_auth {\n issuer https://idp.example.com\n client_id a\n client_secret b\n bearer\n require scope a b\n require acr mfa\n max_age 5m\n dpop required\n protected_resource {\n resource https://api.example.com/mcp\n scopes_supported a b\n resource_name \"X\"\n }\n}",
		"oidc_auth {\n issuer https://idp.example.com\n client_id a\n client_secret b\n upstream_jwt {\n header X-Id\n lifetime 30s\n claims sub roles\n key_rotation 1h\n }\n jwks_path /keys\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		m := new(OIDCAuth)
		if err := m.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		err1 := m.Validate()
		err2 := m.Validate()
		if fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("Validate is not idempotent: %v, then %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back := new(OIDCAuth)
		if err := json.Unmarshal(raw, back); err != nil {
			t.Fatalf("unmarshal %s: %v", raw, err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("the JSON of a valid Caddyfile config does not validate: %v\n%s", err, raw)
		}
		again, _ := json.Marshal(back)
		if !bytes.Equal(raw, again) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", raw, again)
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpora under
// testdata/fuzz/ (signed tokens made with the fixed key above). Run with
// OIDCAUTH_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("OIDCAUTH_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set OIDCAUTH_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz seeds")
	}
	write := func(target, name string, args ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			fmt.Fprintf(&b, "string(%q)\n", a)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key := fuzzSigningKey(t)
	for i, tok := range fuzzLogoutSeeds(key) {
		if len(tok) > 4096 {
			continue
		}
		write("FuzzLogoutToken", fmt.Sprintf("seed-%02d", i), tok, "", "application/x-www-form-urlencoded")
	}
	write("FuzzLogoutToken", "query-not-body", "", "x=1", "application/x-www-form-urlencoded")

	write("FuzzCaddyfile", "full", "oidc_auth {\n\tissuer https://idp.example.com\n\tclient_id a\n\tclient_secret b\n\tredirect_uri /cb\n\tscopes openid email\n\tauth_param prompt login\n\tlogin_path /in\n\tlogout_path /out\n\tpost_logout_redirect_uri /bye\n\tbackchannel_logout_path /bc\n\tcookie_secret 0123456789abcdef0123456789abcdef\n\tcookie_name app\n\tsession_lifetime 8h\n\trequire email *@example.com\n\tbearer api\n\tpass_access_token\n\ttoken_auth_method client_secret_post\n}")
	write("FuzzCaddyfile", "heredoc", "oidc_auth {\n\tclient_secret <<EOF\n\tsecret\n\tEOF\n}")
	write("FuzzCaddyfile", "duplicate-paths", "oidc_auth {\n\tissuer https://idp.example.com\n\tclient_id a\n\tclient_secret b\n\tlogin_path /auth/logout\n}")
}

// TestFuzzLogoutTokenHermetic: the FuzzLogoutToken handler reaches no
// network. With every new HTTP transport failing, as a machine's network
// stalls, each seed still gets its answer: the valid tokens 200 (the key
// set is there), every other one 400, never a 503.
func TestFuzzLogoutTokenHermetic(t *testing.T) {
	saved := http.DefaultTransport
	http.DefaultTransport = staticTransport{}
	defer func() { http.DefaultTransport = saved }()

	key := fuzzSigningKey(t)
	m := fuzzHandler(t, key)
	for i, tok := range fuzzLogoutSeeds(key) {
		want := http.StatusBadRequest
		if i < 3 { // valid, without sid, without typ
			want = http.StatusOK
		}
		if got := checkLogoutToken(t, m, key, tok, "", "application/x-www-form-urlencoded"); got != want {
			t.Errorf("seed %d: status %d, want %d", i, got, want)
		}
	}
}
