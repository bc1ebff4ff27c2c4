// Package oidc speaks OpenID Connect to one identity provider (IdP) on
// behalf of the module: discovery, the provider's key set and its rotation
// rules, the checks of every token the module receives (ID, access, bearer,
// logout and login-initiation tokens), the code exchange, refresh and
// revocation, and the record of how the latest calls to the IdP went.
//
// It knows nothing of Caddy, cookies or the session store: a Provider is
// what a configuration reload keeps (metadata, keys, the background
// probe), and a Client is one relying party using it, with its own clock.
// Signatures, iss, aud and exp are checked by go-oidc; this package adds
// what go-oidc leaves to the caller, as each check's comment says.
package oidc
