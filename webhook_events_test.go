package oidcauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func membershipEvent(typ, user, org string) string {
	return fmt.Sprintf(`{"spec_version":"1","id":"evt_1","type":%q,"object":"OrgMembershipEvent","occurred_at":"2025-01-01T00:00:00Z","environment_id":"env_1","data":{"organization":{"id":%q},"user":{"id":%q,"email":"u@example.com","membership":{"organization_id":%q,"roles":[{"id":"role_1"}]}}}}`, typ, org, user, org)
}

// TestWebhookMembershipDeleted ends the user's sessions in that
// organization only: another organization's session, and another user's,
// go on.
func TestWebhookMembershipDeleted(t *testing.T) {
	now := time.Now()
	m := webhookHandler(t, now)
	mk := func(sub, oid string) *session {
		s := unitSession(now)
		s.Subject = sub
		s.Claims = json.RawMessage(fmt.Sprintf(`{"oid":%q}`, oid))
		m.tokens.registerSession(apiRequest(http.MethodGet, "/"), s)
		return s
	}
	inOrg, otherOrg, otherUser := mk("usr_1", "org_1"), mk("usr_1", "org_2"), mk("usr_2", "org_1")
	rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_m1", now, membershipEvent(eventMembershipDeleted, "usr_1", "org_1")).request())
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	for s, want := range map[*session]bool{inOrg: false, otherOrg: true, otherUser: true} {
		if _, next := serve(t, m, apiWith(t, m, s)); next.called != want {
			t.Errorf("session of %s in %s: alive %v, want %v", s.Subject, s.Claims, next.called, want)
		}
	}
	for _, body := range []string{`{"type":"` + eventMembershipDeleted + `","data":{}}`, membershipEvent(eventMembershipDeleted, "usr_1", "")} {
		if rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_bad", now, body).request()); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", body, rec.Code)
		}
	}
}

// TestWebhookMembershipUpdated: the user's next request refreshes its
// tokens at once, though they are far from expiry; another user's does
// not, and a session refreshed after the event is not asked again.
func TestWebhookMembershipUpdated(t *testing.T) {
	now := time.Now()
	var calls atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer idp.Close()
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.TokenEndpoint = idp.URL + "/token"
		m.WebhookSecret = testWebhookSecret(testWebhookKey)
		m.now = func() time.Time { return now }
	})
	user, other := unitSession(now), unitSession(now)
	user.Subject, other.Subject = "usr_1", "usr_2"
	user.RefreshToken, other.RefreshToken = "rt-1", "rt-2"
	for _, s := range []*session{user, other} {
		if _, next := serve(t, m, apiWith(t, m, s)); !next.called {
			t.Fatal("session refused before the event")
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d refreshes before the event", n)
	}
	rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_u1", now, membershipEvent(eventMembershipUpdated, "usr_1", "org_1")).request())
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	serve(t, m, apiWith(t, m, other))
	if n := calls.Load(); n != 0 {
		t.Fatalf("another user's session refreshed (%d calls)", n)
	}
	// The IdP is down here, so the token, still valid, is kept.
	if _, next := serve(t, m, apiWith(t, m, user)); !next.called || calls.Load() == 0 {
		t.Fatalf("the user's next request did not try to refresh (calls %d, served %v)", calls.Load(), next.called)
	}
	later := *user
	later.Issued = now.Unix() + 1
	if !m.app.store.MustRefresh("usr_1", user.Created) || m.app.store.MustRefresh("usr_1", later.Issued) {
		t.Error("MustRefresh: sessions refreshed after the event are asked again, or older ones are not")
	}
}
