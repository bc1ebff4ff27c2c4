package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
)

// init registers `caddy oidc-auth check`, which checks the identity
// provider of every oidc_auth handler in a config from the command line.
func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "oidc-auth",
		Usage: "check --config <path> [--adapter <name>] | sessions list|revoke ...",
		Short: "Checks the identity providers of every oidc_auth handler in a config",
		Long: `
Finds every oidc_auth handler in the config, then for each: validates its
settings, discovers the provider, fetches its JWKS, and authenticates the
client at the token endpoint with a refresh grant for a made-up token (an
"invalid_grant" answer proves the client ID and secret are right). Prints
what it found in plain words and exits 1 if anything is wrong.`,
		CobraFunc: func(cmd *cobra.Command) {
			check := &cobra.Command{
				Use:   "check --config <path> [--adapter <name>]",
				Short: "Checks discovery, JWKS and client authentication",
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdCheck),
			}
			check.Flags().StringP("config", "c", "", "Configuration file (required)")
			check.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.AddCommand(check, sessionsCommand())
		},
	})
}

// cmdCheck implements `caddy oidc-auth check`.
func cmdCheck(fl caddycmd.Flags) (int, error) {
	configFile := fl.String("config")
	if configFile == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--config is required")
	}
	cfg, _, _, err := caddycmd.LoadConfig(configFile, fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var doc any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var handlers []json.RawMessage
	findHandlers(doc, &handlers)
	if len(handlers) == 0 {
		return 1, errors.New("no oidc_auth handler in this config")
	}
	problems := 0
	for i, raw := range handlers {
		var m OIDCAuth
		if err := json.Unmarshal(raw, &m); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		fmt.Printf("oidc_auth #%d: issuer %s, client_id %s\n", i+1, m.Issuer, m.ClientID)
		for _, line := range selfCheck(context.Background(), &m) {
			fmt.Println("  " + line.String())
			if !line.ok {
				problems++
			}
		}
	}
	if problems > 0 {
		// Caddy's command wrapper exits non-zero only on an error (or a
		// status above 1).
		return 1, fmt.Errorf("%d problem(s) found", problems)
	}
	return 0, nil
}

func findHandlers(v any, out *[]json.RawMessage) {
	switch t := v.(type) {
	case map[string]any:
		if t["handler"] == "oidc_auth" {
			raw, _ := json.Marshal(t)
			*out = append(*out, raw)
			return
		}
		for _, e := range t {
			findHandlers(e, out)
		}
	case []any:
		for _, e := range t {
			findHandlers(e, out)
		}
	}
}

type checkLine struct {
	ok   bool
	text string
}

func (c checkLine) String() string {
	if c.ok {
		return "ok:      " + c.text
	}
	return "PROBLEM: " + c.text
}

// selfCheck validates the settings and talks to the provider the way the
// handler will: discovery, JWKS, and client authentication.
func selfCheck(ctx context.Context, m *OIDCAuth) []checkLine {
	var lines []checkLine
	add := func(ok bool, format string, args ...any) {
		lines = append(lines, checkLine{ok, fmt.Sprintf(format, args...)})
	}
	repl := caddy.NewReplacer()
	var err error
	if m.ClientSecret, err = expandSecret(repl, "client_secret", m.ClientSecret); err != nil {
		add(false, "%v", err)
		return lines
	}
	if m.CookieSecret, err = expandSecret(repl, "cookie_secret", m.CookieSecret); err != nil {
		add(false, "%v", err)
		return lines
	}
	if err := m.configure(); err != nil {
		add(false, "configuration: %v", err)
		return lines
	}
	add(true, "configuration is valid")
	m.now = time.Now
	m.provider = newProvider(m.Issuer, endpoints{
		Authorization: m.AuthorizationEndpoint, Token: m.TokenEndpoint,
		JWKS: m.JWKSURI, EndSession: m.EndSessionEndpoint,
	}, time.Now, nil)
	m.wire()
	// Not pooled: stop its key set's refresher when the check is done.
	defer m.provider.Destruct() //nolint:errcheck
	meta, err := m.provider.Metadata(ctx)
	if err != nil {
		add(false, "discovery: %v", err)
		return lines
	}
	add(true, "discovered: authorize %s, token %s", meta.Authorization, meta.Token)
	if meta.EndSession == "" {
		add(true, "no end_session_endpoint: logout will be local only")
	} else {
		add(true, "end_session_endpoint %s", meta.EndSession)
	}
	if err := m.provider.Keys().Refetch(ctx); err != nil {
		add(false, "JWKS at %s: %v", meta.JWKS, err)
	} else {
		n, _ := m.provider.Keys().Size()
		add(true, "JWKS at %s has %d usable key(s); ID tokens signed with %v are accepted", meta.JWKS, n, meta.Algs)
	}

	// A refresh grant with a made-up token: a provider that authenticated
	// the client answers invalid_grant; a wrong secret gets invalid_client.
	cctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, m.provider.HTTPClient()), idpTimeout)
	defer cancel()
	_, err = m.client.OAuthConfig(meta, "").TokenSource(cctx, &oauth2.Token{RefreshToken: "oidc-auth-check-" + randomString(8), Expiry: time.Unix(1, 0)}).Token()
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
		add(true, "client authentication at the token endpoint works")
	case errors.As(err, &re) && (re.ErrorCode == "invalid_client" || re.ErrorCode == "unauthorized_client"):
		add(false, "the token endpoint refused the client: %s (check client_id, client_secret and token_auth_method)", oidc.DescribeRetrieveError(re))
	case err != nil:
		add(false, "token endpoint: %s", oidc.DescribeTokenError(err))
	default:
		add(false, "token endpoint accepted a made-up refresh token")
	}
	return lines
}
