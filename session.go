package oidcauth

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/caddy-oidc-auth/oidcauth/internal/cookie"
)

// The cookies themselves (sealing, chunking, naming, payloads) are
// internal/cookie's; these names keep the handler's code short.
type (
	session    = cookie.Session
	loginState = cookie.LoginState
)

const (
	// Refresh outcomes shared through the store are sealed with the cookie
	// key under this purpose, which no cookie uses.
	purposeRefresh = "refresh"

	maxReturnToLen = 1024
)

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
