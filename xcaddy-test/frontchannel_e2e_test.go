//go:build e2e

package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

// sessionSID reads the signed-in user's sid from the session info path.
func sessionSID(t *testing.T, s *stack, b *browser) string {
	t.Helper()
	p := b.do(http.MethodGet, s.app+"/auth/session", apiCall, nil)
	var info struct {
		Claims map[string]any `json:"claims"`
	}
	if p.Status != http.StatusOK || json.Unmarshal([]byte(p.Body), &info) != nil {
		t.Fatalf("session info: %s", p)
	}
	sid, _ := info.Claims["sid"].(string)
	if sid == "" {
		t.Fatalf("session info has no sid: %s", p.Body)
	}
	return sid
}

// TestFrontchannelLogoutE2E: with the default configuration the
// front-channel logout path is an ordinary protected path that ends no
// session; with frontchannel_logout_path set, a request from a cookieless
// iframe ends the session of a sid issued here, and a made-up sid ends
// nothing.
func TestFrontchannelLogoutE2E(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		s := newStack(t, stackOptions{})
		b := newBrowser(t)
		s.mustLogin(b, s.app+"/")
		sid := sessionSID(t, s, b)
		iframe := newBrowser(t)
		p := iframe.navigate(s.app + "/auth/frontchannel-logout?iss=" + url.QueryEscape(s.idp.Issuer) + "&sid=" + url.QueryEscape(sid))
		if p.Status == http.StatusOK {
			t.Fatalf("front-channel logout answered although not configured: %s", p)
		}
		if p := b.navigate(s.app + "/"); p.Status != http.StatusOK {
			t.Fatalf("the session ended by an unconfigured front-channel logout: %s", p)
		}
	})

	t.Run("configured", func(t *testing.T) {
		s := newStack(t, stackOptions{extra: "frontchannel_logout_path /auth/frontchannel-logout"})
		b := newBrowser(t)
		s.mustLogin(b, s.app+"/")
		sid := sessionSID(t, s, b)
		iframe := newBrowser(t)
		logout := func(sid string) *page {
			return iframe.navigate(s.app + "/auth/frontchannel-logout?iss=" + url.QueryEscape(s.idp.Issuer) + "&sid=" + url.QueryEscape(sid))
		}
		if p := logout("made-up-" + sid); p.Status != http.StatusOK {
			t.Fatalf("front-channel logout of an unknown sid: %s", p)
		}
		if p := b.navigate(s.app + "/"); p.Status != http.StatusOK {
			t.Fatalf("a made-up sid ended the session: %s", p)
		}
		if p := logout(sid); p.Status != http.StatusOK {
			t.Fatalf("front-channel logout: %s", p)
		}
		if p := b.navigate(s.app + "/"); p.Status == http.StatusOK {
			t.Fatalf("the session survived the front-channel logout of its sid: %s", p)
		}
	})
}
