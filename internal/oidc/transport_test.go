package oidc

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLimitedTransport: a response body under 1 MiB reads whole; a longer
// one fails to read rather than being cut, so a truncated document is
// never taken for another one.
func TestLimitedTransport(t *testing.T) {
	for _, tt := range []struct {
		name string
		size int
		ok   bool
	}{
		{"small", 10, true},
		{"1 MiB less a byte", maxIdPResponse - 1, true},
		{"one byte more", maxIdPResponse + 1, false},
		{"64 MiB", 64 << 20, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(w, io.LimitReader(zeros{}, int64(tt.size)))
			}))
			defer srv.Close()
			p := NewProvider(Config{Issuer: srv.URL})
			resp, err := p.HTTPClient().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			switch {
			case tt.ok && (err != nil || len(body) != tt.size):
				t.Fatalf("read %d bytes, err %v; want %d", len(body), err, tt.size)
			case !tt.ok && (err == nil || !strings.Contains(err.Error(), "larger than 1 MiB")):
				t.Fatalf("read %d bytes, err %v; want the 1 MiB limit", len(body), err)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
