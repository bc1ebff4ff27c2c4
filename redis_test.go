package oidcauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
	"github.com/caddy-oidc-auth/oidcauth/internal/store/storetest"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// startTestRedis runs a redis-server for one test and returns its URL.
func startTestRedis(t *testing.T) string { return storetest.Redis(t) }

// newTestStore is an embedded store kept in dir, on the clock now
// (time.Now when nil), closed when the test ends.
func newTestStore(tb testing.TB, app, dir string, now func() time.Time) *store.Store {
	tb.Helper()
	st, err := store.New(context.Background(), store.Embedded(&certmagic.FileStorage{Path: dir}, app), store.Options{Logger: zap.NewNop(), Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// TestAttackRedisOutcomeSwap: someone who can write to Redis copies the
// refresh outcome of Alice's session to the key of Mallory's refresh
// token, then Mallory's session refreshes. Mallory must stay Mallory:
// the copied outcome does not open under another key and user, and the
// verified-token cache does not lend Alice's identity to another session.
func TestAttackRedisOutcomeSwap(t *testing.T) {
	t.Parallel()
	redisURL := startTestRedis(t)
	e := newITEnv(t, func(h *OIDCAuth) { h.Store = redisURL })
	e.op.Set(func(s *oidctest.Script) { s.AccessTTL = time.Minute })

	e.op.SetUser("alice", "alice@example.com", "sid-alice")
	alice := e.browser()
	alice.mustLogin("/private")
	e.op.SetUser("mallory", "mallory@example.com", "sid-mallory")
	mallory := e.browser()
	mallory.mustLogin("/private")
	malloryRT := e.lastRefreshToken()
	if res := mallory.get("/private", api); res.user != "mallory" {
		t.Fatalf("Mallory before the attack: user %q (status %d)", res.user, res.StatusCode)
	}

	// Alice's access token is due: her refresh puts its outcome in Redis.
	e.clock.Advance(61 * time.Second)
	if res := alice.get("/private", api); res.user != "alice" {
		t.Fatalf("Alice after her refresh: user %q (status %d)", res.user, res.StatusCode)
	}
	opts, _ := redis.ParseURL(redisURL)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "oidc_auth:*:refreshed:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("refresh outcomes in Redis: %v (%v), want Alice's only", keys, err)
	}
	aliceOutcome, err := rdb.Get(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	malloryKey := fmt.Sprintf("oidc_auth:%s:refreshed:%s", e.h.app.id, store.Key(malloryRT))
	if err := rdb.Set(ctx, malloryKey, aliceOutcome, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	res := mallory.get("/private", api)
	if res.user == "alice" || res.email == "alice@example.com" || res.sid == "sid-alice" {
		t.Fatalf("Mallory's session was served as Alice (status %d, user %q, email %q, sid %q)", res.StatusCode, res.user, res.email, res.sid)
	}
	expectServed(t, res, "Mallory's own refresh after the swap")
	if res.user != "mallory" {
		t.Fatalf("Mallory's session: user %q, want mallory", res.user)
	}
	if n := e.op.Grants("refresh_token"); n != 2 {
		t.Errorf("refresh grants: %d, want 2 (Alice's and Mallory's own)", n)
	}
}

// TestRefreshOutcomeBound: a sealed outcome opens only under the key and
// user it was sealed for.
func TestRefreshOutcomeBound(t *testing.T) {
	m := newUnitHandler(t, nil)
	sealed := m.cookies.Seal(m.tokens.outcomePurpose("key-a", "alice"), []byte(`{"t":{"AccessToken":"x","Subject":"alice"}}`))
	if m.tokens.openOutcome(sealed, "key-a", "alice") == nil {
		t.Fatal("outcome does not open under its own key and user")
	}
	for _, c := range [][2]string{{"key-m", "alice"}, {"key-a", "mallory"}, {"key-m", "mallory"}} {
		if m.tokens.openOutcome(sealed, c[0], c[1]) != nil {
			t.Errorf("outcome sealed for key-a/alice opens under %s/%s", c[0], c[1])
		}
	}
	if m.tokens.openOutcome(m.cookies.Seal(purposeRefresh, []byte(`{}`)), "key-a", "alice") != nil {
		t.Error("an outcome sealed with the bare purpose opens")
	}
}
