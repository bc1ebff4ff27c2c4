package oidc

import (
	"net/http"
	"testing"
	"time"
)

func TestJWKSMaxAge(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   time.Duration
	}{
		{nil, JWKSDefaultMaxAge},
		{[]string{"no-store"}, JWKSDefaultMaxAge},
		{[]string{"public, max-age=7200"}, 2 * time.Hour},
		{[]string{"max-age=60"}, JWKSMinMaxAge},
		{[]string{"max-age=9999999999999"}, JWKSMaxMaxAge},
		{[]string{"max-age=-5"}, JWKSDefaultMaxAge},
		{[]string{"max-age=soon"}, JWKSDefaultMaxAge},
		{[]string{"no-cache", `Max-Age="600"`}, 10 * time.Minute},
	} {
		h := http.Header{"Cache-Control": tc.header}
		if got := jwksMaxAge(h); got != tc.want {
			t.Errorf("Cache-Control %q: max age %v, want %v", tc.header, got, tc.want)
		}
	}
}
