package oidcauth

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// A logout token whose jti was claimed but whose logout was never recorded
// (Redis failed over between the two writes, and the claim's release was
// lost with it) is recorded when the IdP retries; once recorded, a replay
// is refused as before.
func TestBackchannelRetryAfterLostRelease(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	ctx := context.Background()
	claimLost := func(jti string) {
		t.Helper()
		if fresh, err := e.h.app.store.ClaimOnce(ctx, "jti:"+jti, e.clock.Now().Add(time.Hour)); !fresh || err != nil {
			t.Fatalf("claim %s: %v %v", jti, fresh, err)
		}
	}

	t.Run("sid", func(t *testing.T) {
		e.op.SetUser("user-1", "user1@example.com", "sid-lost")
		b := e.browser()
		b.mustLogin("/private")
		tok := e.logoutToken(func(c map[string]any) { c["sid"] = "sid-lost"; c["jti"] = "jti-sid-lost" })
		claimLost("jti-sid-lost")
		expectBackchannelAccepted(t, e.postLogout(tok))
		expectAPI401(t, b.get("/private", api), "session of the retried logout")
		expectBackchannelRefused(t, e.postLogout(tok), "a replay once the logout is recorded")
	})

	t.Run("sub", func(t *testing.T) {
		e.op.SetUser("user-9", "user9@example.com", "")
		before := e.browser()
		before.mustLogin("/private")
		issued := e.clock.Now().Add(30 * time.Second)
		e.clock.Advance(time.Minute)
		after := e.browser()
		after.mustLogin("/private")
		tok := e.logoutToken(func(c map[string]any) {
			delete(c, "sid")
			c["sub"], c["jti"], c["iat"] = "user-9", "jti-sub-lost", issued.Unix()
		})
		claimLost("jti-sub-lost")
		expectBackchannelAccepted(t, e.postLogout(tok))
		expectAPI401(t, before.get("/private", api), "session begun before the token")
		expectServed(t, after.get("/private", api), "session begun after the token was issued")
		if res := e.postLogout(tok); res.StatusCode != http.StatusBadRequest {
			t.Errorf("a replay once the logout is recorded: %d", res.StatusCode)
		}
	})
}
