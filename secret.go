package oidcauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"

	"github.com/caddyserver/certmagic"
)

const secretStorageKey = "oidc_auth/cookie_secret"

// loadOrCreateSecret returns the cookie secret kept in Caddy's storage,
// creating it on first use. A lock makes instances that share storage
// agree on one secret.
func loadOrCreateSecret(ctx context.Context, storage certmagic.Storage) ([]byte, error) {
	if storage == nil {
		return nil, errors.New("no storage configured to keep a generated secret; set cookie_secret")
	}
	if b, err := storage.Load(ctx, secretStorageKey); err == nil && len(b) >= 2*minCookieSecretLen {
		return b, nil
	}
	if err := storage.Lock(ctx, secretStorageKey); err != nil {
		return nil, err
	}
	defer storage.Unlock(ctx, secretStorageKey) //nolint:errcheck
	b, err := storage.Load(ctx, secretStorageKey)
	if err == nil && len(b) >= 2*minCookieSecretLen {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	b = []byte(hex.EncodeToString(raw))
	if err := storage.Store(ctx, secretStorageKey, b); err != nil {
		return nil, err
	}
	return b, nil
}

// minCookieSecretLen is the shortest cookie_secret accepted.
const minCookieSecretLen = 32
