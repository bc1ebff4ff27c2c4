package oidcauth

import (
	"encoding/json"
	"testing"
	"time"
)

// TestVerifiedCacheChecksSubject: a cached access token serves only the
// user it was verified for, and a cached identity only the session it was
// built from.
func TestVerifiedCacheChecksSubject(t *testing.T) {
	m := newUnitHandler(t, nil)
	now := time.Now()
	alice := &session{ID: "a", Subject: "alice", SID: "sid-a", AccessToken: "opaque-token", Expiry: now.Add(time.Hour).Unix(),
		Claims: json.RawMessage(`{"email":"alice@example.com"}`)}
	v, err := m.tokens.verifyAccessToken(t.Context(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if id := v.identityFor(alice); id.values["http.auth.user.id"] != "alice" {
		t.Fatalf("Alice's identity: %v", id.values)
	}

	mallory := &session{ID: "m", Subject: "mallory", SID: "sid-m", AccessToken: alice.AccessToken, Expiry: alice.Expiry,
		Claims: json.RawMessage(`{"email":"mallory@example.com"}`)}
	if _, err := m.tokens.verifyAccessToken(t.Context(), mallory); err == nil {
		t.Fatal("a token verified for alice was accepted from the cache for mallory's session")
	}
	if v, err := m.tokens.verifyAccessToken(t.Context(), alice); err != nil || v == nil {
		t.Fatalf("Alice's own token from the cache: %v", err)
	}

	// The same user in another session (another sid, other claims) gets
	// an identity of its own, not the first session's.
	other := *alice
	other.SID, other.Claims = "sid-a2", json.RawMessage(`{"email":"alice@work.example"}`)
	id := v.identityFor(&other)
	if id.values["http.auth.user.sid"] != "sid-a2" || id.values["http.auth.user.email"] != "alice@work.example" {
		t.Fatalf("second session of the same token got %v", id.values)
	}
	if v.identityFor(alice).values["http.auth.user.sid"] != "sid-a" {
		t.Fatal("the cached identity changed")
	}
}
