// Package cookietest helps tests play the browser's part with cookies: it
// sends back what a response set, as the next request would carry it.
// It is for tests only.
package cookietest

import (
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
)

// RequestWith returns a request that carries the cookies that rec set and
// did not expire, as a browser would send them next; tlsOn makes it an
// HTTPS request. Cookie paths and attributes are not checked.
func RequestWith(rec *httptest.ResponseRecorder, method, target string, tlsOn bool) *http.Request {
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

// SetCookies returns the cookies rec set (expired ones included), by name;
// of two with the same name, the last.
func SetCookies(rec *httptest.ResponseRecorder) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range rec.Result().Cookies() {
		out[c.Name] = c
	}
	return out
}

// Value returns a cookie-safe value of n bytes that is not periodic, so
// misplaced chunks are detected.
func Value(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString(base64.RawURLEncoding.EncodeToString([]byte{byte(i), byte(i >> 8), byte(i * 7)}))
	}
	return b.String()[:n]
}
