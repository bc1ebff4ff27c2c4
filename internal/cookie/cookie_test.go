package cookie

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie/cookietest"
)

const (
	testCookieSecret = "0123456789abcdef0123456789abcdef"
	testIssuer       = "https://idp.example.com"
	testClientID     = "app"
)

func newTestCodec(t *testing.T) *Codec {
	t.Helper()
	c, err := New([]byte(testCookieSecret), testIssuer, testClientID, "oidc_test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSealOpenRoundTrip(t *testing.T) {
	c := newTestCodec(t)
	for _, plain := range []string{"", "x", `{"i":"abc"}`, strings.Repeat("z", 10000)} {
		v := c.Seal(PurposeSession, []byte(plain))
		if strings.ContainsAny(v, ";, \"=") {
			t.Errorf("sealed value has characters unsafe in a cookie: %q", v)
		}
		got, err := c.Open(PurposeSession, v)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if string(got) != plain {
			t.Errorf("round trip changed the value")
		}
	}
	if c.Seal(PurposeSession, []byte("x")) == c.Seal(PurposeSession, []byte("x")) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
}

func TestOpenRejects(t *testing.T) {
	c := newTestCodec(t)
	value := c.Seal(PurposeSession, []byte(`{"i":"id","s":"sub","a":"at"}`))
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name  string
		codec *Codec
		purp  string
		value string
	}
	var tests []tc
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			flipped := append([]byte(nil), raw...)
			flipped[i] ^= bit
			tests = append(tests, tc{name: "bit flip", codec: c, purp: PurposeSession, value: base64.RawURLEncoding.EncodeToString(flipped)})
		}
	}
	for _, n := range []int{0, 1, 10, 20, len(value) / 2, len(value) - 1} {
		tests = append(tests, tc{name: "truncated", codec: c, purp: PurposeSession, value: value[:n]})
	}
	tests = append(tests,
		tc{name: "truncated raw", codec: c, purp: PurposeSession, value: base64.RawURLEncoding.EncodeToString(raw[:len(raw)-1])},
		tc{name: "appended byte", codec: c, purp: PurposeSession, value: base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), raw...), 0))},
		tc{name: "padded base64", codec: c, purp: PurposeSession, value: base64.URLEncoding.EncodeToString(raw)},
		tc{name: "standard base64 alphabet", codec: c, purp: PurposeSession, value: strings.NewReplacer("-", "+", "_", "/").Replace(value) + "+/"},
		tc{name: "garbage", codec: c, purp: PurposeSession, value: "not a cookie"},
		tc{name: "wrong purpose state", codec: c, purp: PurposeState, value: value},
		tc{name: "wrong purpose id_token", codec: c, purp: PurposeIDToken, value: value},
	)
	for _, other := range []struct {
		name                     string
		secret, issuer, clientID string
	}{
		{"other client_id", testCookieSecret, testIssuer, "other-app"},
		{"other issuer", testCookieSecret, "https://other.example.com", testClientID},
		{"other secret", "fedcba9876543210fedcba9876543210", testIssuer, testClientID},
	} {
		oc, err := New([]byte(other.secret), other.issuer, other.clientID, "oidc_test")
		if err != nil {
			t.Fatal(err)
		}
		tests = append(tests, tc{name: other.name, codec: oc, purp: PurposeSession, value: value})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.codec.Open(tt.purp, tt.value)
			if err != ErrInvalid {
				t.Errorf("open(%.40q...) = %q, %v; want ErrInvalid", tt.value, got, err)
			}
		})
	}
}

func TestChunkedRoundTrip(t *testing.T) {
	for _, size := range []int{1, 100, maxChunkLen, maxChunkLen + 1, 6 << 10, 20 << 10, maxChunks * maxChunkLen} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			value := cookietest.Value(size)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			rec := httptest.NewRecorder()
			if err := writeChunked(rec, req, "ck", "/", value, 3600); err != nil {
				t.Fatalf("writeChunked: %v", err)
			}
			set := rec.Result().Cookies()
			wantChunks := max(1, (size+maxChunkLen-1)/maxChunkLen)
			if len(set) != wantChunks {
				t.Errorf("%d cookies set, want %d", len(set), wantChunks)
			}
			for _, c := range set {
				if len(c.Value) > maxChunkLen+2 {
					t.Errorf("cookie %s has %d bytes", c.Name, len(c.Value))
				}
				if c.MaxAge != 3600 {
					t.Errorf("cookie %s MaxAge = %d", c.Name, c.MaxAge)
				}
			}
			got, n, ok := readChunked(cookietest.RequestWith(rec, http.MethodGet, "/", false), "ck")
			if !ok || got != value || n != wantChunks {
				t.Errorf("readChunked: ok=%v n=%d, value equal: %v", ok, n, got == value)
			}
		})
	}
}

func TestChunkedMissingMiddleChunk(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	if err := writeChunked(rec, req, "ck", "/", cookietest.Value(20<<10), 3600); err != nil {
		t.Fatal(err)
	}
	next := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, c := range rec.Result().Cookies() {
		if c.Name != "ck_2" {
			next.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	if v, _, ok := readChunked(next, "ck"); ok {
		t.Errorf("readChunked without chunk 2 succeeded with %d bytes", len(v))
	}
}

func TestChunkedBadCount(t *testing.T) {
	for _, first := range []string{"9.abc", "1.abc", "0.abc", "-2.abc", "x.abc", "99999999999999999999.abc"} {
		t.Run(first, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.AddCookie(&http.Cookie{Name: "ck", Value: first})
			for i := 1; i < 10; i++ {
				r.AddCookie(&http.Cookie{Name: chunkName("ck", i), Value: "abc"})
			}
			if _, _, ok := readChunked(r, "ck"); ok {
				t.Errorf("readChunked accepted the count in %q", first)
			}
		})
	}
}

func TestChunkedExpiresLeftovers(t *testing.T) {
	// The browser holds a 6-chunk value; a 2-chunk value replaces it.
	first := httptest.NewRecorder()
	if err := writeChunked(first, httptest.NewRequest(http.MethodGet, "/", nil), "ck", "/", cookietest.Value(20<<10), 3600); err != nil {
		t.Fatal(err)
	}
	req := cookietest.RequestWith(first, http.MethodGet, "/", false)
	rec := httptest.NewRecorder()
	short := cookietest.Value(6 << 10)
	if err := writeChunked(rec, req, "ck", "/", short, 3600); err != nil {
		t.Fatal(err)
	}
	set := cookietest.SetCookies(rec)
	for i := 0; i < 6; i++ {
		c, ok := set[chunkName("ck", i)]
		switch {
		case i < 2 && (!ok || c.MaxAge <= 0):
			t.Errorf("chunk %d not written: %+v", i, c)
		case i >= 2 && (!ok || c.MaxAge >= 0):
			t.Errorf("leftover chunk %d not expired: %+v", i, c)
		}
	}
	if _, ok := set[chunkName("ck", 6)]; ok {
		t.Error("a chunk the browser did not have was expired")
	}

	// A single-chunk value expires every old chunk but the first.
	rec = httptest.NewRecorder()
	if err := writeChunked(rec, req, "ck", "/", "small", 3600); err != nil {
		t.Fatal(err)
	}
	set = cookietest.SetCookies(rec)
	if set["ck"] == nil || set["ck"].Value != "small" {
		t.Errorf("first cookie = %+v", set["ck"])
	}
	for i := 1; i < 6; i++ {
		if c := set[chunkName("ck", i)]; c == nil || c.MaxAge >= 0 {
			t.Errorf("leftover chunk %d not expired: %+v", i, c)
		}
	}
	// The browser's view after the write reads back the new value.
	merged := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, c := range req.Cookies() {
		if s, ok := set[c.Name]; ok {
			if s.MaxAge < 0 {
				continue
			}
			c = &http.Cookie{Name: s.Name, Value: s.Value}
		}
		merged.AddCookie(c)
	}
	if v, _, ok := readChunked(merged, "ck"); !ok || v != "small" {
		t.Errorf("after shrinking, readChunked = %q, %v", v, ok)
	}
}

func TestChunkedTooLarge(t *testing.T) {
	rec := httptest.NewRecorder()
	err := writeChunked(rec, httptest.NewRequest(http.MethodGet, "/", nil), "ck", "/", cookietest.Value(maxChunks*maxChunkLen+1), 3600)
	if err == nil {
		t.Fatal("writeChunked accepted a value over maxChunks chunks")
	}
	if n := len(rec.Result().Cookies()); n != 0 {
		t.Errorf("%d cookies set for a refused value", n)
	}
}

func TestClearChunked(t *testing.T) {
	first := httptest.NewRecorder()
	if err := writeChunked(first, httptest.NewRequest(http.MethodGet, "/", nil), "ck", "/", cookietest.Value(10<<10), 3600); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	clearChunked(rec, cookietest.RequestWith(first, http.MethodGet, "/", false), "ck", "/")
	set := rec.Result().Cookies()
	if len(set) != 3 {
		t.Errorf("%d cookies expired, want 3", len(set))
	}
	for _, c := range set {
		if c.MaxAge >= 0 || c.Value != "" || c.Path != "/" {
			t.Errorf("cookie %s not expired: %+v", c.Name, c)
		}
	}
}

func testSession() *Session {
	return &Session{
		ID:          "sess-id",
		Subject:     "user-1",
		SID:         "idp-sid",
		Created:     time.Now().Unix(),
		AccessToken: "opaque-access-token",
		Expiry:      time.Now().Add(time.Hour).Unix(),
		RefreshAt:   time.Now().Add(50 * time.Minute).Unix(),
		Claims:      []byte(`{"email":"u@example.com"}`),
	}
}

func TestSessionCookieRoundTrip(t *testing.T) {
	c := newTestCodec(t)
	for _, size := range []int{0, 6 << 10, 20 << 10} {
		for _, tlsOn := range []bool{false, true} {
			name := "plain"
			if tlsOn {
				name = "tls"
			}
			t.Run(name+"/"+strconv.Itoa(size), func(t *testing.T) {
				s := testSession()
				s.RefreshToken = cookietest.Value(size)
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				if tlsOn {
					req.TLS = &tls.ConnectionState{}
				}
				rec := httptest.NewRecorder()
				if err := c.WriteSession(rec, req, s, 3600); err != nil {
					t.Fatal(err)
				}
				got, err := c.ReadSession(cookietest.RequestWith(rec, http.MethodGet, "/", tlsOn))
				if err != nil {
					t.Fatalf("readSession: %v", err)
				}
				if got.ID != s.ID || got.Subject != s.Subject || got.SID != s.SID || got.RefreshToken != s.RefreshToken ||
					got.AccessToken != s.AccessToken || got.Expiry != s.Expiry || string(got.Claims) != string(s.Claims) {
					t.Errorf("session changed in the round trip: %+v", got)
				}
				// A cookie written over TLS has another name, so a plain
				// http request does not find it (and vice versa).
				if _, err := c.ReadSession(cookietest.RequestWith(rec, http.MethodGet, "/", !tlsOn)); err == nil {
					t.Error("session cookie readable under the other scheme's name")
				}
			})
		}
	}
}

func TestReadSessionRejects(t *testing.T) {
	c := newTestCodec(t)
	tests := []struct {
		name  string
		value string
	}{
		{"garbage", "garbage"},
		{"empty", ""},
		{"id token purpose", c.Seal(PurposeIDToken, []byte(`{"i":"a","s":"b","a":"c"}`))},
		{"state purpose", c.Seal(PurposeState, []byte(`{"i":"a","s":"b","a":"c"}`))},
		{"not JSON", c.Seal(PurposeSession, []byte(`not json`))},
		{"no ID", c.Seal(PurposeSession, []byte(`{"s":"b","a":"c"}`))},
		{"no subject", c.Seal(PurposeSession, []byte(`{"i":"a","a":"c"}`))},
		{"no access token", c.Seal(PurposeSession, []byte(`{"i":"a","s":"b"}`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.AddCookie(&http.Cookie{Name: "oidc_test", Value: tt.value})
			if _, err := c.ReadSession(r); err != ErrInvalid {
				t.Errorf("readSession = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := c.ReadSession(httptest.NewRequest(http.MethodGet, "/", nil)); err != ErrInvalid {
		t.Errorf("readSession without cookie = %v, want ErrInvalid", err)
	}
}

func TestCookieAttributes(t *testing.T) {
	c := newTestCodec(t)
	const logoutPath = "/auth/logout"
	tests := []struct {
		name            string
		tls             bool
		wantSession     string
		wantIDToken     string
		wantStatePrefix string
		wantSecure      bool
		wantIDTokenPath string
		wantSessionPath string
	}{
		{"plain http", false, "oidc_test", "oidc_test_idt", "oidc_test_s_", false, logoutPath, "/"},
		{"https", true, "__Host-oidc_test", "__Secure-oidc_test_idt", "__Host-oidc_test_s_", true, logoutPath, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.tls {
				req.TLS = &tls.ConnectionState{}
			}
			rec := httptest.NewRecorder()
			if err := c.WriteSession(rec, req, testSession(), 3600); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteIDToken(rec, req, logoutPath, "header.payload.signature", 3600); err != nil {
				t.Fatal(err)
			}
			st := &LoginState{State: randomString(32), Nonce: "n", Verifier: "v", ReturnTo: "/", Created: time.Now().Unix()}
			if err := c.WriteState(rec, req, st, time.Now()); err != nil {
				t.Fatal(err)
			}
			set := cookietest.SetCookies(rec)
			if len(set) != 3 {
				t.Fatalf("cookies set: %v", rec.Header()["Set-Cookie"])
			}
			sc, ok := set[tt.wantSession]
			if !ok {
				t.Fatalf("no session cookie %q in %v", tt.wantSession, rec.Header()["Set-Cookie"])
			}
			if sc.Path != tt.wantSessionPath {
				t.Errorf("session cookie path = %q", sc.Path)
			}
			it, ok := set[tt.wantIDToken]
			if !ok {
				t.Fatalf("no ID token cookie %q in %v", tt.wantIDToken, rec.Header()["Set-Cookie"])
			}
			if it.Path != tt.wantIDTokenPath {
				t.Errorf("ID token cookie path = %q, want the logout path", it.Path)
			}
			stateName := tt.wantStatePrefix + st.State[:12]
			if _, ok := set[stateName]; !ok {
				t.Errorf("no state cookie %q in %v", stateName, rec.Header()["Set-Cookie"])
			}
			for _, ck := range set {
				if !ck.HttpOnly {
					t.Errorf("%s is not HttpOnly", ck.Name)
				}
				if ck.SameSite != http.SameSiteLaxMode {
					t.Errorf("%s SameSite = %v, want Lax", ck.Name, ck.SameSite)
				}
				if ck.Secure != tt.wantSecure {
					t.Errorf("%s Secure = %v, want %v", ck.Name, ck.Secure, tt.wantSecure)
				}
				if ck.Domain != "" {
					t.Errorf("%s has Domain %q", ck.Name, ck.Domain)
				}
				if !tt.tls && (strings.HasPrefix(ck.Name, "__Host-") || strings.HasPrefix(ck.Name, "__Secure-")) {
					t.Errorf("%s has a secure prefix on plain http", ck.Name)
				}
				// Browsers require __Host- cookies to be Secure, of path
				// "/" and without Domain.
				if strings.HasPrefix(ck.Name, "__Host-") && (!ck.Secure || ck.Path != "/") {
					t.Errorf("%s breaks the __Host- rules: %+v", ck.Name, ck)
				}
				if strings.HasPrefix(ck.Name, "__Secure-") && !ck.Secure {
					t.Errorf("%s breaks the __Secure- rules", ck.Name)
				}
			}
			// The ID token reads back only at the logout path's cookie name.
			next := cookietest.RequestWith(rec, http.MethodGet, logoutPath, tt.tls)
			if got := c.ReadIDToken(next, logoutPath); got != "header.payload.signature" {
				t.Errorf("readIDToken = %q", got)
			}
		})
	}
}

func TestClearSession(t *testing.T) {
	c := newTestCodec(t)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	s := testSession()
	s.RefreshToken = cookietest.Value(6 << 10)
	if err := c.WriteSession(rec, req, s, 3600); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteIDToken(rec, req, "/auth/logout", "id.token.value", 3600); err != nil {
		t.Fatal(err)
	}
	out := httptest.NewRecorder()
	c.ClearSession(out, cookietest.RequestWith(rec, http.MethodGet, "/auth/logout", true), "/auth/logout")
	set := cookietest.SetCookies(out)
	for _, name := range []string{"__Host-oidc_test", "__Host-oidc_test_1", "__Secure-oidc_test_idt"} {
		ck, ok := set[name]
		if !ok || ck.MaxAge >= 0 {
			t.Errorf("%s not expired: %+v", name, ck)
		}
	}
	if ck := set["__Secure-oidc_test_idt"]; ck != nil && ck.Path != "/auth/logout" {
		t.Errorf("ID token cookie expired at path %q, want the logout path", ck.Path)
	}
}

func newState(created time.Time) *LoginState {
	return &LoginState{
		State:    randomString(32),
		Nonce:    randomString(32),
		Verifier: "verifier",
		ReturnTo: "/after",
		Created:  created.Unix(),
	}
}

// stateRequest returns a request carrying a state cookie for each st.
func stateRequest(t *testing.T, c *Codec, states ...*LoginState) *http.Request {
	t.Helper()
	rec := httptest.NewRecorder()
	base := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, st := range states {
		// Written one by one so writeState does not evict any.
		if err := c.WriteState(rec, base, st, time.Unix(st.Created, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return cookietest.RequestWith(rec, http.MethodGet, "/auth/callback", false)
}

func TestWriteStateLimit(t *testing.T) {
	c := newTestCodec(t)
	now := time.Now()
	var states []*LoginState
	for i := maxStateCookies; i > 0; i-- {
		states = append(states, newState(now.Add(-time.Duration(i)*time.Minute)))
	}
	req := stateRequest(t, c, states...)
	req.AddCookie(&http.Cookie{Name: c.statePrefix(req) + "garbage00000", Value: "garbage"})
	expired := newState(now.Add(-StateLifetime - time.Minute))
	expiredReq := stateRequest(t, c, expired)
	for _, ck := range expiredReq.Cookies() {
		req.AddCookie(ck)
	}
	// Another app's state cookie is not this app's business.
	req.AddCookie(&http.Cookie{Name: "oidc_other_s_abcdefghijkl", Value: "x"})

	rec := httptest.NewRecorder()
	fresh := newState(now)
	if err := c.WriteState(rec, req, fresh, now); err != nil {
		t.Fatal(err)
	}
	set := cookietest.SetCookies(rec)
	wantExpired := []string{
		c.StateCookieName(req, states[0].State), // the oldest
		c.statePrefix(req) + "garbage00000",     // does not decrypt
		c.StateCookieName(req, expired.State),   // too old
	}
	for _, name := range wantExpired {
		if ck := set[name]; ck == nil || ck.MaxAge >= 0 {
			t.Errorf("%s not expired: %+v", name, ck)
		}
	}
	if ck := set[c.StateCookieName(req, fresh.State)]; ck == nil || ck.MaxAge <= 0 {
		t.Errorf("new state cookie not set: %+v", ck)
	}
	if _, ok := set["oidc_other_s_abcdefghijkl"]; ok {
		t.Error("another app's cookie was touched")
	}
	for _, st := range states[1:] {
		if _, ok := set[c.StateCookieName(req, st.State)]; ok {
			t.Errorf("a newer state cookie was expired")
		}
	}
	// What the browser holds afterwards: at most maxStateCookies states.
	live := 0
	for _, ck := range req.Cookies() {
		if strings.HasPrefix(ck.Name, c.statePrefix(req)) {
			if s, ok := set[ck.Name]; ok && s.MaxAge < 0 {
				continue
			}
			live++
		}
	}
	live++ // the new one
	if live != maxStateCookies {
		t.Errorf("%d state cookies outstanding, want %d", live, maxStateCookies)
	}
}

func TestTakeState(t *testing.T) {
	c := newTestCodec(t)
	now := time.Now()
	st := newState(now.Add(-time.Minute))
	old := newState(now.Add(-StateLifetime - time.Second))

	t.Run("right state", func(t *testing.T) {
		req := stateRequest(t, c, st)
		rec := httptest.NewRecorder()
		got, err := c.TakeState(rec, req, st.State, now)
		if err != nil {
			t.Fatalf("takeState: %v", err)
		}
		if got.Nonce != st.Nonce || got.Verifier != st.Verifier || got.ReturnTo != st.ReturnTo {
			t.Errorf("takeState = %+v, want %+v", got, st)
		}
		if ck := cookietest.SetCookies(rec)[c.StateCookieName(req, st.State)]; ck == nil || ck.MaxAge >= 0 {
			t.Errorf("state cookie not expired: %+v", ck)
		}
	})

	refused := []struct {
		name  string
		req   *http.Request
		state string
	}{
		{"another state", stateRequest(t, c, st), randomString(32)},
		{"same prefix, other state", stateRequest(t, c, st), st.State[:12] + randomString(20)},
		{"missing cookie", httptest.NewRequest(http.MethodGet, "/auth/callback", nil), st.State},
		{"empty state", stateRequest(t, c, st), ""},
		{"short state", stateRequest(t, c, st), st.State[:11]},
		{"huge state", stateRequest(t, c, st), st.State + strings.Repeat("a", 300)},
		{"expired", stateRequest(t, c, old), old.State},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if got, err := c.TakeState(rec, tt.req, tt.state, now); err == nil {
				t.Errorf("takeState accepted: %+v", got)
			}
			if c.PeekState(tt.req, tt.state, now) != nil {
				t.Error("peekState accepted")
			}
		})
	}

	t.Run("state cookie of another app", func(t *testing.T) {
		other, err := New([]byte(testCookieSecret), testIssuer, "other-app", "oidc_test")
		if err != nil {
			t.Fatal(err)
		}
		req := stateRequest(t, other, st)
		if _, err := c.TakeState(httptest.NewRecorder(), req, st.State, now); err == nil {
			t.Error("takeState accepted another app's state cookie")
		}
	})

	t.Run("peek does not expire", func(t *testing.T) {
		req := stateRequest(t, c, st)
		got := c.PeekState(req, st.State, now)
		if got == nil || got.ReturnTo != st.ReturnTo {
			t.Fatalf("peekState = %+v", got)
		}
		// Still there for takeState afterwards.
		if _, err := c.TakeState(httptest.NewRecorder(), req, st.State, now); err != nil {
			t.Errorf("takeState after peekState: %v", err)
		}
	})
}

func TestClearStates(t *testing.T) {
	c := newTestCodec(t)
	now := time.Now()
	req := stateRequest(t, c, newState(now), newState(now))
	req.AddCookie(&http.Cookie{Name: "unrelated", Value: "x"})
	rec := httptest.NewRecorder()
	c.ClearStates(rec, req)
	set := rec.Result().Cookies()
	if len(set) != 2 {
		t.Errorf("%d cookies expired, want 2", len(set))
	}
	for _, ck := range set {
		if ck.MaxAge >= 0 || !strings.HasPrefix(ck.Name, c.statePrefix(req)) {
			t.Errorf("unexpected cookie %+v", ck)
		}
	}
}

func TestCookieKeyRotation(t *testing.T) {
	const oldSecret = "fedcba9876543210fedcba9876543210"
	oldCodec, err := New([]byte(oldSecret), testIssuer, testClientID, "oidc_test")
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := New([]byte(testCookieSecret), testIssuer, testClientID, "oidc_test", []byte(oldSecret))
	if err != nil {
		t.Fatal(err)
	}
	current := newTestCodec(t)

	req := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	if err := oldCodec.WriteSession(rec, req, testSession(), 3600); err != nil {
		t.Fatal(err)
	}
	next := cookietest.RequestWith(rec, http.MethodGet, "/", false)
	if _, err := current.ReadSession(next); err != ErrInvalid {
		t.Errorf("codec without the old secret read an old-key session: %v", err)
	}
	s, err := rotated.ReadSession(next)
	if err != nil {
		t.Fatalf("rotated codec refused an old-key session: %v", err)
	}
	if !s.OldKey {
		t.Error("old-key session not marked for rewriting")
	}
	// New cookies are sealed with the current secret only.
	v := rotated.Seal(PurposeSession, []byte("x"))
	if _, err := current.Open(PurposeSession, v); err != nil {
		t.Errorf("rotated codec does not seal with the current secret: %v", err)
	}
	if _, err := oldCodec.Open(PurposeSession, v); err != ErrInvalid {
		t.Errorf("rotated codec sealed with the old secret")
	}
	// The old secret still may not open another purpose.
	if _, err := rotated.Open(PurposeState, oldCodec.Seal(PurposeSession, []byte("x"))); err != ErrInvalid {
		t.Errorf("old-key value opened for another purpose: %v", err)
	}
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
