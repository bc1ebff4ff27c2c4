// Package store keeps what the instances of a deployment must agree on:
// revocations (logouts), single-use records (login states, logout token
// jtis, webhook ids), the IdP session IDs of sessions issued here, and the
// coordination of refreshes, so that one refresh token is spent once.
//
// A Store enforces revocations from memory and keeps them durable in a
// Backend: the embedded one (Caddy's configured storage, one instance or
// several that share it) or Redis (a cluster). Callers use the Store only;
// which backend serves it shows only in Kind, for reports.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Kinds of revocation.
const (
	RevokeSession = "session" // one session, by its own session ID (RP logout)
	RevokeSID     = "sid"     // every session with this IdP session ID
	RevokeSubject = "sub"     // every session of this user begun up to At
	// RefreshSubject is no revocation: every session of this user whose
	// tokens were obtained up to At refreshes them on its next request (a
	// role or membership changed at the IdP).
	RefreshSubject = "refresh"
)

// Revocation is one logout, as stored and as sent between instances.
type Revocation struct {
	Kind  string `json:"k"`
	Value string `json:"v"`
	At    int64  `json:"a,omitempty"` // for sub: sessions created up to this time
	Until int64  `json:"u"`           // forgotten after this time (unix)
}

// Backend makes revocations durable and, when shared, carries them to
// every instance and coordinates refreshes among them. Its methods are
// the package's own: a Backend comes from Embedded or Redis.
type Backend interface {
	// kind names the backend in reports: "storage" or "redis".
	kind() string
	// setup hands the backend the store's clock and logger.
	setup(now func() time.Time, logger *zap.Logger)
	// load returns the revocations that are still in force.
	load(ctx context.Context) ([]Revocation, error)
	// tolerant says that a failing first load must not stop the store:
	// the backend's watch loads everything once it is reachable.
	tolerant() bool
	// save records a revocation durably before returning.
	save(ctx context.Context, rev Revocation) error
	// claimOnce records a single-use value until the given time; false
	// if it was seen before.
	claimOnce(ctx context.Context, key string, until time.Time) (bool, error)
	// releaseOnce forgets a claimed value.
	releaseOnce(ctx context.Context, key string)
	// recordSID remembers the IdP session ID of a session issued here.
	recordSID(ctx context.Context, sid string, until time.Time) error
	// knownSID reports whether sid was recorded and is still kept.
	knownSID(ctx context.Context, sid string) (bool, error)
	// recordSession adds a session to the registry, keeping it bounded.
	recordSession(ctx context.Context, e SessionEntry, now int64) error
	// touchSession raises a registered session's last-seen time.
	touchSession(ctx context.Context, id string, seen int64) error
	// session returns a registered session that has not expired.
	session(ctx context.Context, id string, now int64) (SessionEntry, bool, error)
	// sessions returns the registered live sessions of a user.
	sessions(ctx context.Context, sub string, now int64) ([]SessionEntry, error)
	// sessionsOfSID returns the registered live sessions of an IdP session.
	sessionsOfSID(ctx context.Context, sid string, now int64) ([]SessionEntry, error)
	// forgetSessions removes sessions from the registry.
	forgetSessions(ctx context.Context, list []SessionEntry) error
	// watch calls apply for revocations made by other instances, until
	// close. A backend without other instances returns at once.
	watch(apply func(Revocation))
	// exchange is the cluster-wide refresh exchange; nil when the
	// backend has no other instances to coordinate with.
	exchange() refreshExchange
	ping(ctx context.Context) error
	close() error
}

// Options are a Store's optional settings.
type Options struct {
	// Logger receives the store's warnings. Default: none.
	Logger *zap.Logger
	// Now is the clock of the store and its backend. Default: time.Now.
	Now func() time.Time
	// Redis holds the settings of a Redis store beyond its URL.
	Redis RedisOptions
}

// Store enforces revocations in memory, keeps them durable in its
// backend, and coordinates refreshes. It is safe for concurrent use.
type Store struct {
	backend Backend
	logger  *zap.Logger
	now     func() time.Time

	mu        sync.RWMutex
	lastPrune int64            // unix time of the last sweep of expired revocations
	sessions  map[string]int64 // revoked session ID -> keep until (unix)
	sids      map[string]int64 // revoked IdP sid -> keep until
	subs      map[string]subRevocation
	stale     map[string]subRevocation // RefreshSubject

	refreshMu sync.Mutex
	refreshes map[string]*refreshCall
	lastSweep time.Time
}

// subRevocation ends every session of a user that began up to at.
type subRevocation struct {
	at    int64
	until int64
}

// Open returns a Store for the app named app: with Redis when url is set
// (redis:// or rediss://, see RedisTopology), else in storage.
func Open(ctx context.Context, url string, storage certmagic.Storage, app string, opts Options) (*Store, error) {
	var b Backend = Embedded(storage, app)
	if url != "" {
		rb, err := Redis(url, app, opts.Redis)
		if err != nil {
			return nil, err
		}
		b = rb
	}
	return New(ctx, b, opts)
}

// New loads the revocations in force from b and starts following those
// made elsewhere. A Redis backend that is unreachable does not fail New:
// its revocations are loaded once it answers.
func New(ctx context.Context, b Backend, opts Options) (*Store, error) {
	s := &Store{
		backend:   b,
		logger:    opts.Logger,
		now:       opts.Now,
		sessions:  map[string]int64{},
		sids:      map[string]int64{},
		subs:      map[string]subRevocation{},
		stale:     map[string]subRevocation{},
		refreshes: map[string]*refreshCall{},
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	b.setup(s.now, s.logger)
	revs, err := b.load(ctx)
	if err != nil {
		if !b.tolerant() {
			return nil, err
		}
		s.logger.Error("revocation store unreachable; continuing without its revocations until it is back", zap.Error(err))
	}
	for _, rev := range revs {
		s.apply(rev)
	}
	go b.watch(s.apply)
	return s, nil
}

// Kind names the backend for reports: "storage" or "redis".
func (s *Store) Kind() string { return s.backend.kind() }

// Ping reports whether the backend answers. The embedded backend always
// does; Redis is asked, within a short timeout.
func (s *Store) Ping(ctx context.Context) error { return s.backend.ping(ctx) }

// Close closes the backend's connections and stops its watcher.
func (s *Store) Close() error { return s.backend.close() }

// Revoked reports whether a session (its own ID, its IdP session ID sid,
// its subject and its creation time) was ended by a logout. It is on
// every request's path: map lookups under a read lock, no allocation.
func (s *Store) Revoked(id, sid, subject string, created int64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.sessions[id]; ok {
		return true
	}
	if sid != "" {
		if _, ok := s.sids[sid]; ok {
			return true
		}
	}
	if r, ok := s.subs[subject]; ok && created <= r.at {
		return true
	}
	return false
}

// MustRefresh reports whether a session of subject whose tokens were
// obtained at issued must refresh them now (see RefreshSubject). It is on
// every request's path: a map lookup under a read lock.
func (s *Store) MustRefresh(subject string, issued int64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.stale[subject]
	return ok && issued <= r.at
}

// SIDRevoked reports whether every session of an IdP session is revoked.
func (s *Store) SIDRevoked(sid string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.sids[sid]
	return ok
}

// SubjectRevoked reports whether every session of subject begun up to at
// is revoked.
func (s *Store) SubjectRevoked(subject string, at int64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.subs[subject]
	return ok && r.at >= at
}

// Held is the number of revocations held in memory.
func (s *Store) Held() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions) + len(s.sids) + len(s.subs) + len(s.stale)
}

// Revoke records a revocation durably, then enforces it here. The error
// says it could not be made durable (or shared); it is enforced here
// regardless. A revocation whose Until has passed is not enforced.
func (s *Store) Revoke(ctx context.Context, rev Revocation) error {
	err := s.backend.save(ctx, rev)
	s.apply(rev)
	return err
}

// ClaimOnce records a single-use value (a logout token's jti, a used
// login state) until the given time; false if it was seen before. The
// embedded backend keeps at most 100,000 values, the oldest giving way.
func (s *Store) ClaimOnce(ctx context.Context, key string, until time.Time) (bool, error) {
	return s.backend.claimOnce(ctx, key, until)
}

// ReleaseOnce forgets a claimed value whose action did not complete (a
// logout that could not be recorded), so a retry is not a replay.
func (s *Store) ReleaseOnce(ctx context.Context, key string) {
	s.backend.releaseOnce(ctx, key)
}

// RecordSID remembers the IdP session ID of a session issued here until
// the given time, so front-channel logouts can be limited to sessions of
// this deployment. The embedded backend keeps them in memory only.
func (s *Store) RecordSID(ctx context.Context, sid string, until time.Time) error {
	return s.backend.recordSID(ctx, sid, until)
}

// KnownSID reports whether sid was recorded and is still kept.
func (s *Store) KnownSID(ctx context.Context, sid string) (bool, error) {
	return s.backend.knownSID(ctx, sid)
}

// apply enforces a revocation in memory.
func (s *Store) apply(rev Revocation) {
	now := s.now().Unix()
	if rev.Until < now {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch rev.Kind {
	case RevokeSession:
		s.sessions[rev.Value] = rev.Until
	case RevokeSID:
		s.sids[rev.Value] = rev.Until
	case RevokeSubject:
		if old, ok := s.subs[rev.Value]; !ok || old.at < rev.At {
			s.subs[rev.Value] = subRevocation{at: rev.At, until: rev.Until}
		}
	case RefreshSubject:
		if old, ok := s.stale[rev.Value]; !ok || old.at < rev.At {
			s.stale[rev.Value] = subRevocation{at: rev.At, until: rev.Until}
		}
	}
	// Sweeping is O(n): at most once a minute, so a burst of logouts over
	// a large store does not each pay for it.
	if now-s.lastPrune >= 60 {
		s.sweepRevocationsLocked(now)
		s.lastPrune = now
	}
}

// sweepRevocationsLocked forgets revocations that can no longer match a
// live session. It runs on writes only, never on the request path.
func (s *Store) sweepRevocationsLocked(now int64) {
	for k, until := range s.sessions {
		if until < now {
			delete(s.sessions, k)
		}
	}
	for k, until := range s.sids {
		if until < now {
			delete(s.sids, k)
		}
	}
	for k, r := range s.subs {
		if r.until < now {
			delete(s.subs, k)
		}
	}
	for k, r := range s.stale {
		if r.until < now {
			delete(s.stale, k)
		}
	}
}

// AppID names an app (issuer and client ID) in shared storage and in
// reports without revealing its client ID.
func AppID(issuer, clientID string) string {
	sum := sha256.Sum256([]byte(issuer + "\x00" + clientID))
	return hex.EncodeToString(sum[:8])
}

// Key is the name the store gives a value (a refresh token, a sid) in its
// backend: a hash, so the backend never holds the value itself.
func Key(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
