module github.com/caddy-oidc-auth/oidcauth/xcaddy-test

go 1.26.0

require (
	github.com/caddy-oidc-auth/oidcauth v0.0.0
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/go-jose/go-jose/v4 v4.1.9
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/redis/go-redis/v9 v9.17.2 // indirect
)

// The end-to-end rig tests this checkout.
replace github.com/caddy-oidc-auth/oidcauth => ../
