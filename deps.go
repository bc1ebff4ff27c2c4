package oidcauth
import (
	_ "github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "golang.org/x/oauth2"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/chromedp/chromedp"
)
