package oidcauth

import (
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
)

// The cookie codec's own tests are in internal/cookie; these helpers serve
// the handler's tests.

const testCookieSecret = "0123456789abcdef0123456789abcdef"

// requestWith returns a request that carries the cookies that rec set and
// did not expire, as a browser would send them next.
func requestWith(rec *httptest.ResponseRecorder, method, target string, tlsOn bool) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	if tlsOn {
		r.TLS = &tls.ConnectionState{}
	}
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge >= 0 && c.Value != "" {
			r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	return r
}

func setCookies(rec *httptest.ResponseRecorder) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range rec.Result().Cookies() {
		out[c.Name] = c
	}
	return out
}

// testValue returns a cookie-safe value of n bytes that is not periodic,
// so misplaced chunks are detected.
func testValue(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString(base64.RawURLEncoding.EncodeToString([]byte{byte(i), byte(i >> 8), byte(i * 7)}))
	}
	return b.String()[:n]
}
