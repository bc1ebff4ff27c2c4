package cookie

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkCookieChunking6KB seals a 6 KB token set, splits it into
// cookies and reassembles and opens it again.
func BenchmarkCookieChunking6KB(b *testing.B) {
	c, err := New([]byte(strings.Repeat("s", 32)), "https://idp.example.com", "bench-app", "oidc_bench")
	if err != nil {
		b.Fatal(err)
	}
	plain := []byte(strings.Repeat("x", 6<<10))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if err := writeChunked(rec, req, "oidc_bench", "/", c.Seal(PurposeSession, plain), 3600); err != nil {
			b.Fatal(err)
		}
		back := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, ck := range rec.Result().Cookies() {
			back.AddCookie(ck)
		}
		v, n, ok := readChunked(back, "oidc_bench")
		if !ok || n < 2 {
			b.Fatalf("reassembly failed: %d chunks, ok=%v", n, ok)
		}
		if _, err := c.Open(PurposeSession, v); err != nil {
			b.Fatal(err)
		}
	}
}
