module github.com/caddy-oidc-auth/oidcauth/bench/login

go 1.24
