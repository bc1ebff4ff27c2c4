package oidcauth

import (
	"bytes"
	"compress/flate"
	"hash/maphash"
	"io"
	"sync"

	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Cookie layout. Values are base64url(version || nonce || AES-256-GCM
// ciphertext); the additional data binds each value to its purpose, so a
// state cookie cannot be replayed as a session cookie and vice versa. The
// key is derived per issuer and client ID, so a cookie of one app is
// rejected by another even when they share a cookie_secret.
const (
	cookieVersion = 1

	// A cookie's value is kept under this many bytes; larger values are
	// split into chunks named <name>, <name>_1, <name>_2, ...
	maxChunkLen = 3800
	maxChunks   = 8

	// Each login attempt has its own state cookie, so that parallel tabs
	// do not overwrite each other; at most this many are outstanding.
	maxStateCookies = 5
	stateLifetime   = 10 * time.Minute
	maxReturnToLen  = 1024

	purposeSession = "session"
	purposeIDToken = "id_token"
	purposeState   = "state"
	purposeRefresh = "refresh"
)

var errBadCookie = errors.New("invalid cookie")

// cookieCodec encrypts, decrypts, chunks and names this app's cookies.
type cookieCodec struct {
	aead     cipher.AEAD   // from the current secret: seals and opens
	previous []cipher.AEAD // from older secrets: only open, during a rotation
	name     string        // base name, without a __Host-/__Secure- prefix

	// Decoded sessions by a keyed 128-bit hash of their sealed value, so
	// a session seen before costs no decryption or parsing. The entries are
	// shared and must not be modified. The cache lives and dies with the
	// codec, so a reload that changes the secrets starts it afresh.
	seeds   [2]maphash.Seed
	cacheMu sync.RWMutex
	cache   map[[2]uint64]*session
}

// maxCachedSessions bounds the decoded-session cache (a few KB each).
const maxCachedSessions = 20_000

func newCookieCodec(secret []byte, issuer, clientID, name string, previous ...[]byte) (*cookieCodec, error) {
	c := &cookieCodec{
		name:  name,
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		cache: map[[2]uint64]*session{},
	}
	var err error
	if c.aead, err = deriveAEAD(secret, issuer, clientID); err != nil {
		return nil, err
	}
	for _, p := range previous {
		aead, err := deriveAEAD(p, issuer, clientID)
		if err != nil {
			return nil, err
		}
		c.previous = append(c.previous, aead)
	}
	return c, nil
}

func deriveAEAD(secret []byte, issuer, clientID string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, []byte("oidc_auth cookies v1"), issuer+"\x00"+clientID, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (c *cookieCodec) seal(purpose string, plaintext []byte) string {
	ns := c.aead.NonceSize()
	buf := make([]byte, 1+ns, 1+ns+len(plaintext)+c.aead.Overhead())
	buf[0] = cookieVersion
	if _, err := rand.Read(buf[1 : 1+ns]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	buf = c.aead.Seal(buf, buf[1:1+ns], plaintext, []byte(purpose))
	return base64.RawURLEncoding.EncodeToString(buf)
}

func (c *cookieCodec) open(purpose, value string) ([]byte, error) {
	out, _, err := c.openKey(purpose, value)
	return out, err
}

// openKey decrypts a value; old reports that an older secret was needed,
// so the caller can rewrite the value with the current one.
func (c *cookieCodec) openKey(purpose, value string) (out []byte, old bool, err error) {
	// Strict: one sealed value has exactly one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(value)
	ns := c.aead.NonceSize()
	if err != nil || len(raw) < 1+ns+c.aead.Overhead() || raw[0] != cookieVersion {
		return nil, false, errBadCookie
	}
	nonce, ct := raw[1:1+ns], raw[1+ns:]
	if len(c.previous) == 0 {
		// Decrypt in place: one allocation less on every request.
		if out, err = c.aead.Open(ct[:0], nonce, ct, []byte(purpose)); err != nil {
			return nil, false, errBadCookie
		}
		return out, false, nil
	}
	// A failed Open may clobber its output, so no in-place attempts here.
	if out, err = c.aead.Open(nil, nonce, ct, []byte(purpose)); err == nil {
		return out, false, nil
	}
	for _, aead := range c.previous {
		if out, err = aead.Open(nil, nonce, ct, []byte(purpose)); err == nil {
			return out, true, nil
		}
	}
	return nil, false, errBadCookie
}

// cookieName returns the name as sent to the browser: with the __Host-
// prefix on HTTPS for cookies of path "/", __Secure- for other paths.
func cookieName(r *http.Request, base, path string) string {
	if r.TLS == nil {
		return base
	}
	if path == "/" {
		return "__Host-" + base
	}
	return "__Secure-" + base
}

func newCookie(r *http.Request, name, path, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	}
}

func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "_" + strconv.Itoa(i)
}

// readChunked reassembles a value written by writeChunked. The first
// cookie carries the chunk count as "<n>." when there is more than one.
func readChunked(r *http.Request, name string) (string, int, bool) {
	first, err := r.Cookie(name)
	if err != nil {
		return "", 0, false
	}
	v := first.Value
	dot := strings.IndexByte(v, '.')
	if dot < 0 {
		return v, 1, true
	}
	n, err := strconv.Atoi(v[:dot])
	if err != nil || n < 2 || n > maxChunks {
		return "", 1, false
	}
	var b strings.Builder
	b.WriteString(v[dot+1:])
	for i := 1; i < n; i++ {
		c, err := r.Cookie(chunkName(name, i))
		if err != nil {
			return "", n, false
		}
		b.WriteString(c.Value)
	}
	return b.String(), n, true
}

// writeChunked sets value under name, split into chunks when it is large,
// and expires chunks of an older, longer value that the request carried.
func writeChunked(w http.ResponseWriter, r *http.Request, name, path, value string, maxAge int) error {
	n := (len(value) + maxChunkLen - 1) / maxChunkLen
	if n > maxChunks {
		return fmt.Errorf("cookie value of %d bytes exceeds %d chunks", len(value), maxChunks)
	}
	if n <= 1 {
		http.SetCookie(w, newCookie(r, name, path, value, maxAge))
	} else {
		for i := range n {
			part := value[i*maxChunkLen : min(len(value), (i+1)*maxChunkLen)]
			if i == 0 {
				part = strconv.Itoa(n) + "." + part
			}
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, part, maxAge))
		}
	}
	for i := max(n, 1); i < maxChunks; i++ {
		if _, err := r.Cookie(chunkName(name, i)); err == nil {
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, "", -1))
		}
	}
	return nil
}

// clearChunked expires every chunk of name that the request carried.
func clearChunked(w http.ResponseWriter, r *http.Request, name, path string) {
	for i := range maxChunks {
		if _, err := r.Cookie(chunkName(name, i)); err == nil {
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, "", -1))
		}
	}
}

// session is what the session cookie holds.
type session struct {
	ID           string          `json:"i"`           // random; names this session in the revocation store
	Subject      string          `json:"s"`           // sub of the ID token
	SID          string          `json:"d,omitempty"` // sid of the ID token, for back-channel logout
	Created      int64           `json:"c"`           // unix seconds of the login; caps the session's age
	AccessToken  string          `json:"a"`
	RefreshToken string          `json:"r,omitempty"`
	Expiry       int64           `json:"e"` // access token expiry, unix seconds
	RefreshAt    int64           `json:"f"` // refresh from this time on, unix seconds
	Claims       json.RawMessage `json:"m,omitempty"`

	oldKey bool // sealed with a previous cookie secret: rewrite it
}

// loginState is what a state cookie holds for one login attempt.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Created  int64  `json:"c"`
	Post     bool   `json:"p,omitempty"` // a form post waits in the browser to be re-sent
}

func (c *cookieCodec) sessionCookieName(r *http.Request) string {
	return cookieName(r, c.name, "/")
}

func (c *cookieCodec) idTokenCookieName(r *http.Request, logoutPath string) string {
	return cookieName(r, c.name+"_idt", logoutPath)
}

func (c *cookieCodec) statePrefix(r *http.Request) string {
	return cookieName(r, c.name+"_s_", "/")
}

// readSession returns the request's session, or an error when there is
// none or it does not decrypt. It never says which check failed.
func (c *cookieCodec) readSession(r *http.Request) (*session, error) {
	v, _, ok := readChunked(r, c.sessionCookieName(r))
	if !ok {
		return nil, errBadCookie
	}
	key := [2]uint64{maphash.String(c.seeds[0], v), maphash.String(c.seeds[1], v)}
	c.cacheMu.RLock()
	s, hit := c.cache[key]
	c.cacheMu.RUnlock()
	if hit {
		return s, nil
	}
	s, err := c.decodeSession(v)
	if err != nil {
		return nil, err
	}
	c.cacheMu.Lock()
	if len(c.cache) >= maxCachedSessions {
		for k := range c.cache { // map order is random: drops about half
			if len(c.cache) < maxCachedSessions/2 {
				break
			}
			delete(c.cache, k)
		}
	}
	c.cache[key] = s
	c.cacheMu.Unlock()
	return s, nil
}

func (c *cookieCodec) decodeSession(v string) (*session, error) {
	sealed, old, err := c.openKey(purposeSession, v)
	if err != nil {
		return nil, err
	}
	plain, err := inflateSession(sealed)
	if err != nil {
		return nil, errBadCookie
	}
	s := new(session)
	if err := json.Unmarshal(plain, s); err != nil || s.ID == "" || s.Subject == "" || s.AccessToken == "" {
		return nil, errBadCookie
	}
	s.oldKey = old
	return s, nil
}

func (c *cookieCodec) writeSession(w http.ResponseWriter, r *http.Request, s *session, maxAge int) error {
	plain, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return writeChunked(w, r, c.sessionCookieName(r), "/", c.seal(purposeSession, deflateSession(plain)), maxAge)
}

// The session cookie rides on every request, and its size is most of what
// the handler costs there (the server parses every byte of it). Its JSON
// is deflated before sealing: a JWT's base64 text and the claims shrink by
// about a third. A sealed value that starts with '{' is uncompressed JSON,
// as older versions wrote it. Compressing before encrypting leaks nothing
// across users: only the IdP and the user's own claims go in.
const (
	sessionDeflated   = 0x01
	maxSessionInflate = 64 << 10
)

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestCompression)
	return w
}}

func deflateSession(plain []byte) []byte {
	var buf bytes.Buffer
	buf.WriteByte(sessionDeflated)
	fw := deflaters.Get().(*flate.Writer)
	fw.Reset(&buf)
	_, _ = fw.Write(plain)
	_ = fw.Close()
	deflaters.Put(fw)
	if buf.Len() >= len(plain) {
		return plain
	}
	return buf.Bytes()
}

func inflateSession(sealed []byte) ([]byte, error) {
	if len(sealed) == 0 || sealed[0] != sessionDeflated {
		return sealed, nil
	}
	fr := flate.NewReader(bytes.NewReader(sealed[1:]))
	defer fr.Close()
	out, err := io.ReadAll(io.LimitReader(fr, maxSessionInflate+1))
	if err != nil || len(out) > maxSessionInflate {
		return nil, errBadCookie
	}
	return out, nil
}

func (c *cookieCodec) writeIDToken(w http.ResponseWriter, r *http.Request, logoutPath, idToken string, maxAge int) error {
	return writeChunked(w, r, c.idTokenCookieName(r, logoutPath), logoutPath, c.seal(purposeIDToken, []byte(idToken)), maxAge)
}

func (c *cookieCodec) readIDToken(r *http.Request, logoutPath string) string {
	v, _, ok := readChunked(r, c.idTokenCookieName(r, logoutPath))
	if !ok {
		return ""
	}
	plain, err := c.open(purposeIDToken, v)
	if err != nil {
		return ""
	}
	return string(plain)
}

// clearSession expires the session cookies (and the ID token cookie, when
// the request was sent to the logout path and so carries it).
func (c *cookieCodec) clearSession(w http.ResponseWriter, r *http.Request, logoutPath string) {
	clearChunked(w, r, c.sessionCookieName(r), "/")
	clearChunked(w, r, c.idTokenCookieName(r, logoutPath), logoutPath)
}

// stateCookieName names the state cookie of one login attempt after the
// start of its state value, so the callback finds it without trying all.
func (c *cookieCodec) stateCookieName(r *http.Request, state string) string {
	return c.statePrefix(r) + state[:12]
}

// writeState stores a new login attempt. When maxStateCookies attempts are
// already outstanding, the oldest (and any that do not decrypt) are
// expired, so abandoned logins cannot grow the request headers.
func (c *cookieCodec) writeState(w http.ResponseWriter, r *http.Request, st *loginState, now time.Time) error {
	prefix := c.statePrefix(r)
	type outstanding struct {
		name    string
		created int64
	}
	var live []outstanding
	for _, ck := range r.Cookies() {
		if !strings.HasPrefix(ck.Name, prefix) {
			continue
		}
		old, err := c.decodeState(ck.Value, now)
		if err != nil {
			http.SetCookie(w, newCookie(r, ck.Name, "/", "", -1))
			continue
		}
		live = append(live, outstanding{ck.Name, old.Created})
	}
	for len(live) >= maxStateCookies {
		oldest := 0
		for i := range live {
			if live[i].created < live[oldest].created {
				oldest = i
			}
		}
		http.SetCookie(w, newCookie(r, live[oldest].name, "/", "", -1))
		live = append(live[:oldest], live[oldest+1:]...)
	}
	plain, err := json.Marshal(st)
	if err != nil {
		return err
	}
	http.SetCookie(w, newCookie(r, c.stateCookieName(r, st.State), "/", c.seal(purposeState, plain), int(stateLifetime/time.Second)))
	return nil
}

func (c *cookieCodec) decodeState(value string, now time.Time) (*loginState, error) {
	plain, err := c.open(purposeState, value)
	if err != nil {
		return nil, err
	}
	st := new(loginState)
	if err := json.Unmarshal(plain, st); err != nil || len(st.State) < 12 {
		return nil, errBadCookie
	}
	if now.Sub(time.Unix(st.Created, 0)) > stateLifetime {
		return nil, errors.New("login attempt expired")
	}
	return st, nil
}

// takeState finds, checks and expires the state cookie matching state.
func (c *cookieCodec) takeState(w http.ResponseWriter, r *http.Request, state string, now time.Time) (*loginState, error) {
	if len(state) < 12 || len(state) > 256 {
		return nil, errors.New("missing or malformed state parameter")
	}
	name := c.stateCookieName(r, state)
	ck, err := r.Cookie(name)
	if err != nil {
		return nil, errors.New("no login in progress for this state (expired, already used, or started in another browser)")
	}
	http.SetCookie(w, newCookie(r, name, "/", "", -1))
	st, err := c.decodeState(ck.Value, now)
	if err != nil {
		return nil, err
	}
	if !constantTimeEqual(st.State, state) {
		return nil, errors.New("state does not match the login in progress")
	}
	return st, nil
}

// peekState returns the login attempt for state without expiring it, for
// the error page's retry link.
func (c *cookieCodec) peekState(r *http.Request, state string, now time.Time) *loginState {
	if len(state) < 12 || len(state) > 256 {
		return nil
	}
	ck, err := r.Cookie(c.stateCookieName(r, state))
	if err != nil {
		return nil
	}
	st, err := c.decodeState(ck.Value, now)
	if err != nil || !constantTimeEqual(st.State, state) {
		return nil
	}
	return st
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// clearStates expires every outstanding login attempt of this app.
func (c *cookieCodec) clearStates(w http.ResponseWriter, r *http.Request) {
	prefix := c.statePrefix(r)
	for _, ck := range r.Cookies() {
		if strings.HasPrefix(ck.Name, prefix) {
			http.SetCookie(w, newCookie(r, ck.Name, "/", "", -1))
		}
	}
}

// A login that completes but whose session does not hold (cookies refused
// by the browser or a proxy, tokens the IdP keeps issuing wrong) would send
// the browser round the IdP forever. The loop cookie counts logins that
// start within loginLoopWindow of a completed one; the third in a row is
// stopped with an error page. It holds a count, nothing secret.
const (
	maxLoginLoop    = 3
	loginLoopWindow = time.Minute
)

func (c *cookieCodec) loopCookieName(r *http.Request) string {
	return cookieName(r, c.name+"_lg", "/")
}

// markLogin notes a completed login, keeping the count of any loop.
func (c *cookieCodec) markLogin(w http.ResponseWriter, r *http.Request) {
	n := 0
	if ck, err := r.Cookie(c.loopCookieName(r)); err == nil {
		n, _ = strconv.Atoi(ck.Value)
	}
	http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", strconv.Itoa(max(n, 0)), int(loginLoopWindow/time.Second)))
}

// loginLoop counts a login that starts soon after a completed one, and
// reports (and resets) a loop once maxLoginLoop of them happened in a row.
func (c *cookieCodec) loginLoop(w http.ResponseWriter, r *http.Request) bool {
	ck, err := r.Cookie(c.loopCookieName(r))
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(ck.Value)
	n = max(n, 0) + 1
	if n >= maxLoginLoop {
		http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", "", -1))
		return true
	}
	http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", strconv.Itoa(n), int(loginLoopWindow/time.Second)))
	return false
}

// endLoginLoop expires the loop cookie once a session holds, so it rides
// on no more requests.
func (c *cookieCodec) endLoginLoop(w http.ResponseWriter, r *http.Request) {
	// Most requests have no such cookie: look for it without parsing.
	if !hasCookieNamed(r.Header, c.name, "_lg=") {
		return
	}
	name := c.loopCookieName(r)
	if _, err := r.Cookie(name); err == nil {
		http.SetCookie(w, newCookie(r, name, "/", "", -1))
	}
}

// isOwnCookie reports whether a cookie name is one this handler sets: the
// session and its chunks, the ID token cookie and its chunks, the state
// cookies and the login loop counter, with or without a __Host- or
// __Secure- prefix.
func (c *cookieCodec) isOwnCookie(name string) bool {
	if rest, ok := strings.CutPrefix(name, "__Host-"); ok {
		name = rest
	} else if rest, ok := strings.CutPrefix(name, "__Secure-"); ok {
		name = rest
	}
	rest, ok := strings.CutPrefix(name, c.name)
	if !ok {
		return false
	}
	switch {
	case rest == "" || rest == "_idt" || rest == "_lg" || strings.HasPrefix(rest, "_s_"):
		return true
	case strings.HasPrefix(rest, "_idt_"):
		rest = rest[len("_idt_"):]
	case strings.HasPrefix(rest, "_"):
		rest = rest[1:]
	default:
		return false
	}
	if rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

// stripOwnCookies removes this handler's cookies from request headers
// before the request goes on; every other cookie is passed as it came.
// A request that carries only the handler's cookies costs no allocation.
func (c *cookieCodec) stripOwnCookies(h http.Header) {
	lines := h["Cookie"]
	mine := false
	for _, line := range lines {
		mine = mine || strings.Contains(line, c.name)
	}
	if !mine {
		return
	}
	var kept []string
	for _, line := range lines {
		if out := c.withoutOwnCookies(line); out != "" {
			kept = append(kept, out)
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

// withoutOwnCookies returns a Cookie header line without this handler's
// cookies ("" when none is left).
func (c *cookieCodec) withoutOwnCookies(line string) string {
	var b strings.Builder
	removed := false
	for rest, more := line, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		part = strings.TrimSpace(part)
		name, _, _ := strings.Cut(part, "=")
		if part == "" || c.isOwnCookie(strings.TrimSpace(name)) {
			removed = true
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	if !removed {
		return line
	}
	return b.String()
}

// hasCookieNamed reports whether a Cookie header may hold a cookie whose
// name ends in base+suffix ("=" included), without allocating.
func hasCookieNamed(h http.Header, base, suffix string) bool {
	for _, line := range h["Cookie"] {
		for i := 0; ; {
			j := strings.Index(line[i:], base)
			if j < 0 {
				break
			}
			i += j + len(base)
			if strings.HasPrefix(line[i:], suffix) {
				return true
			}
		}
	}
	return false
}
