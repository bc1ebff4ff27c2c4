//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// Signing key rotation at the real oidc-provider (profile multi-key, whose
// /__test/rotate-key publishes a fresh key and signs with it at once): the
// OpenID RP certification's signing-key-rotation cases. Tokens from the
// token endpoint and from the session cookie refetch the JWKS on an
// unknown kid with no cooldown; logout tokens anyone can post are
// rate-limited without holding that back.

// slowestRequest wraps a browser's transport and keeps the longest time
// one request took.
type slowestRequest struct {
	next http.RoundTripper
	mu   sync.Mutex
	max  time.Duration
	url  string
}

func (s *slowestRequest) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := s.next.RoundTrip(r)
	if d := time.Since(start); d > 0 {
		s.mu.Lock()
		if d > s.max {
			s.max, s.url = d, r.URL.Path
		}
		s.mu.Unlock()
	}
	return resp, err
}

func (s *slowestRequest) reset() (time.Duration, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, u := s.max, s.url
	s.max, s.url = 0, ""
	return d, u
}

func timedBrowser(t *testing.T) (*browser, *slowestRequest) {
	b := newBrowser(t)
	s := &slowestRequest{next: b.client.Transport}
	b.client.Transport = s
	return b, s
}

// madeUpLogoutToken is a logout token for the app signed with a key the
// IdP never had, under the given kid.
func madeUpLogoutToken(issuer, kid string) string {
	return oidctest.NewRSAKey(kid, 1).Sign(oidctest.LogoutClaims(issuer, clientID, aliceSub, "", kid, time.Now()), "logout+jwt")
}

func TestKeyRotationE2E(t *testing.T) {
	s := newProfileStack(t, profileStackOptions{profile: "multi-key", accessTTL: profileTTL})
	hello := "hello " + aliceSub
	rotations := 0
	rotate := func() {
		s.idp.rotateSigningKey(t)
		rotations++
	}

	// A session that lives on through every rotation below.
	keeper, keeperTimes := timedBrowser(t)
	s.mustLogin(keeper, s.app+"/keeper")
	start := s.idp.profileInfo(t).JWKSFetches
	if start < 1 {
		t.Fatalf("JWKS fetches after the first login: %d", start)
	}

	t.Run("login right after a rotation", func(t *testing.T) {
		rotate()
		b := newBrowser(t)
		if j := s.mustLogin(b, s.app+"/right-after"); !strings.Contains(j.final.Body, hello) {
			t.Fatalf("login right after a rotation: %s", j.final)
		}
	})

	t.Run("two rotations 2 s apart", func(t *testing.T) {
		for i := range 2 {
			if i > 0 {
				time.Sleep(2 * time.Second)
			}
			rotate()
			b := newBrowser(t)
			if j := s.mustLogin(b, s.app+fmt.Sprintf("/two-rotations/%d", i)); !strings.Contains(j.final.Body, hello) {
				t.Fatalf("login after rotation %d: %s", i+1, j.final)
			}
		}
	})

	t.Run("rotation after 20 unknown-kid logout tokens", func(t *testing.T) {
		before := s.idp.profileInfo(t).JWKSFetches
		for i := range 20 {
			tok := madeUpLogoutToken(s.idp.Issuer, fmt.Sprintf("made-up-%d-%d", i, time.Now().UnixNano()))
			resp, err := plainClient().PostForm(s.app+"/auth/backchannel-logout", url.Values{"logout_token": {tok}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("logout token %d with a made-up kid: status %d, want 400", i, resp.StatusCode)
			}
		}
		if got := s.idp.profileInfo(t).JWKSFetches - before; got > 1 {
			t.Errorf("20 logout tokens with made-up kids caused %d JWKS fetches, want at most 1", got)
		}
		rotate()
		rotated := time.Now()
		b, times := timedBrowser(t)
		j := s.mustLogin(b, s.app+"/after-flood")
		if !strings.Contains(j.final.Body, hello) {
			t.Fatalf("login after the flood and a rotation: %s", j.final)
		}
		if d := time.Since(rotated); d > 5*time.Second {
			t.Errorf("the login after the rotation took %v", d)
		}
		if d, u := times.reset(); d > time.Second {
			t.Errorf("a request of the login took %v (%s), want under a second", d, u)
		}
	})

	t.Run("refresh after a rotation keeps the session", func(t *testing.T) {
		// The keeper's 4 s access token has long expired; the IdP switches
		// keys and the refresh brings tokens of the new one.
		rotate()
		keeperTimes.reset()
		for i := range 3 {
			if i > 0 {
				time.Sleep(profileTTL + time.Second)
			}
			p := keeper.navigate(s.app + fmt.Sprintf("/keeper/%d", i))
			if p.Status != http.StatusOK || !strings.Contains(p.Body, hello) {
				t.Fatalf("keeper request %d after the rotation: %s", i, p)
			}
			if d, u := keeperTimes.reset(); d > time.Second {
				t.Errorf("keeper request %d took %v (%s), want under a second", i, d, u)
			}
		}
		if status, _ := sessionInfo(t, keeper, s.app); status != http.StatusOK {
			t.Errorf("/auth/session after the rotation: %d", status)
		}
	})

	// One fetch per new kid, and at most one for the made-up ones.
	if got := s.idp.profileInfo(t).JWKSFetches - start; got > rotations+1 {
		t.Errorf("JWKS fetches after the first login: %d for %d rotations, want at most %d", got, rotations, rotations+1)
	}
	samples := scrape(t, s.caddy.adminAddr)
	const name = "caddy_oidc_auth_jwks_fetches_total"
	if n := metricSum(samples, name, map[string]string{"reason": "startup", "result": "ok"}); n != 1 {
		t.Errorf("%s{reason=startup}: %v, want 1", name, n)
	}
	if n := metricSum(samples, name, map[string]string{"reason": "unknown_kid", "result": "ok"}); n < float64(rotations) || n > float64(rotations+1) {
		t.Errorf("%s{reason=unknown_kid}: %v, want %d or %d", name, n, rotations, rotations+1)
	}
}
