package oidcauth

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func parseOIDCAuth(input string) (*OIDCAuth, error) {
	m := new(OIDCAuth)
	err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return m, err
}

func TestUnmarshalCaddyfileFields(t *testing.T) {
	m, err := parseOIDCAuth(`oidc_auth {
		issuer https://idp.example.com
		client_id app-id
		client_secret {env.SECRET}
		redirect_uri https://app.example.com/cb
		scopes openid email groups
		auth_param prompt login
		auth_param organization_id org_1
		login_path /sso/login
		logout_path /sso/logout
		post_logout_redirect_uri /bye
		backchannel_logout_path /sso/bcl
		frontchannel_logout_path /sso/fcl
		cookie_secret 0123456789abcdef0123456789abcdef older-secret-0123456789abcdef012345
		cookie_name my_app
		session_lifetime 90m
		store redis://localhost:6379/1
		require email *@example.com
		require groups admin staff
		bearer api://orders api://billing
		pass_access_token
		session_info_path /sso/me
		authorization_endpoint https://idp.example.com/auth
		token_endpoint https://idp.example.com/token
		jwks_uri https://idp.example.com/jwks
		end_session_endpoint https://idp.example.com/end
		token_auth_method client_secret_post
		health_probe_interval 10s
	}`)
	if err != nil {
		t.Fatalf("UnmarshalCaddyfile: %v", err)
	}
	want := &OIDCAuth{
		Issuer:                 "https://idp.example.com",
		ClientID:               "app-id",
		ClientSecret:           "{env.SECRET}",
		RedirectURI:            "https://app.example.com/cb",
		Scopes:                 []string{"openid", "email", "groups"},
		AuthParams:             map[string]string{"prompt": "login", "organization_id": "org_1"},
		LoginPath:              "/sso/login",
		LogoutPath:             "/sso/logout",
		PostLogoutRedirectURI:  "/bye",
		BackchannelLogoutPath:  "/sso/bcl",
		FrontchannelLogoutPath: "/sso/fcl",
		CookieSecret:           "0123456789abcdef0123456789abcdef",
		PreviousCookieSecrets:  []string{"older-secret-0123456789abcdef012345"},
		CookieName:             "my_app",
		SessionLifetime:        caddy.Duration(90 * time.Minute),
		Store:                  "redis://localhost:6379/1",
		Require: []Rule{
			{Claim: "email", Values: []string{"*@example.com"}},
			{Claim: "groups", Values: []string{"admin", "staff"}},
		},
		Bearer:                &BearerConfig{Audiences: []string{"api://orders", "api://billing"}},
		PassAccessToken:       true,
		SessionInfoPath:       "/sso/me",
		AuthorizationEndpoint: "https://idp.example.com/auth",
		TokenEndpoint:         "https://idp.example.com/token",
		JWKSURI:               "https://idp.example.com/jwks",
		EndSessionEndpoint:    "https://idp.example.com/end",
		TokenAuthMethod:       "client_secret_post",
		HealthProbeInterval:   caddy.Duration(10 * time.Second),
	}
	got, _ := json.Marshal(m)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("parsed config differs\n got: %s\nwant: %s", got, exp)
	}
}

func TestUnmarshalCaddyfileEachSubdirective(t *testing.T) {
	tests := []struct {
		line  string
		check func(*OIDCAuth) bool
	}{
		{"issuer https://i.example", func(m *OIDCAuth) bool { return m.Issuer == "https://i.example" }},
		{"client_id c", func(m *OIDCAuth) bool { return m.ClientID == "c" }},
		{"client_secret s", func(m *OIDCAuth) bool { return m.ClientSecret == "s" }},
		{"redirect_uri /cb", func(m *OIDCAuth) bool { return m.RedirectURI == "/cb" }},
		{"scopes openid", func(m *OIDCAuth) bool { return reflect.DeepEqual(m.Scopes, []string{"openid"}) }},
		{"auth_param a b", func(m *OIDCAuth) bool { return m.AuthParams["a"] == "b" && len(m.AuthParams) == 1 }},
		{"login_path /l", func(m *OIDCAuth) bool { return m.LoginPath == "/l" }},
		{"logout_path /o", func(m *OIDCAuth) bool { return m.LogoutPath == "/o" }},
		{"post_logout_redirect_uri /p", func(m *OIDCAuth) bool { return m.PostLogoutRedirectURI == "/p" }},
		{"backchannel_logout_path /b", func(m *OIDCAuth) bool { return m.BackchannelLogoutPath == "/b" }},
		{"frontchannel_logout_path /f", func(m *OIDCAuth) bool { return m.FrontchannelLogoutPath == "/f" }},
		{"cookie_secret x", func(m *OIDCAuth) bool { return m.CookieSecret == "x" && len(m.PreviousCookieSecrets) == 0 }},
		{"cookie_secret x y z", func(m *OIDCAuth) bool {
			return m.CookieSecret == "x" && reflect.DeepEqual(m.PreviousCookieSecrets, []string{"y", "z"})
		}},
		{"bearer", func(m *OIDCAuth) bool { return m.Bearer != nil && len(m.Bearer.Audiences) == 0 }},
		{"bearer a b", func(m *OIDCAuth) bool {
			return m.Bearer != nil && reflect.DeepEqual(m.Bearer.Audiences, []string{"a", "b"})
		}},
		{"pass_access_token", func(m *OIDCAuth) bool { return m.PassAccessToken }},
		{"allow_unverified_email", func(m *OIDCAuth) bool { return m.AllowUnverifiedEmail }},
		{"allow_shared_cache", func(m *OIDCAuth) bool { return m.AllowSharedCache }},
		{"bearer a {\naccept_access_token_audiences\n}", func(m *OIDCAuth) bool {
			return m.Bearer != nil && m.Bearer.AcceptAccessTokenAudiences && reflect.DeepEqual(m.Bearer.Audiences, []string{"a"})
		}},
		{"session_info_path /me", func(m *OIDCAuth) bool { return m.SessionInfoPath == "/me" }},
		{"cookie_name n", func(m *OIDCAuth) bool { return m.CookieName == "n" }},
		{"session_lifetime 2h", func(m *OIDCAuth) bool { return m.SessionLifetime == caddy.Duration(2*time.Hour) }},
		{"session_lifetime 1d", func(m *OIDCAuth) bool { return m.SessionLifetime == caddy.Duration(24*time.Hour) }},
		{"store redis://r:1/0", func(m *OIDCAuth) bool { return m.Store == "redis://r:1/0" }},
		{"require role admin", func(m *OIDCAuth) bool {
			return reflect.DeepEqual(m.Require, []Rule{{Claim: "role", Values: []string{"admin"}}})
		}},
		{"authorization_endpoint https://a", func(m *OIDCAuth) bool { return m.AuthorizationEndpoint == "https://a" }},
		{"token_endpoint https://t", func(m *OIDCAuth) bool { return m.TokenEndpoint == "https://t" }},
		{"jwks_uri https://j", func(m *OIDCAuth) bool { return m.JWKSURI == "https://j" }},
		{"end_session_endpoint https://e", func(m *OIDCAuth) bool { return m.EndSessionEndpoint == "https://e" }},
		{"token_auth_method client_secret_basic", func(m *OIDCAuth) bool { return m.TokenAuthMethod == "client_secret_basic" }},
		{"health_probe_interval 5s", func(m *OIDCAuth) bool { return m.HealthProbeInterval == caddy.Duration(5*time.Second) }},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			m, err := parseOIDCAuth("oidc_auth {\n" + tt.line + "\n}")
			if err != nil {
				t.Fatalf("UnmarshalCaddyfile(%q): %v", tt.line, err)
			}
			if !tt.check(m) {
				t.Errorf("%q did not land in its field: %+v", tt.line, m)
			}
		})
	}
}

func TestUnmarshalCaddyfileRepeatable(t *testing.T) {
	m, err := parseOIDCAuth(`oidc_auth {
		auth_param prompt consent
		require email *@example.com
		auth_param login_hint bob
		require groups a b c
		auth_param acr_values urn:mfa
		require email_verified true
	}`)
	if err != nil {
		t.Fatal(err)
	}
	wantParams := map[string]string{"prompt": "consent", "login_hint": "bob", "acr_values": "urn:mfa"}
	if !reflect.DeepEqual(m.AuthParams, wantParams) {
		t.Errorf("AuthParams = %v, want %v", m.AuthParams, wantParams)
	}
	wantRules := []Rule{
		{Claim: "email", Values: []string{"*@example.com"}},
		{Claim: "groups", Values: []string{"a", "b", "c"}},
		{Claim: "email_verified", Values: []string{"true"}},
	}
	if !reflect.DeepEqual(m.Require, wantRules) {
		t.Errorf("Require = %v, want %v (in order)", m.Require, wantRules)
	}
}

func TestUnmarshalCaddyfileEmptyBlock(t *testing.T) {
	m, err := parseOIDCAuth("oidc_auth")
	if err != nil {
		t.Fatalf("no block: %v", err)
	}
	if !reflect.DeepEqual(m, new(OIDCAuth)) {
		t.Errorf("no block gave %+v", m)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	single := []string{
		"issuer", "client_id", "client_secret", "redirect_uri", "login_path",
		"logout_path", "post_logout_redirect_uri", "backchannel_logout_path", "frontchannel_logout_path",
		"session_info_path", "cookie_name", "store", "authorization_endpoint",
		"token_endpoint", "jwks_uri", "end_session_endpoint", "token_auth_method",
	}
	type errCase struct {
		name, input, want string
	}
	var tests []errCase
	for _, name := range single {
		tests = append(tests,
			errCase{name + " duplicate", "oidc_auth {\n" + name + " a\n" + name + " b\n}", name + ": given more than once"},
			errCase{name + " missing arg", "oidc_auth {\n" + name + "\n}", name + ":"},
			errCase{name + " extra arg", "oidc_auth {\n" + name + " a b\n}", name + ":"},
		)
	}
	tests = append(tests, []errCase{
		{"cookie_secret duplicate", "oidc_auth {\ncookie_secret a\ncookie_secret b\n}", "cookie_secret: given more than once"},
		{"cookie_secret missing arg", "oidc_auth {\ncookie_secret\n}", "cookie_secret:"},
		{"bearer duplicate", "oidc_auth {\nbearer\nbearer a\n}", "bearer: given more than once"},
		{"pass_access_token with an argument", "oidc_auth {\npass_access_token yes\n}", "pass_access_token:"},
		{"pass_access_token duplicate", "oidc_auth {\npass_access_token\npass_access_token\n}", "pass_access_token: given more than once"},
		{"scopes duplicate", "oidc_auth {\nscopes openid\nscopes email\n}", "scopes: given more than once"},
		{"scopes missing arg", "oidc_auth {\nscopes\n}", "scopes:"},
		{"session_lifetime duplicate", "oidc_auth {\nsession_lifetime 1h\nsession_lifetime 2h\n}", "session_lifetime: given more than once"},
		{"session_lifetime missing arg", "oidc_auth {\nsession_lifetime\n}", "session_lifetime:"},
		{"session_lifetime extra arg", "oidc_auth {\nsession_lifetime 1h 2h\n}", "session_lifetime:"},
		{"session_lifetime bad", "oidc_auth {\nsession_lifetime forever\n}", "session_lifetime:"},
		{"session_lifetime no unit", "oidc_auth {\nsession_lifetime 3600\n}", "session_lifetime:"},
		{"health_probe_interval duplicate", "oidc_auth {\nhealth_probe_interval 1m\nhealth_probe_interval 2m\n}", "health_probe_interval: given more than once"},
		{"health_probe_interval missing arg", "oidc_auth {\nhealth_probe_interval\n}", "health_probe_interval:"},
		{"health_probe_interval extra arg", "oidc_auth {\nhealth_probe_interval 1m 2m\n}", "health_probe_interval:"},
		{"health_probe_interval bad", "oidc_auth {\nhealth_probe_interval often\n}", "health_probe_interval:"},
		{"auth_param one arg", "oidc_auth {\nauth_param prompt\n}", "auth_param:"},
		{"auth_param three args", "oidc_auth {\nauth_param prompt login now\n}", "auth_param:"},
		{"auth_param no args", "oidc_auth {\nauth_param\n}", "auth_param:"},
		{"auth_param same name twice", "oidc_auth {\nauth_param prompt login\nauth_param prompt none\n}", `auth_param: "prompt" given more than once`},
		{"require claim only", "oidc_auth {\nrequire email\n}", "require:"},
		{"bearer unknown option", "oidc_auth {\nbearer {\nfoo\n}\n}", "bearer:"},
		{"bearer option with a value", "oidc_auth {\nbearer {\naccept_access_token_audiences yes\n}\n}", "bearer:"},
		{"require no args", "oidc_auth {\nrequire\n}", "require:"},
		{"unknown subdirective", "oidc_auth {\nclient_sekret x\n}", `unrecognized subdirective "client_sekret"`},
		{"argument on directive", "oidc_auth https://idp.example.com {\n}", "oidc_auth:"},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseOIDCAuth(tt.input)
			if err == nil {
				t.Fatalf("UnmarshalCaddyfile(%q) succeeded, want an error containing %q", tt.input, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestUnmarshalCaddyfileExtraArgNamesSubdirective: the contract says a bad
// configuration fails with a message naming the subdirective.
func TestUnmarshalCaddyfileExtraArgNamesSubdirective(t *testing.T) {
	for _, name := range []string{"issuer", "client_id", "cookie_name", "session_lifetime"} {
		t.Run(name, func(t *testing.T) {
			arg := "a"
			if name == "session_lifetime" {
				arg = "1h"
			}
			_, err := parseOIDCAuth("oidc_auth {\n" + name + " " + arg + " b\n}")
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("error %v does not name %s", err, name)
			}
		})
	}
}
