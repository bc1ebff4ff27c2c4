package oidcauth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func validConfig() *OIDCAuth {
	return &OIDCAuth{
		Issuer:       "https://idp.example.com",
		ClientID:     "app",
		ClientSecret: "secret",
	}
}

func TestModuleInfo(t *testing.T) {
	info := OIDCAuth{}.CaddyModule()
	if info.ID != "http.handlers.oidc_auth" {
		t.Errorf("module ID = %q", info.ID)
	}
	if _, ok := info.New().(*OIDCAuth); !ok {
		t.Errorf("New() returns %T, want *OIDCAuth", info.New())
	}
	mod, err := caddy.GetModule("http.handlers.oidc_auth")
	if err != nil {
		t.Fatalf("module not registered: %v", err)
	}
	if mod.ID != info.ID {
		t.Errorf("registered module ID = %q", mod.ID)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*OIDCAuth)
		field  string // the error message must start with "<field>:"
	}{
		{"missing issuer", func(m *OIDCAuth) { m.Issuer = "" }, "issuer"},
		{"http issuer on a public host", func(m *OIDCAuth) { m.Issuer = "http://idp.example.com" }, "issuer"},
		{"http issuer on a private address", func(m *OIDCAuth) { m.Issuer = "http://10.0.0.5" }, "issuer"},
		{"http issuer on localhost lookalike", func(m *OIDCAuth) { m.Issuer = "http://localhost.evil.com" }, "issuer"},
		{"issuer without scheme", func(m *OIDCAuth) { m.Issuer = "idp.example.com" }, "issuer"},
		{"issuer with another scheme", func(m *OIDCAuth) { m.Issuer = "ftp://idp.example.com" }, "issuer"},
		{"issuer unparsable", func(m *OIDCAuth) { m.Issuer = "https://idp example.com/%zz" }, "issuer"},
		{"missing client_id", func(m *OIDCAuth) { m.ClientID = "" }, "client_id"},
		{"missing client_secret", func(m *OIDCAuth) { m.ClientSecret = "" }, "client_secret"},
		{"cookie_name with __Host-", func(m *OIDCAuth) { m.CookieName = "__Host-app" }, "cookie_name"},
		{"cookie_name with __Secure-", func(m *OIDCAuth) { m.CookieName = "__Secure-app" }, "cookie_name"},
		{"cookie_name with __host- in lower case", func(m *OIDCAuth) { m.CookieName = "__host-app" }, "cookie_name"},
		{"short cookie_secret", func(m *OIDCAuth) { m.CookieSecret = strings.Repeat("x", 31) }, "cookie_secret"},
		{"redirect_uri relative", func(m *OIDCAuth) { m.RedirectURI = "auth/callback" }, "redirect_uri"},
		{"redirect_uri scheme-relative", func(m *OIDCAuth) { m.RedirectURI = "//evil.com/cb" }, "redirect_uri"},
		{"redirect_uri other scheme", func(m *OIDCAuth) { m.RedirectURI = "ftp://app.example.com/cb" }, "redirect_uri"},
		{"redirect_uri javascript", func(m *OIDCAuth) { m.RedirectURI = "javascript:alert(1)" }, "redirect_uri"},
		{"redirect_uri without host", func(m *OIDCAuth) { m.RedirectURI = "https:///cb" }, "redirect_uri"},
		{"redirect_uri path with query", func(m *OIDCAuth) { m.RedirectURI = "/cb?x=1" }, "redirect_uri"},
		{"redirect_uri URL with query", func(m *OIDCAuth) { m.RedirectURI = "https://app.example.com/cb?x=1" }, "redirect_uri"},
		{"redirect_uri with fragment", func(m *OIDCAuth) { m.RedirectURI = "/cb#frag" }, "redirect_uri"},
		{"post_logout_redirect_uri relative", func(m *OIDCAuth) { m.PostLogoutRedirectURI = "bye" }, "post_logout_redirect_uri"},
		{"post_logout_redirect_uri javascript", func(m *OIDCAuth) { m.PostLogoutRedirectURI = "javascript:alert(1)" }, "post_logout_redirect_uri"},
		{"login_path not a path", func(m *OIDCAuth) { m.LoginPath = "login" }, "login_path"},
		{"logout_path not a path", func(m *OIDCAuth) { m.LogoutPath = "logout" }, "logout_path"},
		{"backchannel_logout_path not a path", func(m *OIDCAuth) { m.BackchannelLogoutPath = "bcl" }, "backchannel_logout_path"},
		{"frontchannel_logout_path not a path", func(m *OIDCAuth) { m.FrontchannelLogoutPath = "fcl" }, "frontchannel_logout_path"},
		{"login_path same as callback", func(m *OIDCAuth) { m.LoginPath = "/auth/callback" }, "login_path"},
		{"logout_path same as login_path", func(m *OIDCAuth) { m.LogoutPath = "/auth/login" }, "logout_path"},
		{"backchannel same as logout", func(m *OIDCAuth) { m.BackchannelLogoutPath = "/auth/logout" }, "backchannel_logout_path"},
		{"session_info_path not a path", func(m *OIDCAuth) { m.SessionInfoPath = "me" }, "session_info_path"},
		{"session_info_path same as logout_path", func(m *OIDCAuth) { m.SessionInfoPath = "/auth/logout" }, "session_info_path"},
		{"previous_cookie_secrets without cookie_secret", func(m *OIDCAuth) { m.PreviousCookieSecrets = []string{strings.Repeat("p", 32)} }, "previous_cookie_secrets"},
		{"bearer with an empty audience", func(m *OIDCAuth) { m.Bearer = &BearerConfig{Audiences: []string{""}} }, "bearer"},
		{"frontchannel same as backchannel", func(m *OIDCAuth) { m.FrontchannelLogoutPath = "/auth/backchannel-logout" }, "frontchannel_logout_path"},
		{"absolute redirect_uri clashing with login_path", func(m *OIDCAuth) {
			m.RedirectURI = "https://app.example.com/go"
			m.LoginPath = "/go"
		}, "login_path"},
		{"store not redis", func(m *OIDCAuth) { m.Store = "http://redis:6379" }, "store"},
		{"store without host", func(m *OIDCAuth) { m.Store = "redis:///0" }, "store"},
		{"store unparsable", func(m *OIDCAuth) { m.Store = "redis://%zz" }, "store"},
		{"store bare host", func(m *OIDCAuth) { m.Store = "localhost:6379" }, "store"},
		{"token_auth_method unknown", func(m *OIDCAuth) { m.TokenAuthMethod = "private_key_jwt" }, "token_auth_method"},
		{"require without values", func(m *OIDCAuth) { m.Require = []Rule{{Claim: "email"}} }, "require"},
		{"require without claim", func(m *OIDCAuth) { m.Require = []Rule{{Values: []string{"x"}}} }, "require"},
		{"cookie_name with space", func(m *OIDCAuth) { m.CookieName = "my app" }, "cookie_name"},
		{"cookie_name with semicolon", func(m *OIDCAuth) { m.CookieName = "a;b" }, "cookie_name"},
		{"cookie_name with equals", func(m *OIDCAuth) { m.CookieName = "a=b" }, "cookie_name"},
		{"cookie_name non-ASCII", func(m *OIDCAuth) { m.CookieName = "sitzung_ä" }, "cookie_name"},
		{"negative session_lifetime", func(m *OIDCAuth) { m.SessionLifetime = caddy.Duration(-time.Hour) }, "session_lifetime"},
		{"negative health_probe_interval", func(m *OIDCAuth) { m.HealthProbeInterval = caddy.Duration(-time.Second) }, "health_probe_interval"},
		{"health_probe_interval below 1s", func(m *OIDCAuth) { m.HealthProbeInterval = caddy.Duration(500 * time.Millisecond) }, "health_probe_interval"},
		{"auth_param empty name", func(m *OIDCAuth) { m.AuthParams = map[string]string{"": "x"} }, "auth_param"},
		{"auth_param overriding state", func(m *OIDCAuth) { m.AuthParams = map[string]string{"state": "x"} }, "auth_param"},
		{"auth_param overriding redirect_uri", func(m *OIDCAuth) { m.AuthParams = map[string]string{"redirect_uri": "https://evil.com"} }, "auth_param"},
		{"auth_param overriding code_challenge_method", func(m *OIDCAuth) { m.AuthParams = map[string]string{"code_challenge_method": "plain"} }, "auth_param"},
		{"authorization_endpoint http", func(m *OIDCAuth) { m.AuthorizationEndpoint = "http://idp.example.com/auth" }, "authorization_endpoint"},
		{"token_endpoint relative", func(m *OIDCAuth) { m.TokenEndpoint = "/token" }, "token_endpoint"},
		{"jwks_uri other scheme", func(m *OIDCAuth) { m.JWKSURI = "file:///etc/jwks.json" }, "jwks_uri"},
		{"end_session_endpoint http", func(m *OIDCAuth) { m.EndSessionEndpoint = "http://idp.example.com/logout" }, "end_session_endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validConfig()
			tt.mutate(m)
			err := m.Validate()
			if err == nil {
				t.Fatalf("Validate() succeeded, want an error naming %s", tt.field)
			}
			if !strings.HasPrefix(err.Error(), tt.field+":") {
				t.Errorf("error %q does not start with %q", err, tt.field+":")
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*OIDCAuth)
	}{
		{"minimal", func(*OIDCAuth) {}},
		{"http issuer on 127.0.0.1", func(m *OIDCAuth) { m.Issuer = "http://127.0.0.1:9000" }},
		{"http issuer on 127.1.2.3", func(m *OIDCAuth) { m.Issuer = "http://127.1.2.3" }},
		{"http issuer on [::1]", func(m *OIDCAuth) { m.Issuer = "http://[::1]:9000/realms/x" }},
		{"http issuer on localhost", func(m *OIDCAuth) { m.Issuer = "http://localhost:8080" }},
		{"http issuer on a .localhost name", func(m *OIDCAuth) { m.Issuer = "http://idp.localhost" }},
		{"cookie_secret of 32 bytes", func(m *OIDCAuth) { m.CookieSecret = strings.Repeat("x", 32) }},
		{"absolute https redirect_uri", func(m *OIDCAuth) { m.RedirectURI = "https://app.example.com/cb" }},
		{"absolute http redirect_uri", func(m *OIDCAuth) { m.RedirectURI = "http://app.internal/cb" }},
		{"post_logout_redirect_uri path", func(m *OIDCAuth) { m.PostLogoutRedirectURI = "/bye" }},
		{"post_logout_redirect_uri URL", func(m *OIDCAuth) { m.PostLogoutRedirectURI = "https://www.example.com/" }},
		{"redis store", func(m *OIDCAuth) { m.Store = "redis://localhost:6379/0" }},
		{"rediss store with password", func(m *OIDCAuth) { m.Store = "rediss://:pw@redis.example.com:6380/2" }},
		{"client_secret_basic", func(m *OIDCAuth) { m.TokenAuthMethod = "client_secret_basic" }},
		{"client_secret_post", func(m *OIDCAuth) { m.TokenAuthMethod = "client_secret_post" }},
		{"cookie_name with dash and underscore", func(m *OIDCAuth) { m.CookieName = "My-App_1" }},
		{"require rules", func(m *OIDCAuth) {
			m.Require = []Rule{{Claim: "email", Values: []string{"*@example.com"}}, {Claim: "groups", Values: []string{"a", "b"}}}
		}},
		{"auth_params", func(m *OIDCAuth) { m.AuthParams = map[string]string{"prompt": "login", "organization_id": "org_1"} }},
		{"previous_cookie_secrets with cookie_secret", func(m *OIDCAuth) {
			m.CookieSecret = strings.Repeat("c", 32)
			m.PreviousCookieSecrets = []string{strings.Repeat("p", 32)}
		}},
		{"bearer without audiences", func(m *OIDCAuth) { m.Bearer = &BearerConfig{} }},
		{"health_probe_interval of 1s", func(m *OIDCAuth) { m.HealthProbeInterval = caddy.Duration(time.Second) }},
		{"all endpoints overridden", func(m *OIDCAuth) {
			m.AuthorizationEndpoint = "https://idp.example.com/a"
			m.TokenEndpoint = "https://idp.example.com/t"
			m.JWKSURI = "https://idp.example.com/j"
			m.EndSessionEndpoint = "https://idp.example.com/e"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validConfig()
			tt.mutate(m)
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate(): %v", err)
			}
		})
	}
}

func TestCheckConfigDefaults(t *testing.T) {
	m := validConfig()
	m.Issuer = "https://idp.example.com/tenant/"
	if err := m.configure(); err != nil {
		t.Fatal(err)
	}
	if m.Issuer != "https://idp.example.com/tenant/" {
		t.Errorf("Issuer = %q, want it exactly as configured", m.Issuer)
	}
	for _, c := range []struct{ name, got, want string }{
		{"redirect_uri", m.RedirectURI, "/auth/callback"},
		{"callback path", m.callbackPath, "/auth/callback"},
		{"login_path", m.LoginPath, "/auth/login"},
		{"logout_path", m.LogoutPath, "/auth/logout"},
		{"backchannel_logout_path", m.BackchannelLogoutPath, "/auth/backchannel-logout"},
		{"frontchannel_logout_path", m.FrontchannelLogoutPath, ""}, // off
		{"session_info_path", m.SessionInfoPath, "/auth/session"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if want := []string{"openid", "profile", "email", "offline_access"}; !reflect.DeepEqual(m.Scopes, want) {
		t.Errorf("Scopes = %v, want %v", m.Scopes, want)
	}
	if m.sessionLifetime != 24*time.Hour {
		t.Errorf("sessionLifetime = %v, want 24h", m.sessionLifetime)
	}
	if m.probeInterval != 30*time.Second {
		t.Errorf("probeInterval = %v, want 30s", m.probeInterval)
	}
	if m.redirectURL == nil || m.redirectURL.IsAbs() || m.redirectURL.Path != "/auth/callback" {
		t.Errorf("redirectURL = %v, want the path /auth/callback", m.redirectURL)
	}

	// The defaults must not be shared: changing one config's scopes must
	// not change the next one's.
	m.Scopes[1] = "changed"
	m2 := validConfig()
	if err := m2.configure(); err != nil {
		t.Fatal(err)
	}
	if m2.Scopes[1] != "profile" {
		t.Errorf("default scopes were modified through another config: %v", m2.Scopes)
	}
}

func TestCheckConfigDerived(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*OIDCAuth)
		check  func(*testing.T, *OIDCAuth)
	}{
		{"openid added in front when missing", func(m *OIDCAuth) { m.Scopes = []string{"email", "groups"} }, func(t *testing.T, m *OIDCAuth) {
			if want := []string{"openid", "email", "groups"}; !reflect.DeepEqual(m.Scopes, want) {
				t.Errorf("Scopes = %v, want %v", m.Scopes, want)
			}
		}},
		{"openid kept where it is", func(m *OIDCAuth) { m.Scopes = []string{"email", "openid"} }, func(t *testing.T, m *OIDCAuth) {
			if want := []string{"email", "openid"}; !reflect.DeepEqual(m.Scopes, want) {
				t.Errorf("Scopes = %v, want %v", m.Scopes, want)
			}
		}},
		{"session_lifetime kept", func(m *OIDCAuth) { m.SessionLifetime = caddy.Duration(90 * time.Minute) }, func(t *testing.T, m *OIDCAuth) {
			if m.sessionLifetime != 90*time.Minute {
				t.Errorf("sessionLifetime = %v", m.sessionLifetime)
			}
		}},
		{"absolute redirect_uri gives the callback path", func(m *OIDCAuth) { m.RedirectURI = "https://app.example.com/sso/cb" }, func(t *testing.T, m *OIDCAuth) {
			if m.callbackPath != "/sso/cb" || m.redirectURL.String() != "https://app.example.com/sso/cb" {
				t.Errorf("callbackPath = %q, redirectURL = %v", m.callbackPath, m.redirectURL)
			}
		}},
		{"redirect_uri without a path means /", func(m *OIDCAuth) {
			m.RedirectURI = "https://app.example.com"
			m.LoginPath = "/login"
		}, func(t *testing.T, m *OIDCAuth) {
			if m.callbackPath != "/" {
				t.Errorf("callbackPath = %q, want /", m.callbackPath)
			}
		}},
		{"post_logout_redirect_uri parsed", func(m *OIDCAuth) { m.PostLogoutRedirectURI = "/bye" }, func(t *testing.T, m *OIDCAuth) {
			if m.postLogoutURL == nil || m.postLogoutURL.Path != "/bye" {
				t.Errorf("postLogoutURL = %v", m.postLogoutURL)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validConfig()
			tt.mutate(m)
			if err := m.configure(); err != nil {
				t.Fatal(err)
			}
			tt.check(t, m)
		})
	}
}

// Provision and Validate both check the settings; running it twice must give
// the same configuration.
func TestCheckConfigIdempotent(t *testing.T) {
	m := validConfig()
	m.Scopes = []string{"email"}
	m.Issuer = "https://idp.example.com/"
	if err := m.configure(); err != nil {
		t.Fatal(err)
	}
	first := *m
	first.Scopes = append([]string(nil), m.Scopes...)
	if err := m.configure(); err != nil {
		t.Fatalf("second configure: %v", err)
	}
	if !reflect.DeepEqual(m.Scopes, first.Scopes) || m.Issuer != first.Issuer || m.callbackPath != first.callbackPath {
		t.Errorf("second run changed the config: scopes %v -> %v, issuer %q -> %q", first.Scopes, m.Scopes, first.Issuer, m.Issuer)
	}
}

// JSON configurations use the snake_case names of the subdirectives and
// get the same checks.
func TestJSONConfig(t *testing.T) {
	raw := `{
		"issuer": "https://idp.example.com",
		"client_id": "app",
		"client_secret": "s",
		"redirect_uri": "/cb",
		"scopes": ["openid", "email"],
		"auth_param": {"prompt": "login"},
		"login_path": "/in",
		"logout_path": "/out",
		"post_logout_redirect_uri": "/bye",
		"backchannel_logout_path": "/bcl",
		"frontchannel_logout_path": "/fcl",
		"cookie_secret": "0123456789abcdef0123456789abcdef",
		"previous_cookie_secrets": ["fedcba9876543210fedcba9876543210"],
		"cookie_name": "c",
		"session_lifetime": "2h",
		"store": "redis://r:6379/0",
		"require": [{"claim": "email", "values": ["*@example.com"]}],
		"authorization_endpoint": "https://idp.example.com/a",
		"token_endpoint": "https://idp.example.com/t",
		"jwks_uri": "https://idp.example.com/j",
		"end_session_endpoint": "https://idp.example.com/e",
		"bearer": {"audiences": ["api://x"]},
		"pass_access_token": true,
		"session_info_path": "/me",
		"token_auth_method": "client_secret_post"
	}`
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	var m OIDCAuth
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	if m.SessionLifetime != caddy.Duration(2*time.Hour) || m.AuthParams["prompt"] != "login" ||
		m.FrontchannelLogoutPath != "/fcl" || m.TokenAuthMethod != "client_secret_post" || len(m.Require) != 1 {
		t.Errorf("decoded %+v", m)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}

	// The same config parsed from a Caddyfile marshals to the same JSON.
	fromFile, err := parseOIDCAuth(`oidc_auth {
		issuer https://idp.example.com
		client_id app
		client_secret s
		redirect_uri /cb
		scopes openid email
		auth_param prompt login
		login_path /in
		logout_path /out
		post_logout_redirect_uri /bye
		backchannel_logout_path /bcl
		frontchannel_logout_path /fcl
		cookie_secret 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210
		cookie_name c
		session_lifetime 2h
		store redis://r:6379/0
		require email *@example.com
		authorization_endpoint https://idp.example.com/a
		token_endpoint https://idp.example.com/t
		jwks_uri https://idp.example.com/j
		end_session_endpoint https://idp.example.com/e
		bearer api://x
		pass_access_token
		session_info_path /me
		token_auth_method client_secret_post
	}`)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON OIDCAuth
	if err := json.Unmarshal([]byte(raw), &fromJSON); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(fromFile)
	b, _ := json.Marshal(fromJSON)
	if string(a) != string(b) {
		t.Errorf("Caddyfile and JSON differ:\n%s\n%s", a, b)
	}
}

func TestExpandSecret(t *testing.T) {
	t.Setenv("OIDCAUTH_TEST_SECRET", "s3cret")
	t.Setenv("OIDCAUTH_TEST_EMPTY", "")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want, errField string
	}{
		{"literal", "plain", "plain", ""},
		{"empty stays empty", "", "", ""},
		{"env", "{env.OIDCAUTH_TEST_SECRET}", "s3cret", ""},
		{"env inside text", "pre-{env.OIDCAUTH_TEST_SECRET}-post", "pre-s3cret-post", ""},
		{"file, trailing newline trimmed", "{file." + file + "}", "from-file", ""},
		{"unset env", "{env.OIDCAUTH_TEST_UNSET_VARIABLE}", "", "client_secret"},
		{"empty env", "{env.OIDCAUTH_TEST_EMPTY}", "", "client_secret"},
		{"unset env inside text", "pre-{env.OIDCAUTH_TEST_UNSET_VARIABLE}", "", "client_secret"},
		{"unknown placeholder", "ab{nope}cd", "", "client_secret"},
		{"missing file", "{file." + filepath.Join(t.TempDir(), "nope") + "}", "", "client_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expandSecret(caddy.NewReplacer(), "client_secret", tt.in)
			if tt.errField != "" {
				if err == nil {
					t.Fatalf("expandSecret(%q) = %q, want an error", tt.in, got)
				}
				if !strings.HasPrefix(err.Error(), tt.errField+":") {
					t.Errorf("error %q does not start with %q", err, tt.errField+":")
				}
				return
			}
			if err != nil {
				t.Fatalf("expandSecret(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("expandSecret(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if _, err := expandSecret(caddy.NewReplacer(), "cookie_secret", "{env.OIDCAUTH_TEST_UNSET_VARIABLE}"); err == nil || !strings.HasPrefix(err.Error(), "cookie_secret:") {
		t.Errorf("cookie_secret error = %v, want it to name cookie_secret", err)
	}
}

func TestDefaultCookieName(t *testing.T) {
	a := defaultCookieName("https://idp.example.com", "app1")
	if a != defaultCookieName("https://idp.example.com", "app1") {
		t.Error("default cookie name is not stable")
	}
	if !validCookieName(a) || !strings.HasPrefix(a, "oidc_") {
		t.Errorf("default cookie name %q is not a valid oidc_ name", a)
	}
	for _, other := range []string{
		defaultCookieName("https://idp.example.com", "app2"),
		defaultCookieName("https://other.example.com", "app1"),
	} {
		if other == a {
			t.Errorf("apps with another client_id or issuer share the cookie name %q", a)
		}
	}
}

// An unset variable inside a longer value must fail as loudly as one that
// makes up the whole value: "pre-{env.UNSET}" is not the secret meant.
func TestExpandSecretUnsetInsideText(t *testing.T) {
	for _, in := range []string{"pre-{env.OIDCAUTH_TEST_UNSET_VARIABLE}", "{env.OIDCAUTH_TEST_UNSET_VARIABLE}-post"} {
		got, err := expandSecret(caddy.NewReplacer(), "client_secret", in)
		if err == nil || !strings.HasPrefix(err.Error(), "client_secret:") {
			t.Errorf("expandSecret(%q) = %q, %v; want an error naming client_secret", in, got, err)
		}
	}
}

// path_prefix moves every path of the handler at once; a path set on its
// own stays where it is.
func TestPathPrefix(t *testing.T) {
	m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "s", PathPrefix: "/sso", LogoutPath: "/bye"}
	if err := m.configure(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"redirect_uri": m.RedirectURI, "login_path": m.LoginPath, "logout_path": m.LogoutPath,
		"backchannel_logout_path": m.BackchannelLogoutPath, "session_info_path": m.SessionInfoPath,
		"webhook_path": m.WebhookPath, "initiate_login_path": m.InitiateLoginPath,
	}
	want := map[string]string{
		"redirect_uri": "/sso/callback", "login_path": "/sso/login", "logout_path": "/bye",
		"backchannel_logout_path": "/sso/backchannel-logout", "session_info_path": "/sso/session",
		"webhook_path": "/sso/webhook", "initiate_login_path": "/sso/initiate",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"sso", "/sso/", "/s?x", "/a*"} {
		m := &OIDCAuth{Issuer: "https://idp.example.com", ClientID: "a", ClientSecret: "s", PathPrefix: bad}
		if err := m.configure(); err == nil || !strings.HasPrefix(err.Error(), "path_prefix:") {
			t.Errorf("path_prefix %q: got %v, want an error naming path_prefix", bad, err)
		}
	}
}

// Validate only checks: the defaults are filled in by Provision, and a
// configuration that Validate accepts or refuses is left as it was.
func TestValidateChangesNothing(t *testing.T) {
	m := validConfig()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.LoginPath != "" || m.RedirectURI != "" || m.Scopes != nil || m.callbackPath != "" || m.sessionLifetime != 0 {
		t.Errorf("Validate filled in defaults: %+v", m)
	}
	// The defaults still take part in the checks: a path that collides
	// with a default one is refused by Validate alone.
	m.SessionInfoPath = "/auth/login"
	if err := m.Validate(); err == nil || !strings.HasPrefix(err.Error(), "session_info_path:") {
		t.Errorf("Validate() = %v, want an error naming session_info_path", err)
	}
}
