package oidcauth

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oidc_auth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("oidc_auth", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(OIDCAuth)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oidc_auth [<matcher>] {
//		issuer          <url>
//		client_id       <id>
//		client_secret   <secret>
//		path_prefix     <path>
//		redirect_uri    <path|url>
//		scopes          <scope...>
//		auth_param      <name> <value>
//		login_path      <path>
//		logout_path     <path>
//		post_logout_redirect_uri <path|url>
//		backchannel_logout_path  <path>
//		frontchannel_logout_path <path>   # off unless set
//		cookie_secret   <secret> [<previous secret>...]
//		cookie_name     <name>
//		session_lifetime <duration>
//		idle_timeout    <duration>
//		store           <redis-url> {   # redis://, rediss://, Sentinel and Cluster forms
//			tls_ca          <file>
//			tls_cert        <file>
//			tls_key         <file>
//			tls_server_name <name>
//			dial_timeout    <duration>
//			read_timeout    <duration>
//			write_timeout   <duration>
//			key_prefix      <prefix>
//		}
//		require         <claim> <value...>   # also: require scope <scope...>, require acr <value...>
//		max_age         <duration>
//		allow_unverified_email
//		access_token_audiences <audience...>
//		management_api  [<base_url>] {
//			token_url    <url>
//			token_header <header name>
//			cache_ttl    <duration>
//		}
//		bearer          [<audience>...] {
//			accept_access_token_audiences
//		}
//		protected_resource {
//			resource                 <url>
//			authorization_servers    <url...>
//			scopes_supported         <scope...>
//			bearer_methods_supported header
//			resource_name            <name>
//			resource_documentation   <url>
//		}
//		dpop            [required]
//		pass_access_token
//		upstream_jwt {
//			header      <name>
//			audience    <aud>
//			lifetime    <duration>
//			claims      <claim...>
//			signing_key <pem> [<published pem>...]
//			key_rotation <duration>
//		}
//		jwks_path       <path>
//		allow_shared_cache
//		session_info_path <path>
//		initiate_login_path <path>
//		webhook_secret  <whsec_...>
//		webhook_path    <path>
//		authorization_endpoint <url>
//		token_endpoint         <url>
//		jwks_uri               <url>
//		end_session_endpoint   <url>
//		token_auth_method      client_secret_basic|client_secret_post
//		health_probe_interval  <duration>
//	}
//
// Only the syntax is checked here; Validate checks the meaning, so JSON
// configurations get the same errors.
func (m *OIDCAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("oidc_auth: takes no arguments besides a matcher, got %q", d.Val())
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		argErr := func() error { return d.Errf("%s: wrong number of arguments", name) }
		if seen[name] && name != "auth_param" && name != "require" {
			return d.Errf("%s: given more than once", name)
		}
		seen[name] = true

		single := map[string]*string{
			"issuer":                   &m.Issuer,
			"client_id":                &m.ClientID,
			"client_secret":            &m.ClientSecret,
			"redirect_uri":             &m.RedirectURI,
			"path_prefix":              &m.PathPrefix,
			"login_path":               &m.LoginPath,
			"logout_path":              &m.LogoutPath,
			"post_logout_redirect_uri": &m.PostLogoutRedirectURI,
			"backchannel_logout_path":  &m.BackchannelLogoutPath,
			"frontchannel_logout_path": &m.FrontchannelLogoutPath,
			"session_info_path":        &m.SessionInfoPath,
			"initiate_login_path":      &m.InitiateLoginPath,
			"webhook_path":             &m.WebhookPath,
			"webhook_secret":           &m.WebhookSecret,
			"cookie_name":              &m.CookieName,
			"authorization_endpoint":   &m.AuthorizationEndpoint,
			"token_endpoint":           &m.TokenEndpoint,
			"jwks_uri":                 &m.JWKSURI,
			"end_session_endpoint":     &m.EndSessionEndpoint,
			"token_auth_method":        &m.TokenAuthMethod,
			"jwks_path":                &m.JWKSPath,
		}
		if dst, ok := single[name]; ok {
			if !d.NextArg() {
				return argErr()
			}
			*dst = d.Val()
			if d.NextArg() {
				return argErr()
			}
			continue
		}

		switch name {
		case "cookie_secret":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return argErr()
			}
			m.CookieSecret, m.PreviousCookieSecrets = args[0], args[1:]
		case "scopes":
			m.Scopes = d.RemainingArgs()
			if len(m.Scopes) == 0 {
				return argErr()
			}
		case "auth_param":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("auth_param: expected <name> <value>, got %d arguments", len(args))
			}
			if m.AuthParams == nil {
				m.AuthParams = map[string]string{}
			}
			if _, dup := m.AuthParams[args[0]]; dup {
				return d.Errf("auth_param: %q given more than once", args[0])
			}
			m.AuthParams[args[0]] = args[1]
		case "session_lifetime", "health_probe_interval", "idle_timeout", "max_age":
			if !d.NextArg() {
				return argErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("%s: %v", name, err)
			}
			switch name {
			case "session_lifetime":
				m.SessionLifetime = caddy.Duration(dur)
			case "idle_timeout":
				m.IdleTimeout = caddy.Duration(dur)
			case "max_age":
				m.MaxAge = caddy.Duration(dur)
			default:
				m.HealthProbeInterval = caddy.Duration(dur)
			}
			if d.NextArg() {
				return argErr()
			}
		case "management_api":
			mc := &ManagementAPI{}
			if d.NextArg() {
				mc.BaseURL = d.Val()
			}
			if d.NextArg() {
				return argErr()
			}
			for d.NextBlock(1) {
				opt := d.Val()
				var cacheTTL string
				dst := map[string]*string{"token_url": &mc.TokenURL, "token_header": &mc.TokenHeader, "cache_ttl": &cacheTTL}[opt]
				if dst == nil {
					return d.Errf("management_api: unrecognized option %q", opt)
				}
				if !d.NextArg() {
					return d.Errf("management_api: %s needs a value", opt)
				}
				*dst = d.Val()
				if opt == "cache_ttl" {
					ttl, err := caddy.ParseDuration(cacheTTL)
					if err != nil {
						return d.Errf("management_api: cache_ttl %q is not a duration: %v", cacheTTL, err)
					}
					mc.CacheTTL = caddy.Duration(ttl)
				}
				if d.NextArg() {
					return d.Errf("management_api: %s takes one value", opt)
				}
			}
			m.ManagementAPI = mc
		case "store":
			if err := unmarshalStore(d, m); err != nil {
				return err
			}
		case "upstream_jwt":
			if d.NextArg() {
				return argErr()
			}
			u, err := parseUpstreamJWT(d)
			if err != nil {
				return err
			}
			m.UpstreamJWT = u
		case "access_token_audiences":
			m.AccessTokenAudiences = d.RemainingArgs()
			if len(m.AccessTokenAudiences) == 0 {
				return argErr()
			}
		case "bearer":
			m.Bearer = &BearerConfig{Audiences: d.RemainingArgs()}
			for d.NextBlock(1) {
				if d.Val() != "accept_access_token_audiences" {
					return d.Errf("bearer: unrecognized option %q", d.Val())
				}
				if d.NextArg() {
					return d.Errf("bearer: accept_access_token_audiences takes no value")
				}
				m.Bearer.AcceptAccessTokenAudiences = true
			}
		case "dpop":
			m.DPoP = &DPoPConfig{}
			switch args := d.RemainingArgs(); {
			case len(args) == 1 && args[0] == "required":
				m.DPoP.Required = true
			case len(args) > 0:
				return d.Errf("dpop: expected nothing or required, got %q", args)
			}
		case "protected_resource":
			pr, err := unmarshalProtectedResource(d)
			if err != nil {
				return err
			}
			m.ProtectedResource = pr
		case "pass_access_token":
			if d.NextArg() {
				return argErr()
			}
			m.PassAccessToken = true
		case "allow_unverified_email":
			if d.NextArg() {
				return argErr()
			}
			m.AllowUnverifiedEmail = true
		case "allow_shared_cache":
			if d.NextArg() {
				return argErr()
			}
			m.AllowSharedCache = true
		case "require":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("require: expected <claim> <value...>")
			}
			m.Require = append(m.Require, Rule{Claim: args[0], Values: args[1:]})
		default:
			return d.Errf("unrecognized subdirective %q", name)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*OIDCAuth)(nil)
