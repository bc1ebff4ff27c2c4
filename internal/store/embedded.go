package store

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Bounds of the in-memory sets of the embedded backend. At the cap the
// oldest entries give way: a flood of logins cannot exhaust memory, at the
// price of forgetting the oldest records first.
const (
	maxSingleUse = 100_000 // used login states, logout jtis, webhook ids
	maxKnownSIDs = 100_000 // sids of sessions issued here
	setBucketSec = 10      // width of an expiringSet's time bucket
)

// storageBackend keeps revocations in Caddy's configured storage (the
// file system by default), so they survive restarts. It serves a single
// instance, or several that share that storage and restart to learn of
// each other's revocations; a cluster wants Redis.
type storageBackend struct {
	storage certmagic.Storage
	prefix  string
	now     func() time.Time

	once     *expiringSet // single-use values
	sids     *expiringSet // IdP session IDs of sessions issued here
	registry *memRegistry // sessions issued here, for the admin API
}

// Embedded returns the backend that keeps revocations in storage (Caddy's
// configured storage), under a prefix named after app (see AppID), and
// single-use values and sids in bounded sets in memory.
func Embedded(storage certmagic.Storage, app string) Backend {
	return &storageBackend{
		storage: storage,
		prefix:  path.Join("oidc_auth", "revocations", app),
		now:     time.Now,
		once:    newExpiringSet(maxSingleUse),
		sids:    newExpiringSet(maxKnownSIDs),

		registry: newMemRegistry(MaxSessions, MaxSessionsPerUser),
	}
}

func (b *storageBackend) kind() string { return "storage" }

func (b *storageBackend) setup(now func() time.Time, _ *zap.Logger) { b.now = now }

func (b *storageBackend) tolerant() bool { return false }

func (b *storageBackend) load(ctx context.Context) ([]Revocation, error) {
	keys, err := b.storage.List(ctx, b.prefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := b.now().Unix()
	var out []Revocation
	for _, k := range keys {
		raw, err := b.storage.Load(ctx, k)
		if err != nil {
			continue
		}
		var rev Revocation
		if json.Unmarshal(raw, &rev) != nil || rev.Until < now {
			_ = b.storage.Delete(ctx, k)
			continue
		}
		out = append(out, rev)
	}
	return out, nil
}

func (b *storageBackend) save(ctx context.Context, rev Revocation) error {
	raw, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	return b.storage.Store(ctx, path.Join(b.prefix, rev.Kind+"-"+Key(rev.Value)), raw)
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

func (b *storageBackend) watch(func(Revocation))     {}
func (b *storageBackend) exchange() refreshExchange  { return nil }
func (b *storageBackend) ping(context.Context) error { return nil }
func (b *storageBackend) close() error               { return nil }

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
