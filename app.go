package oidcauth

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// apps holds the state of each app (issuer + client ID + store): verified
// tokens, revocations and refresh coordination. It is pooled so that a
// config reload keeps all of it, and the store's connections with it.
var apps = caddy.NewUsagePool()

type appState struct {
	id       string        // store.AppID: names the app in shared storage and reports
	verified verifiedCache // access tokens of sessions
	bearer   verifiedCache // bearer tokens, which may have other audiences
	store    *store.Store  // revocations, single-use records, sids, refreshes
	next     nextRefresh   // refresh tokens of answers not yet verified
}

func newAppState(id string, st *store.Store) *appState {
	return &appState{
		id:       id,
		verified: verifiedCache{entries: map[string]*verifiedToken{}},
		bearer:   verifiedCache{entries: map[string]*verifiedToken{}},
		store:    st,
	}
}

// Destruct implements caddy.Destructor: it closes the store's connections
// and stops its watcher.
func (a *appState) Destruct() error { return a.store.Close() }
