package oidcauth

import (
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestFrontchannelLogoutOffByDefault: without frontchannel_logout_path,
// also with a path_prefix, the former default path is an ordinary
// protected path: no logout, no write.
func TestFrontchannelLogoutOffByDefault(t *testing.T) {
	for name, configure := range map[string]func(*OIDCAuth){
		"defaults":    nil,
		"path_prefix": func(m *OIDCAuth) { m.PathPrefix = "/sso" },
	} {
		t.Run(name, func(t *testing.T) {
			m := newUnitHandler(t, configure)
			if m.FrontchannelLogoutPath != "" {
				t.Fatalf("frontchannel_logout_path defaults to %q, want off", m.FrontchannelLogoutPath)
			}
			s := unitSession(time.Now())
			m.tokens.recordSID(t.Context(), s.SID) // does nothing while off
			for _, p := range []string{"/auth/frontchannel-logout", "/sso/frontchannel-logout"} {
				rec, next := serve(t, m, apiRequest(http.MethodGet, p+"?iss="+url.QueryEscape(unreachableIssuer)+"&sid="+s.SID))
				if rec.Code != http.StatusUnauthorized || next.called {
					t.Errorf("%s: status %d (next called: %v), want the 401 of any protected path", p, rec.Code, next.called)
				}
			}
			if m.app.revoked(s) {
				t.Error("a session was revoked with front-channel logout off")
			}
		})
	}
}

// TestFrontchannelLogoutBounded: anonymous front-channel requests end only
// sessions issued here, and write at most one revocation per such sid:
// 2,000 requests with made-up sids write nothing.
func TestFrontchannelLogoutBounded(t *testing.T) {
	dir := t.TempDir()
	m := newUnitHandler(t, func(m *OIDCAuth) { m.FrontchannelLogoutPath = "/auth/frontchannel-logout" })
	m.app.store = newTestStore(t, m.app.id, dir, nil)
	files := func() int {
		n := 0
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	logout := func(sid string) int {
		rec, _ := serve(t, m, navRequest(http.MethodGet, "/auth/frontchannel-logout?iss="+url.QueryEscape(unreachableIssuer)+"&sid="+url.QueryEscape(sid)))
		return rec.Code
	}

	for i := range 2000 {
		if code := logout("made-up-" + strconv.Itoa(i)); code != http.StatusOK {
			t.Fatalf("unknown sid: status %d, want the same 200 as a logout", code)
		}
	}
	if n := files(); n != 0 {
		t.Fatalf("2,000 front-channel requests for unknown sids wrote %d files", n)
	}
	held := m.app.store.Held()
	if held != 0 {
		t.Fatalf("2,000 front-channel requests for unknown sids left %d revocations in memory", held)
	}

	s := unitSession(time.Now())
	m.tokens.recordSID(t.Context(), s.SID)
	for range 50 {
		if code := logout(s.SID); code != http.StatusOK {
			t.Fatalf("known sid: status %d", code)
		}
	}
	if !m.app.revoked(s) {
		t.Fatal("the session of a sid issued here was not ended")
	}
	if n := files(); n != 1 {
		t.Fatalf("50 logouts of one sid wrote %d revocations, want 1", n)
	}
}

// TestFrontchannelLogoutOfLogin: a sid recorded by a real login (and by a
// refresh that brings a new one) is ended by a front-channel logout.
func TestFrontchannelLogoutOfLogin(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) { h.FrontchannelLogoutPath = "/auth/frontchannel-logout" })
	e.op.SetUser("user-fc", "fc@example.com", "sid-fc")
	b := e.browser()
	b.mustLogin("/private")
	expectServed(t, b.get("/private", api), "after login")

	iframe := e.browser() // no cookies: a third-party iframe
	res := iframe.get("/auth/frontchannel-logout?iss="+url.QueryEscape(e.op.Issuer)+"&sid=sid-fc", nav)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("front-channel logout: status %d", res.StatusCode)
	}
	expectAPI401(t, b.get("/private", api), "session after the front-channel logout of its sid")
}
