package oidcauth

// A scriptable, in-process OpenID Provider for the integration tests, and
// the rig that drives the handler against it. It does what a real IdP will
// not: sign with the wrong key or no key, mint tokens for other audiences,
// rotate keys mid-session, fail or redirect at the token endpoint.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
)

// itClock is the handler's and the IdP's clock. It starts at the wall
// clock and moves only when a test says so.
type itClock struct {
	mu sync.Mutex
	t  time.Time
}

func newITClock() *itClock { return &itClock{t: time.Now().Truncate(time.Second)} }

func (c *itClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *itClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// opKey is a signing key of the fake OP.
type opKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

var (
	rsaKeysOnce sync.Once
	rsaKeys     []*rsa.PrivateKey
)

// testRSAKey returns one of a few RSA keys made once per test binary
// (generating 2048-bit keys under -race is slow).
func testRSAKey(i int) *rsa.PrivateKey {
	rsaKeysOnce.Do(func() {
		var wg sync.WaitGroup
		rsaKeys = make([]*rsa.PrivateKey, 4)
		for j := range rsaKeys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				rsaKeys[j] = k
			}()
		}
		wg.Wait()
	})
	return rsaKeys[i%len(rsaKeys)]
}

func newRSAOPKey(kid string, i int) *opKey {
	return &opKey{kid: kid, alg: jose.RS256, priv: testRSAKey(i)}
}

func newECOPKey(kid string) *opKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &opKey{kid: kid, alg: jose.ES256, priv: k}
}

func (k *opKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a compact JWS of claims with the key, its kid and typ.
func (k *opKey) sign(claims map[string]any, typ string) string {
	return signJWS(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, claims, typ)
}

func signJWS(key jose.SigningKey, claims map[string]any, typ string) string {
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(key, opts)
	if err != nil {
		panic(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return out
}

// signNone makes an unsigned JWT (`alg: none`).
func signNone(claims map[string]any, kid string) string {
	hdr := map[string]any{"alg": "none", "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	h, _ := json.Marshal(hdr)
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// signHS256 signs with a symmetric key, as an attacker who knows the client
// secret (or the IdP's public key) would.
func signHS256(claims map[string]any, secret []byte, kid string) string {
	return signJWS(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: kid}}, claims, "JWT")
}

// publicKeyPEM is the PEM encoding of an RSA public key, the bytes an
// HS256/RS256 confusion attack uses as the HMAC key.
func publicKeyPEM(k *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// opCode is an authorization code the fake OP handed out.
type opCode struct {
	clientID, redirectURI, challenge, nonce string
	sub, sid                                string
	used                                    bool
}

// opGrant is what a refresh token stands for.
type opGrant struct {
	sub, sid string
}

// opScript is what a test changes about the fake OP's answers. Every hook
// runs with the OP's lock held.
type opScript struct {
	// discovery: fields added to (or, with a nil value, removed from) the
	// discovery document.
	discovery map[string]any
	// token: answers a token request itself when it returns true (500,
	// redirect, slow, down...). grant is the grant_type.
	token func(w http.ResponseWriter, r *http.Request, grant string) bool
	// idClaims changes the ID token's claims; sign replaces its signing.
	idClaims func(grant string, c map[string]any)
	signID   func(c map[string]any) string
	// noIDToken leaves the ID token out of refresh responses.
	noIDTokenOnRefresh bool
	// accessClaims changes a JWT access token's claims; signAccess
	// replaces its signing.
	accessClaims func(grant string, c map[string]any)
	signAccess   func(c map[string]any) string
	opaque       bool          // opaque access tokens instead of JWTs
	accessTTL    time.Duration // access token lifetime (expires_in)
	// noRefreshOnRefresh leaves refresh_token out of refresh responses
	// (the old one stays valid); otherwise refresh tokens rotate.
	noRefreshOnRefresh bool
	noRefreshToken     bool // no refresh token at all, even at login
	allowCodeReuse     bool // accept an authorization code twice
	jwksStatus         int  // when set, the JWKS endpoint fails with this status
	atHash             string
	// tokenType is the token_type of token responses: "" is "Bearer",
	// "-" leaves it out; tokenTypeOnRefresh, if set, is used for refreshes.
	tokenType, tokenTypeOnRefresh string
}

// fakeOP is the in-process OpenID Provider.
type fakeOP struct {
	t            *testing.T
	clock        *itClock
	srv          *httptest.Server
	base         string // where the endpoints are
	issuer       string // the issuer identifier: base, unless a test says otherwise
	clientID     string
	clientSecret string

	mu        sync.Mutex
	script    opScript
	published []*opKey // in the JWKS
	active    *opKey   // signs tokens
	codes     map[string]*opCode
	refresh   map[string]*opGrant
	nextSub   string
	nextSID   string
	email     string
	sidSeq    int

	// observations
	discoveryFetches atomic.Int64
	jwksFetches      atomic.Int64
	tokenCalls       map[string]int // by grant_type
	authStyles       []string       // "basic" or "post", per token call
	verifiers        []string       // code_verifier of each code exchange
	refreshSent      []string       // refresh_token of each refresh grant
	lastIDToken      string
	lastAccessToken  string
	lastRefreshToken string
}

// newFakeOP makes an OP listening on a fresh loopback port.
func newFakeOP(t *testing.T, clock *itClock) *fakeOP {
	op := newFakeOPUnstarted(t, clock)
	op.srv.Start()
	op.base, op.issuer = op.srv.URL, op.srv.URL
	return op
}

func newFakeOPUnstarted(t *testing.T, clock *itClock) *fakeOP {
	op := &fakeOP{
		t:            t,
		clock:        clock,
		clientID:     "client-" + hex.EncodeToString(opRandomBytes(6)),
		clientSecret: "secret-" + hex.EncodeToString(opRandomBytes(20)),
		codes:        map[string]*opCode{},
		refresh:      map[string]*opGrant{},
		tokenCalls:   map[string]int{},
		nextSub:      "user-1",
		email:        "user1@example.com",
	}
	op.active = newRSAOPKey("key-1", 0)
	op.published = []*opKey{op.active}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", op.serveDiscovery)
	mux.HandleFunc("GET /jwks", op.serveJWKS)
	mux.HandleFunc("POST /token", op.serveToken)
	op.srv = httptest.NewUnstartedServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

// startOn starts the OP on addr (a port a handler was configured with
// while nothing listened there).
func (op *fakeOP) startOn(addr string) {
	var ln net.Listener
	var err error
	for range 50 { // the port was just freed; it may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		op.t.Fatalf("listening on %s: %v", addr, err)
	}
	op.srv.Listener.Close()
	op.srv.Listener = ln
	op.srv.Start()
	op.base, op.issuer = op.srv.URL, op.srv.URL
}

func opRandomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// set changes the script under the OP's lock.
func (op *fakeOP) set(f func(s *opScript)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(&op.script)
}

// rotate publishes a new key and signs with it from now on; keepOld says
// whether the old keys stay in the JWKS.
func (op *fakeOP) rotate(k *opKey, keepOld bool) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if keepOld {
		op.published = append(op.published, k)
	} else {
		op.published = []*opKey{k}
	}
	op.active = k
}

func (op *fakeOP) activeKey() *opKey {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.active
}

func (op *fakeOP) setUser(sub, email, sid string) {
	op.mu.Lock()
	op.nextSub, op.email, op.nextSID = sub, email, sid
	op.mu.Unlock()
}

func (op *fakeOP) grants(grant string) int {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.tokenCalls[grant]
}

func (op *fakeOP) observed() (styles, verifiers, refreshSent []string, idToken string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	return append([]string(nil), op.authStyles...), append([]string(nil), op.verifiers...),
		append([]string(nil), op.refreshSent...), op.lastIDToken
}

func (op *fakeOP) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	op.discoveryFetches.Add(1)
	doc := map[string]any{
		"issuer":                                op.issuer,
		"authorization_endpoint":                op.base + "/authorize",
		"token_endpoint":                        op.base + "/token",
		"jwks_uri":                              op.base + "/jwks",
		"end_session_endpoint":                  op.base + "/logout",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	op.mu.Lock()
	for k, v := range op.script.discovery {
		if v == nil {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	op.mu.Unlock()
	opWriteJSON(w, http.StatusOK, doc)
}

func (op *fakeOP) serveJWKS(w http.ResponseWriter, r *http.Request) {
	op.jwksFetches.Add(1)
	op.mu.Lock()
	if st := op.script.jwksStatus; st != 0 {
		op.mu.Unlock()
		http.Error(w, "unavailable", st)
		return
	}
	var set jose.JSONWebKeySet
	for _, k := range op.published {
		set.Keys = append(set.Keys, k.public())
	}
	op.mu.Unlock()
	opWriteJSON(w, http.StatusOK, set)
}

func opWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func opTokenError(w http.ResponseWriter, status int, code, desc string) {
	opWriteJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// authorize plays the authorization endpoint for a login redirect: it
// checks the request, "logs the user in" and returns the code that the
// browser would bring back to the callback.
func (op *fakeOP) authorize(location string) string {
	op.t.Helper()
	u, err := url.Parse(location)
	if err != nil {
		op.t.Fatalf("authorize: bad location %q: %v", location, err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != op.base+"/authorize" {
		op.t.Fatalf("login redirect goes to %q, want the authorization endpoint %q", got, op.base+"/authorize")
	}
	q := u.Query()
	for _, p := range []string{"client_id", "redirect_uri", "state", "nonce", "code_challenge"} {
		if q.Get(p) == "" {
			op.t.Fatalf("authorization request lacks %s: %s", p, location)
		}
	}
	if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" {
		op.t.Fatalf("authorization request: response_type=%q code_challenge_method=%q", q.Get("response_type"), q.Get("code_challenge_method"))
	}
	if q.Get("client_id") != op.clientID {
		op.t.Fatalf("authorization request client_id=%q, want %q", q.Get("client_id"), op.clientID)
	}
	if !strings.Contains(" "+q.Get("scope")+" ", " openid ") {
		op.t.Fatalf("authorization request scope %q lacks openid", q.Get("scope"))
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	sid := op.nextSID
	if sid == "" {
		op.sidSeq++
		sid = fmt.Sprintf("sid-%d", op.sidSeq)
	}
	code := "code-" + hex.EncodeToString(opRandomBytes(12))
	op.codes[code] = &opCode{
		clientID:    q.Get("client_id"),
		redirectURI: q.Get("redirect_uri"),
		challenge:   q.Get("code_challenge"),
		nonce:       q.Get("nonce"),
		sub:         op.nextSub,
		sid:         sid,
	}
	return code
}

func (op *fakeOP) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		opTokenError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	grant := r.PostForm.Get("grant_type")

	op.mu.Lock()
	op.tokenCalls[grant]++
	hook := op.script.token
	op.mu.Unlock()
	// The hook runs without the lock, so that a slow answer does not
	// block the JWKS or the counters.
	if hook != nil && hook(w, r, grant) {
		return
	}

	op.mu.Lock()
	defer op.mu.Unlock()

	// Client authentication: Basic or in the form, never both.
	id, secret, basic := r.BasicAuth()
	style := "basic"
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if r.PostForm.Has("client_secret") {
			opTokenError(w, http.StatusBadRequest, "invalid_request", "two client authentication methods")
			return
		}
	} else {
		style = "post"
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	op.authStyles = append(op.authStyles, style)
	if id != op.clientID || secret != op.clientSecret {
		opTokenError(w, http.StatusUnauthorized, "invalid_client", "bad client credentials")
		return
	}

	var sub, sid, nonce string
	switch grant {
	case "authorization_code":
		c := op.codes[r.PostForm.Get("code")]
		if c == nil || (c.used && !op.script.allowCodeReuse) {
			opTokenError(w, http.StatusBadRequest, "invalid_grant", "unknown or used code")
			return
		}
		c.used = true
		if r.PostForm.Get("redirect_uri") != c.redirectURI {
			opTokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs")
			return
		}
		verifier := r.PostForm.Get("code_verifier")
		op.verifiers = append(op.verifiers, verifier)
		sum := sha256.Sum256([]byte(verifier))
		if verifier == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			opTokenError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
		sub, sid, nonce = c.sub, c.sid, c.nonce
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		op.refreshSent = append(op.refreshSent, rt)
		g := op.refresh[rt]
		if g == nil {
			opTokenError(w, http.StatusBadRequest, "invalid_grant", "refresh token is invalid or was rotated")
			return
		}
		sub, sid = g.sub, g.sid
	default:
		opTokenError(w, http.StatusBadRequest, "unsupported_grant_type", grant)
		return
	}

	now := op.clock.Now()
	ttl := op.script.accessTTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}

	var access string
	if op.script.opaque {
		access = "opaque-" + hex.EncodeToString(opRandomBytes(16))
	} else {
		ac := map[string]any{
			"iss":       op.issuer,
			"aud":       []string{op.clientID},
			"sub":       sub,
			"iat":       now.Unix(),
			"exp":       now.Add(ttl).Unix(),
			"jti":       hex.EncodeToString(opRandomBytes(8)),
			"scope":     "openid profile email offline_access",
			"client_id": op.clientID,
		}
		if op.script.accessClaims != nil {
			op.script.accessClaims(grant, ac)
		}
		if op.script.signAccess != nil {
			access = op.script.signAccess(ac)
		} else {
			access = op.active.sign(ac, "at+jwt")
		}
	}

	resp := map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   int(ttl / time.Second),
	}
	tt := op.script.tokenType
	if grant == "refresh_token" && op.script.tokenTypeOnRefresh != "" {
		tt = op.script.tokenTypeOnRefresh
	}
	switch tt {
	case "":
	case "-":
		delete(resp, "token_type")
	default:
		resp["token_type"] = tt
	}
	if grant == "authorization_code" || !op.script.noIDTokenOnRefresh {
		ic := map[string]any{
			"iss":            op.issuer,
			"aud":            op.clientID,
			"sub":            sub,
			"sid":            sid,
			"iat":            now.Unix(),
			"exp":            now.Add(time.Hour).Unix(),
			"email":          op.email,
			"email_verified": true,
			"name":           "Test User",
		}
		if nonce != "" {
			ic["nonce"] = nonce
		}
		if op.script.atHash != "" {
			ic["at_hash"] = op.script.atHash
		} else {
			ic["at_hash"] = accessTokenHash(access)
		}
		if op.script.idClaims != nil {
			op.script.idClaims(grant, ic)
		}
		var idt string
		if op.script.signID != nil {
			idt = op.script.signID(ic)
		} else {
			idt = op.active.sign(ic, "JWT")
		}
		resp["id_token"] = idt
		op.lastIDToken = idt
	}
	issueRefresh := !op.script.noRefreshToken && (grant == "authorization_code" || !op.script.noRefreshOnRefresh)
	if issueRefresh {
		if grant == "refresh_token" {
			delete(op.refresh, r.PostForm.Get("refresh_token")) // rotation
		}
		rt := "rt-" + hex.EncodeToString(opRandomBytes(16))
		op.refresh[rt] = &opGrant{sub: sub, sid: sid}
		resp["refresh_token"] = rt
		op.lastRefreshToken = rt
	}
	op.lastAccessToken = access
	opWriteJSON(w, http.StatusOK, resp)
}

// accessTokenHash is the at_hash of an access token for RS256/ES256.
func accessTokenHash(access string) string {
	sum := sha256.Sum256([]byte(access))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// hangUp answers by dropping the connection, as a crashed IdP would.
func opHangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
}

// itStorageRoot holds Caddy storage for the handlers these tests
// provision (revocations are kept there).
var (
	itCtxOnce sync.Once
	itCtx     caddy.Context
	itCtxErr  error
)

// itCaddyContext returns a caddy.Context with storage in a temporary
// directory, made once: provisioning a context sets process-wide defaults.
func itCaddyContext(t *testing.T) caddy.Context {
	t.Helper()
	itCtxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oidcauth-test-storage-")
		if err != nil {
			itCtxErr = err
			return
		}
		raw, _ := json.Marshal(map[string]string{"module": "file_system", "root": dir})
		itCtx, itCtxErr = caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	})
	if itCtxErr != nil {
		t.Fatalf("caddy context: %v", itCtxErr)
	}
	return itCtx
}

// itEnv is one handler in front of one fake OP.
type itEnv struct {
	t     *testing.T
	clock *itClock
	op    *fakeOP
	h     *OIDCAuth
}

const (
	itHost         = "app.test"
	itCookieSecret = "0123456789abcdef0123456789abcdef-test"
)

// newITEnv starts an OP and provisions a handler for it; configure
// changes the handler's settings before Provision.
func newITEnv(t *testing.T, configure ...func(*OIDCAuth)) *itEnv {
	t.Helper()
	clock := newITClock()
	op := newFakeOP(t, clock)
	e := &itEnv{t: t, clock: clock, op: op}
	e.h = e.provision(op.issuer, configure...)
	return e
}

func (e *itEnv) provision(issuer string, configure ...func(*OIDCAuth)) *OIDCAuth {
	e.t.Helper()
	h := &OIDCAuth{
		Issuer:       issuer,
		ClientID:     e.op.clientID,
		ClientSecret: e.op.clientSecret,
		CookieSecret: itCookieSecret,
		now:          e.clock.Now,
	}
	for _, f := range configure {
		f(h)
	}
	ctx, _ := caddy.NewContext(itCaddyContext(e.t))
	if err := h.Provision(ctx); err != nil {
		e.t.Fatalf("Provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		e.t.Fatalf("Validate: %v", err)
	}
	e.t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			e.t.Errorf("Cleanup: %v", err)
		}
	})
	return h
}

// itCookie is a cookie as a browser keeps it.
type itCookie struct {
	name, value, path string
	httpOnly          bool
}

// itBrowser keeps cookies by name and path, as a browser does for one
// host, and sends requests straight to the handler.
type itBrowser struct {
	e       *itEnv
	mu      sync.Mutex
	cookies map[string]itCookie // key: path + "\x00" + name
}

func (e *itEnv) browser() *itBrowser {
	return &itBrowser{e: e, cookies: map[string]itCookie{}}
}

// clone copies the browser's cookies, as an attacker copying them would.
func (b *itBrowser) clone() *itBrowser {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &itBrowser{e: b.e, cookies: map[string]itCookie{}}
	for k, v := range b.cookies {
		c.cookies[k] = v
	}
	return c
}

func (b *itBrowser) cookie(name string) (itCookie, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cookies {
		if c.name == name {
			return c, true
		}
	}
	return itCookie{}, false
}

func (b *itBrowser) store(res *http.Response) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range res.Cookies() {
		path := c.Path
		if path == "" {
			path = "/"
		}
		key := path + "\x00" + c.Name
		if c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(b.cookies, key)
			continue
		}
		b.cookies[key] = itCookie{name: c.Name, value: c.Value, path: path, httpOnly: c.HttpOnly}
	}
}

func itPathMatches(cookiePath, reqPath string) bool {
	if cookiePath == "/" || cookiePath == reqPath {
		return true
	}
	return strings.HasPrefix(reqPath, strings.TrimSuffix(cookiePath, "/")+"/")
}

// Request kinds.
const (
	nav = "navigate" // a browser page load
	api = "api"      // a fetch() from a page
)

// itResult is the handler's answer to one request.
type itResult struct {
	*http.Response
	body        string
	reachedNext bool
	user, email string
	sid         string
}

func (r *itResult) location() string { return r.Header.Get("Location") }

// setCookie returns the Set-Cookie of the response for name, if any.
func (r *itResult) setCookie(name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (b *itBrowser) get(target, kind string) *itResult {
	b.e.t.Helper()
	return b.do(httptest.NewRequest(http.MethodGet, "http://"+itHost+target, nil), kind)
}

// do sends req to the handler with the browser's cookies and the headers
// of its kind, and keeps the cookies of the answer.
func (b *itBrowser) do(req *http.Request, kind string) *itResult {
	b.e.t.Helper()
	switch kind {
	case nav:
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
	case api:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		req.Header.Set("Sec-Fetch-Dest", "empty")
	}
	b.mu.Lock()
	for _, c := range b.cookies {
		if itPathMatches(c.path, req.URL.Path) {
			req.AddCookie(&http.Cookie{Name: c.name, Value: c.value})
		}
	}
	b.mu.Unlock()
	res := serveIT(b.e.h, req)
	b.store(res.Response)
	return res
}

// serveIT runs one request through the handler, with a next handler that
// reports the identity placeholders it sees.
func serveIT(h *OIDCAuth, req *http.Request) *itResult {
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	out := &itResult{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		out.reachedNext = true
		out.user = repl.ReplaceAll("{http.auth.user.id}", "")
		out.email = repl.ReplaceAll("{http.auth.user.email}", "")
		out.sid = repl.ReplaceAll("{http.auth.user.sid}", "")
		w.WriteHeader(http.StatusOK)
		_, err := io.WriteString(w, "protected content")
		return err
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		status := http.StatusInternalServerError
		if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
			status = he.StatusCode
		}
		rec.WriteHeader(status)
	}
	out.Response = rec.Result()
	body, _ := io.ReadAll(out.Body)
	out.body = string(body)
	return out
}

// sessionCookieName is the session cookie's name on plain HTTP.
func (e *itEnv) sessionCookieName() string { return e.h.CookieName }

// startLogin requests a protected page and returns the login redirect.
func (b *itBrowser) startLogin(target string) (location string, q url.Values) {
	b.e.t.Helper()
	res := b.get(target, nav)
	if res.StatusCode != http.StatusFound {
		b.e.t.Fatalf("GET %s: status %d, want 302 to the IdP; body: %s", target, res.StatusCode, res.body)
	}
	u, err := url.Parse(res.location())
	if err != nil {
		b.e.t.Fatal(err)
	}
	return res.location(), u.Query()
}

// callbackURL builds the callback the IdP would redirect to.
func itCallbackURL(code, state string, extra ...string) string {
	q := url.Values{"code": {code}, "state": {state}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return "/auth/callback?" + q.Encode()
}

// login runs a whole login from a request for target and returns the
// callback's answer.
func (b *itBrowser) login(target string) *itResult {
	b.e.t.Helper()
	loc, q := b.startLogin(target)
	code := b.e.op.authorize(loc)
	return b.get(itCallbackURL(code, q.Get("state")), nav)
}

// mustLogin logs in and fails the test unless the callback succeeded.
func (b *itBrowser) mustLogin(target string) *itResult {
	b.e.t.Helper()
	res := b.login(target)
	if res.StatusCode != http.StatusFound || res.location() != target {
		b.e.t.Fatalf("callback: status %d location %q, want 302 to %q; body: %s", res.StatusCode, res.location(), target, res.body)
	}
	return res
}

// expectServed fails unless the request reached the next handler.
func expectServed(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.StatusCode != http.StatusOK || !res.reachedNext {
		t.Fatalf("%s: status %d (next reached: %v), want 200 from the next handler; location %q body %q",
			what, res.StatusCode, res.reachedNext, res.location(), truncateForLog(res.body))
	}
}

// expectLoginRedirect fails unless a navigation was sent to the IdP.
func (e *itEnv) expectLoginRedirect(res *itResult, what string) {
	e.t.Helper()
	if res.reachedNext {
		e.t.Fatalf("%s: request reached the next handler", what)
	}
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.location(), e.op.base+"/authorize?") {
		e.t.Fatalf("%s: status %d location %q, want 302 to the authorization endpoint", what, res.StatusCode, res.location())
	}
}

// expectAPI401 fails unless an API call was answered 401 with JSON.
func expectAPI401(t *testing.T, res *itResult, what string) {
	t.Helper()
	if res.reachedNext {
		t.Fatalf("%s: request reached the next handler", what)
	}
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%s: status %d, want 401; body %q", what, res.StatusCode, truncateForLog(res.body))
	}
	if res.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", what)
	}
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		t.Errorf("%s: 401 with Content-Type %q, want JSON", what, res.Header.Get("Content-Type"))
	}
}

// expectNoSession fails if the response sets a (non-expired) session cookie.
func (e *itEnv) expectNoSession(res *itResult, what string) {
	e.t.Helper()
	for _, c := range res.Cookies() {
		if strings.HasPrefix(c.Name, e.sessionCookieName()) && !strings.Contains(c.Name, "_s_") && c.MaxAge >= 0 && c.Value != "" {
			e.t.Fatalf("%s: response sets cookie %s", what, c.Name)
		}
	}
}

func truncateForLog(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// freeLoopbackAddr returns a loopback address on which nothing listens.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
