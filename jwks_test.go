package oidcauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// The JWKS lifecycle against the in-process IdP: the OpenID RP
// certification's key rotation cases, the rate limits of refetches, and
// keys ageing out. The same journeys run against the real oidc-provider in
// xcaddy-test/rotation_e2e_test.go.

// loginAll logs n fresh browsers in at once and returns the callbacks'
// statuses.
func (e *itEnv) loginAll(n int, target string) []int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		b := e.browser()
		loc, q := b.startLogin(target)
		code := e.op.Authorize(loc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = b.get(itCallbackURL(code, q.Get("state")), nav).StatusCode
		}()
	}
	wg.Wait()
	return statuses
}

// The key set's rules, under the names these tests use.
const (
	jwksCooldown      = oidc.JWKSCooldown
	jwksKidInterval   = oidc.JWKSKidInterval
	jwksFailRetry     = oidc.JWKSFailRetry
	jwksDefaultMaxAge = oidc.JWKSDefaultMaxAge
	fetchMaxAge       = oidc.FetchMaxAge
)

// waitForFetch waits until the key set's fetch number seq has finished
// and returns its error.
func (e *itEnv) waitForFetch(seq uint64) error {
	e.t.Helper()
	keys := e.h.provider.Keys()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if last, err := keys.LastFetch(); last >= seq {
			return err
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("JWKS fetch %d did not happen", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// jwksFetchCount reads the process-wide JWKS fetch counter.
func jwksFetchCount(reason, result string) float64 {
	var m dto.Metric
	if err := metrics.jwksFetches.WithLabelValues(reason, result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func (e *itEnv) expectJWKSFetches(want int64, what string) {
	e.t.Helper()
	if n := e.op.JWKSFetches.Load(); n != want {
		e.t.Errorf("%s: JWKS fetches %d, want %d", what, n, want)
	}
}

// TestKeyRotationLoginRightAfter (signing-key-rotation-just-before-signing):
// the IdP starts signing with a key it has just published, right after the
// module fetched its JWKS. Logins, several at once, work at the first try
// and share one refetch.
func TestKeyRotationLoginRightAfter(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false)

	for i, st := range e.loginAll(5, "/private") {
		if st != http.StatusFound {
			t.Errorf("login %d right after the rotation: status %d, want 302", i, st)
		}
	}
	e.expectJWKSFetches(2, "five logins after one rotation")
}

// TestKeyRotationTwiceTwoSecondsApart: two rotations 2 s apart, each
// followed by a login; each new kid costs one fetch.
func TestKeyRotationTwiceTwoSecondsApart(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	for i, kid := range []string{"key-2", "key-3"} {
		e.op.Rotate(oidctest.NewRSAKey(kid, i+1), true)
		e.clock.Advance(2 * time.Second)
		b := e.browser()
		b.mustLogin("/private")
		expectServed(t, b.get("/private", nav), "session after rotation to "+kid)
	}
	e.expectJWKSFetches(3, "two rotations")
}

// TestKeyRotationAfterLogoutTokenFlood: 20 logout tokens with made-up kids
// (which anyone can post) cost at most one fetch and must not hold back the
// refetch that a login after the IdP's next rotation needs.
func TestKeyRotationAfterLogoutTokenFlood(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	e.clock.Advance(jwksCooldown) // the untrusted limit has room for one fetch
	for i := range 20 {
		tok := oidctest.NewRSAKey(fmt.Sprintf("made-up-%d", i), 2).Sign(e.logoutClaims(nil), "logout+jwt")
		if res := e.postLogout(tok); res.StatusCode == http.StatusOK {
			t.Fatalf("logout token %d with an unknown kid accepted", i)
		}
	}
	e.expectJWKSFetches(2, "20 logout tokens with unknown kids")

	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false)
	start := time.Now()
	b := e.browser()
	b.mustLogin("/private")
	if d := time.Since(start); d > time.Second {
		t.Errorf("login after the rotation took %v, want under a second", d)
	}
	expectServed(t, b.get("/private", nav), "session after the rotation")
	e.expectJWKSFetches(3, "the flood and one login after the rotation")
}

// TestKeyRotationRefreshKeepsSession: access tokens live 4 s; the IdP
// switches keys and the next refresh brings tokens of the new key. The
// session stays signed in and no request takes more than a second (the
// refetch is immediate, not a wait for a cooldown).
func TestKeyRotationRefreshKeepsSession(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = 4 * time.Second })
	b := e.browser()
	b.mustLogin("/private")
	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false)

	for i := range 3 {
		e.clock.Advance(5 * time.Second) // the access token has expired
		start := time.Now()
		res := b.get("/private", nav)
		if d := time.Since(start); d > time.Second {
			t.Errorf("request %d took %v, want under a second", i, d)
		}
		expectServed(t, res, fmt.Sprintf("request %d after the rotation", i))
	}
	if n := e.op.Grants("refresh_token"); n != 3 {
		t.Errorf("refresh grants: %d, want 3", n)
	}
	e.expectJWKSFetches(2, "refreshes after one rotation")
}

// TestJWKSUntrustedRefetchLimited: tokens anyone can send with made-up key
// IDs start at most one fetch per cooldown, and never wait for it.
func TestJWKSUntrustedRefetchLimited(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	base := e.op.JWKSFetches.Load()

	flood := func() {
		const n, workers = 300, 8
		var wg sync.WaitGroup
		jobs := make(chan int)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					kid := fmt.Sprintf("random-%d-%d", i, time.Now().UnixNano())
					tok := oidctest.NewRSAKey(kid, 2).Sign(e.logoutClaims(nil), "logout+jwt")
					if res := e.postLogout(tok); res.StatusCode == http.StatusOK {
						t.Errorf("logout token with unknown kid %s accepted", kid)
					}
				}
			}()
		}
		for i := range n {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
	}

	flood()
	if got := e.op.JWKSFetches.Load() - base; got != 0 {
		t.Fatalf("within the cooldown of the login's fetch, tokens with unknown kids caused %d JWKS fetches, want 0", got)
	}
	e.clock.Advance(jwksCooldown)
	flood()
	if got := e.op.JWKSFetches.Load() - base; got != 1 {
		t.Fatalf("after the cooldown, tokens with unknown kids caused %d JWKS fetches, want exactly 1", got)
	}
}

// TestJWKSTrustedRefetchPerKid: tokens from the token endpoint with a kid
// the IdP never publishes cost one fetch per kid per interval, however many
// logins bring them.
func TestJWKSTrustedRefetchPerKid(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	e.op.SignWith(oidctest.NewRSAKey("never-published", 2))
	for i, st := range e.loginAll(20, "/private") {
		if st == http.StatusFound || st >= 500 {
			t.Errorf("login %d with tokens of an unpublished key: status %d, want 4xx", i, st)
		}
	}
	e.expectJWKSFetches(2, "20 logins with one unpublished kid")
	e.clock.Advance(jwksKidInterval)
	e.loginAll(1, "/private")
	e.expectJWKSFetches(3, "a login with the same kid one interval later")
}

// TestJWKSDroppedKeyAgesOut: a key the IdP stops publishing is refused once
// the key set reaches its maximum age, also by a handler of a reloaded
// config (the key set is pooled) and for a token verified before.
func TestJWKSDroppedKeyAgesOut(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = 3 * time.Hour })
	b := e.browser()
	b.mustLogin("/private") // tokens of key-1
	expectServed(t, b.get("/private", nav), "session before the rotation")

	// A config reload: the new handler shares the pooled provider.
	old := e.h
	e.h = e.provision(e.op.Issuer)
	if e.h.provider != old.provider {
		t.Fatal("the reloaded handler does not share the pooled provider")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	old.provider, old.app = nil, nil // cleaned up already

	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false) // key-1 is dropped
	e.clock.Advance(30 * time.Minute)
	expectServed(t, b.get("/private", nav), "session within the key set's maximum age")
	e.expectJWKSFetches(1, "within the maximum age")

	before := jwksFetchCount(fetchMaxAge, "ok")
	e.clock.Advance(jwksDefaultMaxAge)
	b.get("/private", nav) // wakes the refresher, which runs in the background
	e.waitForFetch(2)
	e.expectJWKSFetches(2, "after the maximum age")
	if got := jwksFetchCount(fetchMaxAge, "ok") - before; got < 1 {
		t.Errorf("max_age fetches rose by %v, want at least 1", got)
	}
	c := b.clone()
	if b.get("/private", nav).reachedNext {
		t.Fatal("a token of a key the IdP dropped still verifies after the key set's maximum age")
	}
	// The session cookie is a trusted channel: its unknown kid was worth
	// one refetch, and no more within the interval.
	e.expectJWKSFetches(3, "refusing a dropped key")
	if c.get("/private", nav).reachedNext {
		t.Fatal("a token of a key the IdP dropped verifies on a second try")
	}
	e.expectJWKSFetches(3, "refusing a dropped key again")
}

// TestJWKSIdPDownKeepsKeys: a refresh that fails keeps the last good set.
func TestJWKSIdPDownKeepsKeys(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = 3 * time.Hour })
	b := e.browser()
	b.mustLogin("/private")
	e.op.Close()
	e.clock.Advance(jwksDefaultMaxAge + time.Minute)
	b.get("/private", nav) // wakes the refresher
	if err := e.waitForFetch(2); err == nil {
		t.Fatal("a JWKS fetch from a closed IdP succeeded")
	}
	expectServed(t, b.get("/private", nav), "session while the IdP is down past the maximum age")
}

// TestJWKSRefresherStopsOnCleanup: the pooled provider owns the refresher
// goroutine, which ends when the last config using it is cleaned up.
func TestJWKSRefresherStopsOnCleanup(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	keys := e.h.provider.Keys()
	if !keys.RefresherStarted() {
		t.Fatal("no refresher after the first fetch")
	}
	if err := e.h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	e.h.provider, e.h.app = nil, nil
	select {
	case <-keys.RefresherDone():
	case <-time.After(5 * time.Second):
		t.Fatal("the refresher goroutine outlived the provider")
	}
}

// TestKeyRotationKidAbsent (kid-absent-single-jwks, kid-absent-multiple-jwks):
// tokens without a kid are checked with every key of the set, and when the
// cached keys verify none of them (the IdP rotated to another key without
// a kid), the keys are refetched.
func TestKeyRotationKidAbsent(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.op.Rotate(oidctest.NewRSAKey("", 1), false) // a single key, no kid
	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", nav), "tokens without a kid, one key")
	e.expectJWKSFetches(1, "one key without a kid")

	e.op.Rotate(oidctest.NewRSAKey("", 2), true) // two keys without a kid; the new one signs
	b = e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", nav), "tokens without a kid after a rotation, two keys")
	e.expectJWKSFetches(2, "a rotation to another key without a kid")
}

// expectSessionKept fails if the response expires the session cookie.
func (e *itEnv) expectSessionKept(res *itResult, what string) {
	e.t.Helper()
	for _, c := range res.Cookies() {
		if strings.HasPrefix(c.Name, e.sessionCookieName()) && (c.MaxAge < 0 || c.Value == "") {
			e.t.Fatalf("%s: response expires cookie %s", what, c.Name)
		}
	}
}

// TestKeyRotationRefreshWhileJWKSDown: a refresh brings tokens of a new key
// while the IdP's JWKS endpoint fails. The session is not ended: the request
// gets the "IdP unavailable" answer (page or JSON) and keeps its cookie, and
// once the JWKS is back the session goes on. Refresh tokens rotate, so the
// retry must use the refresh token of the answer that could not be checked:
// kept in memory on one instance, in Redis with a shared store.
func TestKeyRotationRefreshWhileJWKSDown(t *testing.T) {
	t.Parallel()
	t.Run("one instance", func(t *testing.T) {
		t.Parallel()
		refreshWhileJWKSDown(t)
	})
	t.Run("redis store", func(t *testing.T) {
		t.Parallel()
		url := startTestRedis(t)
		refreshWhileJWKSDown(t, func(h *OIDCAuth) { h.Store = url })
	})
}

func refreshWhileJWKSDown(t *testing.T, configure ...func(*OIDCAuth)) {
	e := newITEnv(t, configure...)
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = 4 * time.Second })
	b := e.browser()
	b.mustLogin("/private")
	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false)
	e.op.Set(func(s *oidctest.Script) { s.JWKSStatus = http.StatusServiceUnavailable })

	e.clock.Advance(5 * time.Second) // the access token has expired
	res := b.get("/private", nav)
	if res.reachedNext || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("navigation while the JWKS is down: status %d (next reached: %v), want 503; location %q", res.StatusCode, res.reachedNext, res.location())
	}
	e.expectSessionKept(res, "navigation while the JWKS is down")
	res = b.get("/private", api)
	if res.reachedNext || res.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("API call while the JWKS is down: status %d, Content-Type %q, want 503 JSON", res.StatusCode, res.Header.Get("Content-Type"))
	}
	e.expectSessionKept(res, "API call while the JWKS is down")
	if n := e.op.Grants("refresh_token"); n < 1 {
		t.Fatalf("refresh grants: %d, want the refresh to have reached the token endpoint", n)
	}

	e.op.Set(func(s *oidctest.Script) { s.JWKSStatus = 0 })
	e.clock.Advance(jwksFailRetry)
	expectServed(t, b.get("/private", nav), "session once the JWKS is back")
	expectServed(t, b.get("/private", nav), "session after the refreshed cookie was written")
}

// TestJWKSFailedFetchRetriedSoon: a trusted refetch whose fetch fails
// (the JWKS endpoint briefly down) answers "IdP unavailable" rather than
// refusing the login, costs one fetch however many logins bring the kid,
// and does not hold the kid back for jwksKidInterval: a login one
// jwksFailRetry after the JWKS is back works.
func TestJWKSFailedFetchRetriedSoon(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	e.browser().mustLogin("/private")
	e.op.Rotate(oidctest.NewRSAKey("key-2", 1), false)
	e.op.Set(func(s *oidctest.Script) { s.JWKSStatus = http.StatusInternalServerError })

	for i, st := range e.loginAll(20, "/private") {
		if st != http.StatusBadGateway {
			t.Errorf("login %d while the JWKS is down: status %d, want 502", i, st)
		}
	}
	e.expectJWKSFetches(2, "20 logins with a new kid while the JWKS is down")
	for i, st := range e.loginAll(5, "/private") {
		if st != http.StatusBadGateway {
			t.Errorf("login %d right after the failed fetch: status %d, want 502", i, st)
		}
	}
	e.expectJWKSFetches(2, "logins within jwksFailRetry of the failed fetch")

	e.op.Set(func(s *oidctest.Script) { s.JWKSStatus = 0 })
	e.clock.Advance(jwksFailRetry)
	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", nav), "session after the JWKS is back")
	e.expectJWKSFetches(3, "one retry after the JWKS is back")
}

// TestSelfCheckStopsRefresher: `caddy oidc-auth check` makes a provider of
// its own, outside the pool; its key set's refresher ends with the check.
func TestSelfCheckStopsRefresher(t *testing.T) {
	t.Parallel()
	op := oidctest.New(t, oidctest.NewClock())
	m := &OIDCAuth{Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret, CookieSecret: itCookieSecret}
	for _, line := range selfCheck(context.Background(), m) {
		if !line.ok {
			t.Fatalf("check: %s", line)
		}
	}
	keys := m.provider.Keys()
	if !keys.RefresherStarted() {
		t.Fatal("the check fetched the JWKS without starting the key set's refresher")
	}
	select {
	case <-keys.RefresherDone():
	default:
		t.Fatal("the key set's refresher outlived the check")
	}
}
