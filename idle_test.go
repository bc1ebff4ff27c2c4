package oidcauth

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// TestIdleTimeout: a session with no request for idle_timeout is over
// (API: 401, navigation: login), unless the registry, which every
// instance updates, saw it later; recent activity is written to the cookie
// at most once per touch interval, not on every request.
func TestIdleTimeout(t *testing.T) {
	now := time.Unix(time.Now().Unix(), 0)
	newIdle := func(t *testing.T) *OIDCAuth {
		return newUnitHandler(t, func(m *OIDCAuth) {
			withOverrides(m)
			m.IdleTimeout = caddy.Duration(10 * time.Minute)
			m.now = func() time.Time { return now }
		})
	}
	t.Run("recent activity: no rewrite", func(t *testing.T) {
		m := newIdle(t)
		s := unitSession(now)
		s.Created = now.Add(-30 * time.Second).Unix()
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		rec, next := serve(t, m, r)
		if !next.called {
			t.Fatalf("status %d", rec.Code)
		}
		if c := sessionCookieSet(m, rec, r); c != nil {
			t.Error("cookie rewritten although its activity is recent")
		}
	})
	t.Run("recent by the cookie: the registry is not what decides", func(t *testing.T) {
		m := newIdle(t)
		s := unitSession(now)
		s.Created = now.Add(-time.Hour).Unix()
		s.Seen = now.Add(-30 * time.Second).Unix()
		_ = m.app.store.RecordSession(context.Background(), store.SessionEntry{ID: s.ID, Subject: s.Subject, Created: s.Created, LastSeen: s.Created, Until: now.Add(time.Hour).Unix()})
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		if rec, next := serve(t, m, r); !next.called || sessionCookieSet(m, rec, r) != nil {
			t.Fatalf("status %d: a session active 30s ago by its cookie was refused or rewritten", rec.Code)
		}
	})
	t.Run("stale activity: recorded in cookie and registry", func(t *testing.T) {
		m := newIdle(t)
		s := unitSession(now)
		s.Created = now.Add(-2 * time.Hour).Unix()
		s.Seen = now.Add(-90 * time.Second).Unix()
		_ = m.app.store.RecordSession(context.Background(), store.SessionEntry{ID: s.ID, Subject: s.Subject, Created: s.Created, Until: now.Add(time.Hour).Unix()})
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		rec, next := serve(t, m, r)
		if !next.called {
			t.Fatalf("status %d", rec.Code)
		}
		c := sessionCookieSet(m, rec, r)
		if c == nil {
			t.Fatal("activity older than a minute not written to the cookie")
		}
		r2 := apiRequest(http.MethodGet, "/api")
		r2.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		got, err := m.cookies.ReadSession(r2)
		if err != nil || got.Seen != now.Unix() {
			t.Fatalf("rewritten cookie: seen %v, err %v; want %d", got, err, now.Unix())
		}
		for i := 0; ; i++ {
			if e, ok, _ := m.app.store.Session(context.Background(), s.ID); ok && e.LastSeen == now.Unix() {
				break
			}
			if i == 200 {
				t.Fatal("activity not recorded in the registry")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	for _, tt := range []struct {
		name     string
		registry int64 // last seen in the registry, seconds ago; 0: not registered
		alive    bool
	}{
		{"idle, not registered", 0, false},
		{"idle here and in the registry", 11 * 60, false},
		{"idle by the cookie, active elsewhere", 2 * 60, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newIdle(t)
			s := unitSession(now)
			s.Created = now.Add(-time.Hour).Unix()
			s.Seen = now.Add(-11 * time.Minute).Unix()
			if tt.registry > 0 {
				_ = m.app.store.RecordSession(context.Background(), store.SessionEntry{ID: s.ID, Subject: s.Subject, Created: s.Created, LastSeen: now.Unix() - tt.registry, Until: now.Add(time.Hour).Unix()})
			}
			r := apiRequest(http.MethodGet, "/api")
			addSession(t, m, r, s)
			rec, next := serve(t, m, r)
			if next.called != tt.alive {
				t.Fatalf("status %d, next called %v; want alive=%v", rec.Code, next.called, tt.alive)
			}
			if !tt.alive && rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", rec.Code)
			}
			nav := navRequest(http.MethodGet, "/page")
			addSession(t, m, nav, s)
			if rec, _ := serve(t, m, nav); !tt.alive && rec.Code != http.StatusFound {
				t.Fatalf("navigation: status %d, want 302 to log in", rec.Code)
			}
		})
	}
	t.Run("off by default", func(t *testing.T) {
		m := newUnitHandler(t, func(m *OIDCAuth) { m.now = func() time.Time { return now } })
		s := unitSession(now)
		s.Created = now.Add(-20 * time.Hour).Unix()
		r := apiRequest(http.MethodGet, "/api")
		addSession(t, m, r, s)
		if rec, next := serve(t, m, r); !next.called || sessionCookieSet(m, rec, r) != nil {
			t.Fatalf("status %d; without idle_timeout an old session must pass untouched", rec.Code)
		}
	})
}

func TestIdleTimeoutConfig(t *testing.T) {
	d := caddyfile.NewTestDispenser("oidc_auth {\nissuer https://idp.example.com\nclient_id a\nclient_secret b\nidle_timeout 15m\n}")
	var m OIDCAuth
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if m.IdleTimeout != caddy.Duration(15*time.Minute) {
		t.Fatalf("idle_timeout = %v", m.IdleTimeout)
	}
	for _, bad := range []time.Duration{500 * time.Millisecond, -time.Second} {
		m := OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "b", IdleTimeout: caddy.Duration(bad)}
		if err := m.Validate(); err == nil || !strings.HasPrefix(err.Error(), "idle_timeout:") {
			t.Errorf("idle_timeout %s: %v; want an error naming idle_timeout", bad, err)
		}
	}
}
