//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// verifyingUpstream is an upstream that trusts no header but the signed
// assertion: it checks it against the JWKS it fetched from Caddy (once, and
// again only when told), as a service behind Caddy would.
type verifyingUpstream struct {
	t        *testing.T
	jwksURL  string
	audience string
	hits     atomic.Int64

	mu   sync.Mutex
	jwks jose.JSONWebKeySet
}

// upstreamVerdict is what the verifying upstream answers.
type upstreamVerdict struct {
	Verified  bool           `json:"verified"`
	Error     string         `json:"error,omitempty"`
	KeyID     string         `json:"kid,omitempty"`
	Assertion string         `json:"assertion,omitempty"`
	Claims    map[string]any `json:"claims,omitempty"`
	Forged    []string       `json:"forged,omitempty"` // other values of the header
}

func (u *verifyingUpstream) fetchJWKS() (jose.JSONWebKeySet, http.Header) {
	u.t.Helper()
	resp, err := plainClient().Get(u.jwksURL)
	if err != nil {
		u.t.Fatalf("fetching the JWKS: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &set) != nil {
		u.t.Fatalf("JWKS: %d %q", resp.StatusCode, body)
	}
	return set, resp.Header
}

func (u *verifyingUpstream) refetch() {
	set, _ := u.fetchJWKS()
	u.mu.Lock()
	u.jwks = set
	u.mu.Unlock()
}

// verify checks an assertion: ES256 signature against the held JWKS, aud,
// exp (no leeway) at the given time.
func (u *verifyingUpstream) verify(tok, aud string, at time.Time) (map[string]any, string, error) {
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, "", err
	}
	kid := parsed.Headers[0].KeyID
	u.mu.Lock()
	set := u.jwks
	u.mu.Unlock()
	var std jwt.Claims
	var all map[string]any
	if err := parsed.Claims(set, &std, &all); err != nil {
		return nil, kid, err
	}
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: at}, 0); err != nil {
		return nil, kid, err
	}
	return all, kid, nil
}

func (u *verifyingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	var v upstreamVerdict
	vals := r.Header.Values("X-Auth-Assertion")
	for name, vs := range r.Header {
		if name != "X-Auth-Assertion" && strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "x-auth-assertion") {
			v.Forged = append(v.Forged, vs...)
		}
	}
	switch len(vals) {
	case 0:
		v.Error = "no assertion"
	case 1:
		v.Assertion = vals[0]
		claims, kid, err := u.verify(vals[0], u.audience, time.Now())
		v.Verified, v.Claims, v.KeyID = err == nil, claims, kid
		if err != nil {
			v.Error = err.Error()
		}
	default:
		v.Error = fmt.Sprintf("%d assertions", len(vals))
		v.Forged = append(v.Forged, vals...)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// TestUpstreamJWT: an upstream verifies the assertion with the JWKS it
// fetched from Caddy (signature, aud, exp, claims); a client's own
// assertion never arrives; after a logout nothing reaches the upstream;
// after a key rotation the upstream's old copy of the JWKS keeps working,
// and the old key leaves the JWKS once it retired.
func TestUpstreamJWT(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	app := origin(port)
	i := startIdP(t, idpOptions{clients: []idpClient{registration(clientID, clientSecret, port)}})
	up := &verifyingUpstream{t: t, jwksURL: app + "/auth/jwks.json", audience: app}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	const (
		lifetime = 5 * time.Second
		rotation = 16 * time.Second // the old key retires lifetime + rotation/4 = 9 s after it stops signing
	)
	c := startSites(t, app+"/", fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	reverse_proxy %s
}
`, port, oidcBlock(i.Issuer, clientID, clientSecret, fmt.Sprintf("upstream_jwt {\n lifetime %s\n key_rotation %s\n}", lifetime, rotation)), strings.TrimPrefix(srv.URL, "http://")))

	// The JWKS needs no session, can be cached, and is on the admin API too.
	set, hdr := up.fetchJWKS()
	if cc := hdr.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") || hdr.Get("ETag") == "" {
		t.Errorf("JWKS caching headers: Cache-Control %q ETag %q", cc, hdr.Get("ETag"))
	}
	if len(set.Keys) != 2 {
		t.Fatalf("the JWKS should hold the signing key and the next one: %d keys", len(set.Keys))
	}
	resp, err := plainClient().Get("http://" + c.adminAddr + "/oidc_auth/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var adminSet jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&adminSet); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, k := range set.Keys {
		if len(adminSet.Key(k.KeyID)) != 1 {
			t.Errorf("the admin API's JWKS lacks key %s", k.KeyID)
		}
	}
	up.refetch()

	b := newBrowser(t)
	if j := b.login(app+"/", "alice", "alice-password"); j.final.Status != http.StatusOK {
		t.Fatalf("login:\n%s", describeChain(j.chain))
	}
	ask := func(b *browser, hdr http.Header) upstreamVerdict {
		t.Helper()
		p := b.do(http.MethodGet, app+"/echo", hdr, nil)
		if p.Status != http.StatusOK {
			t.Fatalf("request: %s", p)
		}
		var v upstreamVerdict
		if err := json.Unmarshal([]byte(p.Body), &v); err != nil {
			t.Fatalf("upstream reply %q: %v", p.Body, err)
		}
		return v
	}

	// A client's own assertion, even one signed with the real kid, is
	// stripped in every spelling; only Caddy's arrives.
	forgedKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: forgedKey, KeyID: set.Keys[0].KeyID}}, nil)
	now := time.Now()
	forged, _ := jwt.Signed(signer).Claims(map[string]any{"iss": app, "aud": app, "sub": "usr_mallory", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
	if _, _, err := up.verify(forged, app, now); err == nil {
		t.Fatal("the upstream's check accepts a forged assertion: the test proves nothing")
	}
	hdr = apiCall.Clone()
	hdr.Set("X-Auth-Assertion", forged)
	hdr["x_auth_assertion"] = []string{forged}
	v := ask(b, hdr)
	if !v.Verified || len(v.Forged) != 0 || v.Assertion == forged {
		t.Fatalf("with a forged assertion sent: %+v", v)
	}

	// Signature (above), then aud, exp and the claims.
	claims := v.Claims
	for k, want := range map[string]any{"iss": app, "aud": app, "sub": aliceSub, "email": "alice@example.com", "oid": "org_1"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if roles, _ := claims["roles"].([]any); len(roles) != 1 || roles[0] != "admin" {
		t.Errorf("roles = %v, want [admin]", claims["roles"])
	}
	if sid, _ := claims["sid"].(string); sid == "" {
		t.Error("no sid")
	}
	if life := claims["exp"].(float64) - claims["iat"].(float64); life != lifetime.Seconds() {
		t.Errorf("exp - iat = %v s, want %v", life, lifetime.Seconds())
	}
	if _, _, err := up.verify(v.Assertion, "http://127.0.0.1:1", time.Now()); err == nil {
		t.Error("the assertion verified for another audience")
	}
	exp := time.Unix(int64(claims["exp"].(float64)), 0)
	if _, _, err := up.verify(v.Assertion, app, exp.Add(time.Second)); err == nil {
		t.Error("the assertion verified after its exp")
	}

	// Key rotation: the upstream keeps the JWKS it holds; every assertion
	// keeps verifying, across the switch to the key it learned in advance.
	oldKID := v.KeyID
	deadline := time.Now().Add(2*rotation + 10*time.Second)
	var newKID string
	for time.Now().Before(deadline) {
		v := ask(b, apiCall)
		if !v.Verified {
			t.Fatalf("an upstream holding the JWKS of before the rotation could not verify (kid %s): %s", v.KeyID, v.Error)
		}
		if v.KeyID != oldKID {
			newKID = v.KeyID
			break
		}
		time.Sleep(time.Second)
	}
	if newKID == "" {
		t.Fatalf("no rotation within %s", 2*rotation+10*time.Second)
	}
	// The old key is published until its assertions have expired, then
	// retires; the upstream's old copy still verifies what is signed now.
	deadline = time.Now().Add(rotation + 10*time.Second)
	for {
		fresh, _ := up.fetchJWKS()
		if len(fresh.Key(newKID)) != 1 {
			t.Fatalf("the signing key %s is not in the JWKS", newKID)
		}
		if len(fresh.Key(oldKID)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old key %s did not retire", oldKID)
		}
		time.Sleep(time.Second)
	}
	if v := ask(b, apiCall); !v.Verified {
		t.Fatalf("after the old key retired, the upstream's old JWKS no longer verifies: %s", v.Error)
	}

	// Logout: a copy of the old cookies gets no assertion, because it gets
	// nowhere near the upstream.
	copied := b.withCookies(app, b.appCookies(app))
	if p := b.navigate(app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("logout: %s", p)
	}
	before := up.hits.Load()
	if p := copied.do(http.MethodGet, app+"/echo", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("the old cookies after logout: %s", p)
	}
	if p := b.do(http.MethodGet, app+"/echo", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("after logout: %s", p)
	}
	if n := up.hits.Load() - before; n != 0 {
		t.Errorf("%d requests reached the upstream after the logout", n)
	}
}

// TestUpstreamJWTSharedStorage: two Caddy instances on one storage publish
// the same generated keys, and an instance started after one stopped
// (a restart) finds them there.
func TestUpstreamJWTSharedStorage(t *testing.T) {
	t.Parallel()
	storage := filepath.Join(t.TempDir(), "storage")
	start := func() (*caddy, string) {
		port, admin := freePort(t), freePort(t)
		app := origin(port)
		site := fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	respond "hello {http.auth.user.id}"
}
`, port, oidcBlock("http://127.0.0.1:1", clientID, clientSecret, "upstream_jwt"))
		return startCaddy(t, t.TempDir(), admin, globalOptions(admin, storage)+site, app+"/"), app
	}
	kids := func(app string) string {
		t.Helper()
		up := &verifyingUpstream{t: t, jwksURL: app + "/auth/jwks.json"}
		set, _ := up.fetchJWKS()
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.KeyID)
		}
		return strings.Join(ids, ",")
	}
	a, appA := start()
	_, appB := start()
	first := kids(appA)
	if first == "" || strings.Count(first, ",") != 1 {
		t.Fatalf("want the signing key and the next one, got %q", first)
	}
	if got := kids(appB); got != first {
		t.Fatalf("instances on one storage publish different keys: %q and %q", first, got)
	}
	a.proc.stop()
	_, appC := start()
	if got := kids(appC); got != first {
		t.Fatalf("after a restart the keys changed: %q, want %q", got, first)
	}
}
