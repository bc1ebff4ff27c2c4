package oidcauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// mgmtStandIn stands in for Scalekit's Management API, which no server here
// can provide: the client-credentials grant at /oauth/token, and
// GET /api/v1/users/{id} answering the GetUserResponse shape of Scalekit's
// published API description (snake_case JSON; memberships with
// organization_id, name, display_name, membership_status, roles[].name and
// permissions).
type mgmtStandIn struct {
	srv        *httptest.Server
	tokenCalls atomic.Int32
	userCalls  atomic.Int32
	fail       atomic.Bool
}

func newMgmtStandIn(t *testing.T) *mgmtStandIn {
	s := &mgmtStandIn{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		s.tokenCalls.Add(1)
		_ = r.ParseForm()
		id, secret, basic := r.BasicAuth()
		if !basic {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if r.PostForm.Get("grant_type") != "client_credentials" || id != "unit-app" || secret != "unit-secret" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"mgmt-token-1","token_type":"Bearer","expires_in":3600}`))
	})
	mux.HandleFunc("GET /api/v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.userCalls.Add(1)
		if r.Header.Get("Authorization") != "Bearer mgmt-token-1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if s.fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.PathValue("id") != "user-42" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"user":{"id":"user-42","email":"user42@example.com","memberships":[
			{"organization_id":"org_1","name":"AcmeCorp","display_name":"Acme Corporation","membership_status":"ACTIVE",
			 "roles":[{"id":"role_1","name":"admin","display_name":"Admin"},{"id":"role_2","name":"viewer","display_name":"Viewer"}],
			 "permissions":["read_projects","manage_users"]},
			{"organization_id":"org_2","name":"Globex","membership_status":"ACTIVE","roles":[{"id":"role_3","name":"member"}]}
		]}}`))
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func TestManagementAPIEnrichment(t *testing.T) {
	api := newMgmtStandIn(t)
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.ManagementAPI = &ManagementAPI{BaseURL: api.srv.URL, TokenURL: api.srv.URL + "/oauth/token", TokenHeader: "X-Scalekit-Token", CacheTTL: caddy.Duration(time.Hour)}
	})
	m.wire()

	r := apiRequest(http.MethodGet, "/app")
	r.Header.Set("X-Scalekit-Token", "Bearer forged")
	addSession(t, m, r, unitSession(time.Now()))
	rec, next := serve(t, m, r)
	if !next.called {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	repl := next.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	for k, want := range map[string]string{
		"{http.auth.user.organizations}":      "org_1,org_2",
		"{http.auth.user.organization_names}": "Acme Corporation,Globex",
		"{http.auth.user.organization_roles}": "org_1:admin org_1:viewer org_2:member",
		"{http.auth.user.email}":              "user42@example.com",
	} {
		if got := repl.ReplaceAll(k, "<unset>"); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := next.req.Header.Get("X-Scalekit-Token"); got != "Bearer mgmt-token-1" {
		t.Errorf("upstream token header = %q, want the handler's Management API token", got)
	}

	// Within the cache TTL: no new lookup, no new token.
	r2 := apiRequest(http.MethodGet, "/auth/session")
	addSession(t, m, r2, unitSession(time.Now()))
	rec, _ = serve(t, m, r2)
	var info struct {
		Organizations []membership `json:"organizations"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("session info: %d %s", rec.Code, rec.Body)
	}
	if len(info.Organizations) != 2 || info.Organizations[0].OrganizationID != "org_1" ||
		strings.Join(info.Organizations[0].Roles, ",") != "admin,viewer" || info.Organizations[0].Permissions[1] != "manage_users" {
		t.Errorf("session info organizations = %+v", info.Organizations)
	}
	if strings.Contains(rec.Body.String(), "mgmt-token-1") {
		t.Error("the session info shows the Management API token")
	}
	if n := api.userCalls.Load(); n != 1 {
		t.Errorf("user lookups: %d, want 1 (cached)", n)
	}
	if n := api.tokenCalls.Load(); n != 1 {
		t.Errorf("token requests: %d, want 1 (cached)", n)
	}
}

// An API that fails never blocks a request: it is served without
// memberships (or with the last ones known).
func TestManagementAPIFailureDoesNotBlock(t *testing.T) {
	api := newMgmtStandIn(t)
	api.fail.Store(true)
	m := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.ManagementAPI = &ManagementAPI{BaseURL: api.srv.URL, TokenURL: api.srv.URL + "/oauth/token"}
	})
	m.wire()
	r := apiRequest(http.MethodGet, "/app")
	addSession(t, m, r, unitSession(time.Now()))
	rec, next := serve(t, m, r)
	if !next.called {
		t.Fatalf("a failing Management API blocked the request: %d %s", rec.Code, rec.Body)
	}
	repl := next.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if got, known := repl.GetString("http.auth.user.organizations"); !known || got != "" {
		t.Errorf("organizations = %q (known %v), want known and empty", got, known)
	}
	if st := m.provider.Tracker().State(); !st.Down() || st.LastFailure.Endpoint != "management" || !strings.Contains(st.LastFailure.Error, "HTTP 500") {
		t.Errorf("after the API answered 500: %+v, want the management endpoint failing", st)
	}
	if st := m.provider.Tracker().State(); st.LastFailure != nil && strings.Contains(st.LastFailure.Error, "user-") {
		t.Errorf("the recorded error names the user: %q", st.LastFailure.Error)
	}

	// Wrong client credentials: the token request fails the same way.
	m2 := newUnitHandler(t, func(m *OIDCAuth) {
		withOverrides(m)
		m.ClientSecret = "wrong"
		m.ManagementAPI = &ManagementAPI{BaseURL: api.srv.URL, TokenURL: api.srv.URL + "/oauth/token"}
	})
	m2.wire()
	r = apiRequest(http.MethodGet, "/app")
	addSession(t, m2, r, unitSession(time.Now()))
	if rec, next := serve(t, m2, r); !next.called {
		t.Fatalf("refused client credentials blocked the request: %d", rec.Code)
	}
	// Refused credentials are an IdP that is up.
	if st := m2.provider.Tracker().State(); st.Down() || st.LastSuccess == nil || st.LastSuccess.Endpoint != "token" {
		t.Errorf("after the token endpoint refused the client: %+v, want up", st)
	}
}

func TestManagementAPIConfig(t *testing.T) {
	for _, tt := range []struct {
		in, err string
	}{
		{"management_api", ""},
		{"management_api https://env.scalekit.dev {\ntoken_header X-Mgmt\ncache_ttl 30s\n}", ""},
		{"management_api {\nbogus 1\n}", "management_api: unrecognized option"},
		{"management_api {\ncache_ttl\n}", "management_api: cache_ttl needs a value"},
		{"management_api {\ncache_ttl soon\n}", "management_api: cache_ttl \"soon\" is not a duration"},
	} {
		m, err := parseOIDCAuth("oidc_auth {\nissuer https://idp.example.com\nclient_id a\nclient_secret s\n" + tt.in + "\n}")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || m.ManagementAPI == nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%q: Validate: %v", tt.in, err)
		}
	}
	for _, bad := range []ManagementAPI{{BaseURL: "http://api.example.com"}, {CacheTTL: caddy.Duration(-time.Minute)}, {TokenHeader: "X Bad"}} {
		m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "s", ManagementAPI: &bad}
		if err := m.Validate(); err == nil || !strings.HasPrefix(err.Error(), "management_api") {
			t.Errorf("%+v: error %v, want one naming management_api", bad, err)
		}
	}
	// In JSON, cache_ttl is a caddy.Duration: a duration string, or
	// nanoseconds.
	for raw, want := range map[string]time.Duration{`{"cache_ttl": "90s"}`: 90 * time.Second, `{"cache_ttl": 60000000000}`: time.Minute} {
		var mc ManagementAPI
		if err := json.Unmarshal([]byte(raw), &mc); err != nil || time.Duration(mc.CacheTTL) != want {
			t.Errorf("%s: cache_ttl = %v, %v; want %v", raw, time.Duration(mc.CacheTTL), err, want)
		}
	}
	var mc ManagementAPI
	if err := json.Unmarshal([]byte(`{"cache_ttl": "soon"}`), &mc); err == nil {
		t.Error(`cache_ttl "soon" was accepted`)
	}
}
