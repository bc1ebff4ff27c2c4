package oidcauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestStepUpSession: a session whose ID token has too weak an acr (or an
// auth_time older than max_age) at a handler that needs more is sent
// through a new login asking for acr_values / max_age, which comes back to
// the page; API calls get 401 insufficient_user_authentication.
func TestStepUpSession(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		configure func(*OIDCAuth)
		first     map[string]any // ID token claims of the first login
		stronger  map[string]any // of the step-up login
		wantQuery url.Values
		wantWWW   string
	}{
		{"acr", func(h *OIDCAuth) { h.Require = []Rule{{Claim: "acr", Values: []string{"mfa", "phr"}}} },
			map[string]any{"acr": "pwd"}, map[string]any{"acr": "mfa"},
			url.Values{"acr_values": {"mfa phr"}}, `acr_values="mfa phr"`},
		{"max_age", func(h *OIDCAuth) { h.MaxAge = caddyDuration(5 * time.Minute) },
			map[string]any{"auth_time": -10 * 60}, map[string]any{"auth_time": 0},
			url.Values{"max_age": {"300"}}, `max_age="300"`},
		{"max_age without auth_time", func(h *OIDCAuth) { h.MaxAge = caddyDuration(5 * time.Minute) },
			map[string]any{}, map[string]any{"auth_time": 0},
			url.Values{"max_age": {"300"}}, `max_age="300"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t)
			claims := tt.first
			e.op.Set(func(s *oidctest.Script) {
				s.IDClaims = func(grant string, c map[string]any) {
					for k, v := range claims {
						if k == "auth_time" {
							v = e.clock.Now().Unix() + int64(v.(int))
						}
						c[k] = v
					}
				}
			})
			b := e.browser()
			b.mustLogin("/")
			expectServed(t, b.get("/", nav), "the page without step-up")

			// The same client and cookies, at a handler that needs more.
			e.h = e.provision(e.op.Issuer, tt.configure)
			res := b.get("/admin?x=1", api)
			www := res.Header.Get("WWW-Authenticate")
			if res.StatusCode != http.StatusUnauthorized || !strings.Contains(www, `error="insufficient_user_authentication"`) || !strings.Contains(www, tt.wantWWW) {
				t.Errorf("API call: status %d, WWW-Authenticate %q; want 401 insufficient_user_authentication with %s", res.StatusCode, www, tt.wantWWW)
			}
			loc, q := b.startLogin("/admin?x=1")
			for k := range tt.wantQuery {
				if q.Get(k) != tt.wantQuery.Get(k) {
					t.Errorf("authorization request %s = %q, want %q (%s)", k, q.Get(k), tt.wantQuery.Get(k), loc)
				}
			}
			claims = tt.stronger
			code := e.op.Authorize(loc)
			res = b.get(itCallbackURL(code, q.Get("state")), nav)
			if res.StatusCode != http.StatusFound || res.location() != "/admin?x=1" {
				t.Fatalf("step-up callback: status %d location %q body %s", res.StatusCode, res.location(), res.body)
			}
			expectServed(t, b.get("/admin?x=1", nav), "the page after step-up")
		})
	}
}

func caddyDuration(d time.Duration) caddyDur { return caddyDur(d) }

// TestStepUpLoopGuard: a step-up login whose ID token still has too weak
// an acr, or too old (or no) auth_time, is refused with an error page, not
// sent back to the IdP (OIDC Core 3.1.3.7).
func TestStepUpLoopGuard(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		claims map[string]any
	}{
		{"weak acr", map[string]any{"acr": "pwd", "auth_time": 0}},
		{"no acr", map[string]any{"auth_time": 0}},
		{"old auth_time", map[string]any{"acr": "mfa", "auth_time": -3600}},
		{"no auth_time", map[string]any{"acr": "mfa"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newITEnv(t, func(h *OIDCAuth) {
				h.Require = []Rule{{Claim: "acr", Values: []string{"mfa"}}}
				h.MaxAge = caddyDuration(10 * time.Minute)
			})
			e.op.Set(func(s *oidctest.Script) {
				s.IDClaims = func(grant string, c map[string]any) {
					for k, v := range tt.claims {
						if k == "auth_time" {
							v = e.clock.Now().Unix() + int64(v.(int))
						}
						c[k] = v
					}
				}
			})
			b := e.browser()
			loc, q := b.startLogin("/admin")
			if q.Get("acr_values") != "mfa" || q.Get("max_age") != "600" {
				t.Fatalf("first login does not ask for the step-up: %s", loc)
			}
			res := b.get(itCallbackURL(e.op.Authorize(loc), q.Get("state")), nav)
			if res.StatusCode != http.StatusForbidden || res.location() != "" || res.setCookie(e.sessionCookieName()) != nil {
				t.Fatalf("too weak a login: status %d location %q, session cookie set %v; want 403 page",
					res.StatusCode, res.location(), res.setCookie(e.sessionCookieName()) != nil)
			}
			if !strings.Contains(res.body, "stronger sign-in") {
				t.Errorf("error page: %s", res.body)
			}
		})
	}
}

// TestStepUpBearer: a bearer token whose acr or auth_time is too weak gets
// RFC 9470's 401 insufficient_user_authentication with acr_values and
// max_age; a strong one passes.
func TestStepUpBearer(t *testing.T) {
	t.Parallel()
	e := newITEnv(t, func(h *OIDCAuth) {
		h.Bearer = &BearerConfig{}
		h.Require = []Rule{{Claim: "acr", Values: []string{"mfa"}}}
		h.MaxAge = caddyDuration(time.Hour)
	})
	now := e.clock.Now()
	for _, tt := range []struct {
		name  string
		extra map[string]any
		ok    bool
	}{
		{"strong and fresh", map[string]any{"acr": "mfa", "auth_time": now.Unix() - 60}, true},
		{"weak acr", map[string]any{"acr": "pwd", "auth_time": now.Unix() - 60}, false},
		{"old", map[string]any{"acr": "mfa", "auth_time": now.Unix() - 7200}, false},
		{"no auth_time", map[string]any{"acr": "mfa"}, false},
	} {
		c := map[string]any{"iss": e.op.Issuer, "aud": e.op.ClientID, "sub": "u", "client_id": "c", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range tt.extra {
			c[k] = v
		}
		req := httptest.NewRequest(http.MethodGet, "http://"+itHost+"/api", nil)
		req.Header.Set("Authorization", "Bearer "+e.op.ActiveKey().Sign(c, "at+jwt"))
		res := e.browser().do(req, api)
		if tt.ok {
			expectServed(t, res, tt.name)
			continue
		}
		www := res.Header.Get("WWW-Authenticate")
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(www, `error="insufficient_user_authentication"`) ||
			!strings.Contains(www, `acr_values="mfa"`) || !strings.Contains(www, `max_age="3600"`) {
			t.Errorf("%s: status %d WWW-Authenticate %q", tt.name, res.StatusCode, www)
		}
	}
}

// TestStepUpValidate: bad max_age and acr values fail Validate naming the
// field; the Caddyfile sets max_age.
func TestStepUpValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		m    OIDCAuth
		want string
	}{
		{"negative max_age", OIDCAuth{MaxAge: caddyDur(-time.Second)}, "max_age"},
		{"sub-second max_age", OIDCAuth{MaxAge: caddyDur(time.Millisecond)}, "max_age"},
		{"acr glob", OIDCAuth{Require: []Rule{{Claim: "acr", Values: []string{"m*"}}}}, "require: acr"},
		{"auth_param acr_values", OIDCAuth{Require: []Rule{{Claim: "acr", Values: []string{"mfa"}}}, AuthParams: map[string]string{"acr_values": "pwd"}}, "auth_param: acr_values"},
	} {
		if err := tt.m.checkStepUp(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
	m := new(OIDCAuth)
	if err := m.UnmarshalCaddyfile(caddyfileDispenser("oidc_auth {\n max_age 15m\n require acr mfa\n}")); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if !strings.Contains(string(b), `"max_age":900000000000`) || !strings.Contains(string(b), `{"claim":"acr","values":["mfa"]}`) {
		t.Errorf("JSON: %s", b)
	}
}

type caddyDur = caddy.Duration

func caddyfileDispenser(s string) *caddyfile.Dispenser { return caddyfile.NewTestDispenser(s) }
