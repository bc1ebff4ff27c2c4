package store

import (
	"context"
	"sort"
	"sync"
)

// Bounds of the session registry. A user past MaxSessionsPerUser loses the
// record of their oldest session (the session itself lives on until it
// ends; only listing and revocation by session ID stop seeing it, while a
// revocation by sub still ends it); past MaxSessions overall the oldest
// records go first.
const (
	MaxSessionsPerUser = 50
	MaxSessions        = 100_000
)

// SessionEntry is one session in the registry: what an operator sees when
// listing a user's sessions. It never holds a token.
type SessionEntry struct {
	ID        string `json:"session"`
	App       string `json:"app"`           // the app's client_id
	Subject   string `json:"sub"`           // the user
	SID       string `json:"sid,omitempty"` // the IdP session
	OID       string `json:"oid,omitempty"` // the organization, when the tokens name one
	Created   int64  `json:"created"`       // unix seconds
	LastSeen  int64  `json:"last_seen"`     // unix seconds; updated at most once a minute
	Until     int64  `json:"expires"`       // the session's absolute end, unix seconds
	UserAgent string `json:"user_agent,omitempty"`
}

const maxUserAgentLen = 256

// RecordSession adds a session to the registry until its Until. The user
// agent is cut to 256 bytes.
func (s *Store) RecordSession(ctx context.Context, e SessionEntry) error {
	if len(e.UserAgent) > maxUserAgentLen {
		e.UserAgent = e.UserAgent[:maxUserAgentLen]
	}
	if e.LastSeen == 0 {
		e.LastSeen = e.Created
	}
	return s.backend.recordSession(ctx, e, s.now().Unix())
}

// TouchSession records activity of a session at seen, for idle timeouts
// kept across instances. A session not in the registry is left out.
func (s *Store) TouchSession(ctx context.Context, id string, seen int64) error {
	return s.backend.touchSession(ctx, id, seen)
}

// Session returns a session's record; false when there is none.
func (s *Store) Session(ctx context.Context, id string) (SessionEntry, bool, error) {
	return s.backend.session(ctx, id, s.now().Unix())
}

// Sessions returns the live sessions of a user, oldest first.
func (s *Store) Sessions(ctx context.Context, sub string) ([]SessionEntry, error) {
	list, err := s.backend.sessions(ctx, sub, s.now().Unix())
	sort.Slice(list, func(i, j int) bool { return list[i].Created < list[j].Created })
	return list, err
}

// SessionsOfSID returns the live sessions of an IdP session.
func (s *Store) SessionsOfSID(ctx context.Context, sid string) ([]SessionEntry, error) {
	return s.backend.sessionsOfSID(ctx, sid, s.now().Unix())
}

// ForgetSessions removes sessions from the registry (after they were
// revoked).
func (s *Store) ForgetSessions(ctx context.Context, list []SessionEntry) error {
	if len(list) == 0 {
		return nil
	}
	return s.backend.forgetSessions(ctx, list)
}

// memRegistry is the embedded backend's registry: in memory, bounded per
// user and overall. Like the sids of front-channel logout it is not
// persisted: after a restart the sessions begun before it are not listed
// (a revocation by sub, which is persisted, still ends them).
type memRegistry struct {
	mu     sync.Mutex
	byID   map[string]*SessionEntry
	bySub  map[string][]string // ids, oldest first
	bySID  map[string][]string
	order  []string // every id recorded, oldest first; may hold forgotten ids
	maxAll int
	maxSub int
}

func newMemRegistry(maxAll, maxSub int) *memRegistry {
	return &memRegistry{
		byID: map[string]*SessionEntry{}, bySub: map[string][]string{}, bySID: map[string][]string{},
		maxAll: maxAll, maxSub: maxSub,
	}
}

func (r *memRegistry) record(e SessionEntry, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[e.ID]; ok {
		r.forgetLocked(e.ID)
	}
	// Expired sessions of this user go first, then the oldest past the cap.
	for _, id := range append([]string(nil), r.bySub[e.Subject]...) {
		if old := r.byID[id]; old != nil && old.Until < now {
			r.forgetLocked(id)
		}
	}
	for len(r.bySub[e.Subject]) >= r.maxSub {
		r.forgetLocked(r.bySub[e.Subject][0])
	}
	for len(r.byID) >= r.maxAll && len(r.order) > 0 {
		id := r.order[0]
		r.order[0] = ""
		r.order = r.order[1:]
		r.forgetLocked(id)
	}
	// The order queue holds forgotten ids too: compact it when they
	// outnumber the live ones, so it stays bounded.
	if len(r.order) > 2*r.maxAll {
		live := r.order[:0:0]
		for _, id := range r.order {
			if _, ok := r.byID[id]; ok {
				live = append(live, id)
			}
		}
		r.order = live
	}
	cp := e
	r.byID[e.ID] = &cp
	r.bySub[e.Subject] = append(r.bySub[e.Subject], e.ID)
	if e.SID != "" {
		r.bySID[e.SID] = append(r.bySID[e.SID], e.ID)
	}
	r.order = append(r.order, e.ID)
}

func (r *memRegistry) forgetLocked(id string) {
	e, ok := r.byID[id]
	if !ok {
		return
	}
	delete(r.byID, id)
	r.bySub[e.Subject] = without(r.bySub[e.Subject], id)
	if len(r.bySub[e.Subject]) == 0 {
		delete(r.bySub, e.Subject)
	}
	if e.SID != "" {
		r.bySID[e.SID] = without(r.bySID[e.SID], id)
		if len(r.bySID[e.SID]) == 0 {
			delete(r.bySID, e.SID)
		}
	}
}

func without(ids []string, id string) []string {
	for i, v := range ids {
		if v == id {
			return append(ids[:i:i], ids[i+1:]...)
		}
	}
	return ids
}

func (r *memRegistry) touch(id string, seen int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[id]; ok && seen > e.LastSeen {
		e.LastSeen = seen
	}
}

func (r *memRegistry) get(id string, now int64) (SessionEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	if !ok || e.Until < now {
		return SessionEntry{}, false
	}
	return *e, true
}

func (r *memRegistry) list(ids func(*memRegistry) []string, now int64) []SessionEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []SessionEntry
	for _, id := range ids(r) {
		if e := r.byID[id]; e != nil && e.Until >= now {
			out = append(out, *e)
		}
	}
	return out
}

func (r *memRegistry) forget(list []SessionEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range list {
		r.forgetLocked(e.ID)
	}
}

func (r *memRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

func (b *storageBackend) recordSession(_ context.Context, e SessionEntry, now int64) error {
	b.registry.record(e, now)
	return nil
}

func (b *storageBackend) touchSession(_ context.Context, id string, seen int64) error {
	b.registry.touch(id, seen)
	return nil
}

func (b *storageBackend) session(_ context.Context, id string, now int64) (SessionEntry, bool, error) {
	e, ok := b.registry.get(id, now)
	return e, ok, nil
}

func (b *storageBackend) sessions(_ context.Context, sub string, now int64) ([]SessionEntry, error) {
	return b.registry.list(func(r *memRegistry) []string { return r.bySub[sub] }, now), nil
}

func (b *storageBackend) sessionsOfSID(_ context.Context, sid string, now int64) ([]SessionEntry, error) {
	return b.registry.list(func(r *memRegistry) []string { return r.bySID[sid] }, now), nil
}

func (b *storageBackend) forgetSessions(_ context.Context, list []SessionEntry) error {
	b.registry.forget(list)
	return nil
}
