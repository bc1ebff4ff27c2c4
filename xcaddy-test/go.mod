module github.com/caddy-oidc-auth/oidcauth/xcaddy-test

go 1.26.0

require (
	github.com/caddy-oidc-auth/oidcauth v0.0.0
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/go-jose/go-jose/v4 v4.1.9
)

require github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect

// The end-to-end rig tests this checkout.
replace github.com/caddy-oidc-auth/oidcauth => ../
