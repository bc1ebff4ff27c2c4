package oidcauth

import (
	"sync/atomic"
	"time"

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

	// maxLifetime is the longest session_lifetime of the handlers that
	// logged users in to this app: how long a revocation by sub must last.
	maxLifetime atomic.Int64
	// mgmt is a Management API client of a handler of this app, for the
	// admin API's revocations at the IdP.
	mgmt atomic.Pointer[management]
}

// noteLifetime raises maxLifetime to d.
func (a *appState) noteLifetime(d time.Duration) {
	for {
		old := a.maxLifetime.Load()
		if int64(d) <= old || a.maxLifetime.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// lifetime is how long a session of this app can last.
func (a *appState) lifetime() time.Duration {
	return max(time.Duration(a.maxLifetime.Load()), defaultSessionLifetime)
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

// revoked reports whether s was ended by a logout.
func (a *appState) revoked(s *session) bool {
	return a.store.Revoked(s.ID, s.SID, s.Subject, s.Created)
}
