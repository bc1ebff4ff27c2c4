package oidcauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// apps holds the state of each app (issuer + client ID + store): verified
// tokens, revocations and refresh coordination. It is pooled so that a
// config reload keeps all of it, and the store's connections with it.
var apps = caddy.NewUsagePool()

// refreshGrace is how long the outcome of a refresh is kept for requests
// that still carry the old refresh token (sent before the browser got the
// new cookie). With rotating refresh tokens, replaying the old one at the
// IdP would fail and end the session.
const refreshGrace = 2 * time.Minute

// Kinds of revocation.
const (
	revokeSession = "session" // one session, by our own session ID (RP logout)
	revokeSID     = "sid"     // every session with this IdP session ID
	revokeSubject = "sub"     // every session of this user begun before At
)

// revocation is one logout, as stored and as sent between instances.
type revocation struct {
	Kind  string `json:"k"`
	Value string `json:"v"`
	At    int64  `json:"a,omitempty"` // for sub: sessions created up to this time
	Until int64  `json:"u"`           // forgotten after this time (unix)
}

// backend makes revocations durable and, for a shared store, carries them
// to every instance and coordinates refreshes among them.
type backend interface {
	// load returns the revocations that are still in force.
	load(ctx context.Context) ([]revocation, error)
	// save records a revocation durably before returning.
	save(ctx context.Context, rev revocation) error
	// claimOnce records a single-use value (a logout token's jti, a used
	// login state) until the given time; false if it was seen before.
	claimOnce(ctx context.Context, key string, until time.Time) (bool, error)
	// releaseOnce forgets a claimed value whose action did not complete
	// (a logout that could not be recorded), so a retry is not a replay.
	releaseOnce(ctx context.Context, key string)
	// recordSID remembers the IdP session ID of a session issued here,
	// until the given time, so front-channel logouts can be limited to
	// sessions of this deployment.
	recordSID(ctx context.Context, sid string, until time.Time) error
	// knownSID reports whether sid was recorded and is still kept.
	knownSID(ctx context.Context, sid string) (bool, error)
	// watch calls apply for revocations made by other instances, until
	// close. A backend without other instances returns at once.
	watch(apply func(revocation))
	close() error
}

type appState struct {
	id       string        // appID: names the app in shared storage and reports
	verified verifiedCache // access tokens of sessions
	bearer   verifiedCache // bearer tokens, which may have other audiences
	backend  backend
	shared   *redisBackend // non-nil with a shared store
	logger   *zap.Logger

	mu        sync.RWMutex
	lastPrune int64            // unix time of the last sweep of expired revocations
	sessions  map[string]int64 // revoked session ID -> keep until (unix)
	sids      map[string]int64 // revoked IdP sid -> keep until
	subs      map[string]subRevocation

	refreshMu sync.Mutex
	refreshes map[string]*refreshCall
	lastSweep time.Time
	next      nextRefresh // refresh tokens of answers not yet verified
}

// subRevocation ends every session of a user that began before at.
type subRevocation struct {
	at    int64
	until int64
}

type refreshCall struct {
	done     chan struct{}
	ts       *tokenSet
	err      error
	finished time.Time
}

// newAppState loads the revocations in force from the backend and starts
// following those made elsewhere.
func newAppState(ctx context.Context, b backend, logger *zap.Logger) (*appState, error) {
	a := &appState{
		verified:  verifiedCache{entries: map[string]*verifiedToken{}},
		bearer:    verifiedCache{entries: map[string]*verifiedToken{}},
		backend:   b,
		logger:    logger,
		sessions:  map[string]int64{},
		sids:      map[string]int64{},
		subs:      map[string]subRevocation{},
		refreshes: map[string]*refreshCall{},
	}
	a.shared, _ = b.(*redisBackend)
	revs, err := b.load(ctx)
	if err != nil {
		if a.shared == nil {
			return nil, err
		}
		// A shared store that is down must not stop Caddy; its watcher
		// loads everything once it is reachable.
		logger.Error("revocation store unreachable; continuing without its revocations until it is back", zap.Error(err))
	}
	for _, rev := range revs {
		a.apply(rev)
	}
	go b.watch(a.apply)
	return a, nil
}

// Destruct implements caddy.Destructor: it closes the store's connections
// and stops its watcher.
func (a *appState) Destruct() error { return a.backend.close() }

// revoked reports whether s was ended by a logout. It is on every
// request's path: map lookups under a read lock, no allocation.
func (a *appState) revoked(s *session) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, ok := a.sessions[s.ID]; ok {
		return true
	}
	if s.SID != "" {
		if _, ok := a.sids[s.SID]; ok {
			return true
		}
	}
	if r, ok := a.subs[s.Subject]; ok && s.Created <= r.at {
		return true
	}
	return false
}

// sidRevoked reports whether every session of an IdP session is revoked.
func (a *appState) sidRevoked(sid string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.sids[sid]
	return ok
}

// revoke records a revocation durably, then enforces it here. The error
// says it could not be made durable (or shared); it is enforced here
// regardless.
func (a *appState) revoke(ctx context.Context, rev revocation) error {
	err := a.backend.save(ctx, rev)
	a.apply(rev)
	return err
}

// apply enforces a revocation in memory.
func (a *appState) apply(rev revocation) {
	now := time.Now().Unix()
	if rev.Until < now {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch rev.Kind {
	case revokeSession:
		a.sessions[rev.Value] = rev.Until
	case revokeSID:
		a.sids[rev.Value] = rev.Until
	case revokeSubject:
		if old, ok := a.subs[rev.Value]; !ok || old.at < rev.At {
			a.subs[rev.Value] = subRevocation{at: rev.At, until: rev.Until}
		}
	}
	// Sweeping is O(n): at most once a minute, so a burst of logouts over
	// a large store does not each pay for it.
	if now-a.lastPrune >= 60 {
		a.sweepRevocationsLocked(now)
		a.lastPrune = now
	}
}

// sweepRevocationsLocked forgets revocations that can no longer match a
// live session. It runs on writes only, never on the request path.
func (a *appState) sweepRevocationsLocked(now int64) {
	for k, until := range a.sessions {
		if until < now {
			delete(a.sessions, k)
		}
	}
	for k, until := range a.sids {
		if until < now {
			delete(a.sids, k)
		}
	}
	for k, r := range a.subs {
		if r.until < now {
			delete(a.subs, k)
		}
	}
}

// coalesceRefresh runs fn once for a refresh token, however many requests
// ask at the same time, and hands its outcome to requests that arrive with
// the same (now rotated) refresh token within refreshGrace. A kept outcome
// whose access token is due for refresh again is not reused. shared tells
// whether the outcome came from another request's call.
func (a *appState) coalesceRefresh(key string, now time.Time, fresh func(*tokenSet) bool, fn func() (*tokenSet, error)) (*tokenSet, bool, error) {
	a.refreshMu.Lock()
	if now.Sub(a.lastSweep) > refreshGrace {
		for k, c := range a.refreshes {
			if !c.finished.IsZero() && now.Sub(c.finished) > refreshGrace {
				delete(a.refreshes, k)
			}
		}
		a.lastSweep = now
	}
	if c, ok := a.refreshes[key]; ok {
		select {
		case <-c.done:
			if now.Sub(c.finished) <= refreshGrace && (c.err != nil || fresh(c.ts)) {
				a.refreshMu.Unlock()
				return c.ts, true, c.err
			}
		default:
			a.refreshMu.Unlock()
			<-c.done
			return c.ts, true, c.err
		}
	}
	c := &refreshCall{done: make(chan struct{})}
	a.refreshes[key] = c
	a.refreshMu.Unlock()

	c.ts, c.err = fn()
	a.refreshMu.Lock()
	c.finished = time.Now()
	if c.err != nil && errors.Is(c.err, errIdPUnavailable) {
		// Not an answer from the IdP: let the next request try again.
		delete(a.refreshes, key)
	}
	a.refreshMu.Unlock()
	close(c.done)
	return c.ts, false, c.err
}

// appID names an app in shared storage without revealing its client ID.
func appID(issuer, clientID string) string {
	sum := sha256.Sum256([]byte(issuer + "\x00" + clientID))
	return hex.EncodeToString(sum[:8])
}

func hashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// storageBackend keeps revocations in Caddy's configured storage (the
// file system by default), so they survive restarts. It serves a single
// instance, or several that share that storage and restart to learn of
// each other's revocations; a cluster wants the redis store.
type storageBackend struct {
	storage certmagic.Storage
	prefix  string
	now     func() time.Time

	once *expiringSet // single-use values
	sids *expiringSet // IdP session IDs of sessions issued here
}

func newStorageBackend(storage certmagic.Storage, app string) *storageBackend {
	return &storageBackend{
		storage: storage,
		prefix:  path.Join("oidc_auth", "revocations", app),
		now:     time.Now,
		once:    newExpiringSet(maxSingleUse),
		sids:    newExpiringSet(maxKnownSIDs),
	}
}

func (b *storageBackend) load(ctx context.Context) ([]revocation, error) {
	keys, err := b.storage.List(ctx, b.prefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := time.Now().Unix()
	var out []revocation
	for _, k := range keys {
		raw, err := b.storage.Load(ctx, k)
		if err != nil {
			continue
		}
		var rev revocation
		if json.Unmarshal(raw, &rev) != nil || rev.Until < now {
			_ = b.storage.Delete(ctx, k)
			continue
		}
		out = append(out, rev)
	}
	return out, nil
}

func (b *storageBackend) save(ctx context.Context, rev revocation) error {
	raw, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	return b.storage.Store(ctx, path.Join(b.prefix, rev.Kind+"-"+hashKey(rev.Value)), raw)
}

func (b *storageBackend) claimOnce(_ context.Context, key string, until time.Time) (bool, error) {
	return b.once.add(key, until.Unix(), b.now().Unix()), nil
}

func (b *storageBackend) releaseOnce(_ context.Context, key string) {
	b.once.remove(key)
}

// The sids of this instance's sessions are kept in memory only: after a
// restart, front-channel logouts of older sessions are ignored (the
// back-channel logout, which names the sid in a signed token, still
// ends them).
func (b *storageBackend) recordSID(_ context.Context, sid string, until time.Time) error {
	b.sids.add(sid, until.Unix(), b.now().Unix())
	return nil
}

func (b *storageBackend) knownSID(_ context.Context, sid string) (bool, error) {
	return b.sids.has(sid, b.now().Unix()), nil
}

func (b *storageBackend) watch(func(revocation)) {}
func (b *storageBackend) close() error           { return nil }

// Bounds of the in-memory sets of the embedded store. At the cap the
// oldest entries give way: a flood of logins cannot exhaust memory, at the
// price of forgetting the oldest records first.
const (
	maxSingleUse = 100_000 // used login states, logout jtis, webhook ids
	maxKnownSIDs = 100_000 // sids of sessions issued here
	setBucketSec = 10      // width of an expiringSet's time bucket
)

// expiringSet is a bounded set of keys, each kept until its own time. Keys
// are queued in buckets by the time they were added: ageing drops whole
// buckets whose keys have all expired, and at the cap the oldest keys go
// first, so no operation scans the set.
type expiringSet struct {
	mu      sync.Mutex
	max     int
	entries map[string]setEntry
	buckets []*setBucket // oldest first
	queued  int          // keys in buckets, including removed ones
	nextID  uint64
}

type setEntry struct {
	until  int64 // unix seconds
	bucket uint64
}

type setBucket struct {
	id    uint64
	start int64 // when its first key was added
	until int64 // when its last key expires
	keys  []string
}

func newExpiringSet(max int) *expiringSet {
	return &expiringSet{max: max, entries: map[string]setEntry{}}
}

// add records key until the given time; false if it is already there.
func (s *expiringSet) add(key string, until, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked(now)
	if e, ok := s.entries[key]; ok && e.until >= now {
		return false
	}
	for s.queued >= s.max {
		s.dropOldestLocked()
	}
	var b *setBucket
	if n := len(s.buckets); n > 0 && now < s.buckets[n-1].start+setBucketSec {
		b = s.buckets[n-1]
	} else {
		s.nextID++
		b = &setBucket{id: s.nextID, start: now}
		s.buckets = append(s.buckets, b)
	}
	b.keys = append(b.keys, key)
	b.until = max(b.until, until)
	s.queued++
	s.entries[key] = setEntry{until: until, bucket: b.id}
	return true
}

// has reports whether key is in the set and not expired.
func (s *expiringSet) has(key string, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked(now)
	e, ok := s.entries[key]
	return ok && e.until >= now
}

// remove forgets key; its place in its bucket goes when the bucket does.
func (s *expiringSet) remove(key string) {
	s.mu.Lock()
	delete(s.entries, key)
	s.mu.Unlock()
}

func (s *expiringSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// ageLocked drops the buckets whose keys have all expired.
func (s *expiringSet) ageLocked(now int64) {
	for len(s.buckets) > 0 && s.buckets[0].until < now {
		b := s.buckets[0]
		for _, k := range b.keys {
			s.forgetLocked(k, b.id)
		}
		s.queued -= len(b.keys)
		s.buckets[0] = nil
		s.buckets = s.buckets[1:]
	}
}

// dropOldestLocked forgets the key added first.
func (s *expiringSet) dropOldestLocked() {
	b := s.buckets[0]
	s.forgetLocked(b.keys[0], b.id)
	b.keys[0] = ""
	b.keys = b.keys[1:]
	s.queued--
	if len(b.keys) == 0 {
		s.buckets[0] = nil
		s.buckets = s.buckets[1:]
	}
}

// forgetLocked deletes key unless it was added again in a later bucket.
func (s *expiringSet) forgetLocked(key string, bucket uint64) {
	if e, ok := s.entries[key]; ok && e.bucket == bucket {
		delete(s.entries, key)
	}
}

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
