package oidc

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// The JWKS lifecycle. The key set is fetched on first use and then:
//
//   - refetched at once when a token from a trusted channel (the token
//     endpoint's answer at login and refresh, or a sealed session cookie,
//     which only this module writes) names a kid the set lacks or no key
//     verifies it. Such a refetch has no cooldown; concurrent ones share
//     one fetch, and each distinct kid may start at most one fetch per
//     JWKSKidInterval, so a flood of odd tokens cannot hammer the IdP. A
//     fetch that fails does not use up its kid's allowance: the next
//     trusted refetch may start JWKSFailRetry after the failure;
//   - refetched for a token anyone can send (bearer tokens, logout tokens,
//     idp_initiated_login JWTs) only when no fetch started within
//     JWKSCooldown. That limit is never waited out, and the trusted rule
//     does not look at it;
//   - refreshed in the background when it reaches its maximum age (the
//     IdP's Cache-Control max-age within [JWKSMinMaxAge, JWKSMaxMaxAge],
//     else JWKSDefaultMaxAge), which drops the keys the IdP no longer
//     publishes. A failed refresh keeps the last good set and is retried
//     with backoff.
//
// No request ever sleeps: it verifies with the keys at hand, or waits for
// one fetch (bounded by IdPTimeout) that its own token needs. When the
// keys cannot be fetched, a token they cannot check is neither accepted
// nor refused: the error wraps ErrUnavailable (see verifyToken).
const (
	JWKSCooldown      = 10 * time.Second
	JWKSKidInterval   = 10 * time.Second
	jwksMaxKids       = 16 // distinct unknown kids tracked per JWKSKidInterval
	JWKSDefaultMaxAge = time.Hour
	JWKSMinMaxAge     = 5 * time.Minute
	JWKSMaxMaxAge     = 24 * time.Hour
	jwksRetryMin      = 10 * time.Second
	jwksRetryMax      = 5 * time.Minute
	// No trusted refetch starts sooner than this after a failed fetch.
	JWKSFailRetry = time.Second
	// The refresher reads the clock at least this often, so a clock that
	// jumps (a suspended machine) does not leave the set stale for long.
	jwksWake     = time.Minute
	maxJWKSBytes = 1 << 20
)

// Reasons of a JWKS fetch, the values of the metric's reason label.
const (
	FetchStartup    = "startup"
	FetchUnknownKid = "unknown_kid"
	FetchMaxAge     = "max_age"
)

// KeySet verifies JWS signatures with the provider's JWKS, under the
// rules above. It is owned by its Provider: its fetches and its refresher
// goroutine run under the provider's context, which Destruct cancels.
// Tokens are checked through a verifier (see Client), never directly.
type KeySet struct {
	url    string
	client *http.Client
	algs   []string
	now    func() time.Time
	ctx    context.Context

	tracker *Tracker
	report  Reporter // outcome of every fetch, for health

	mu        sync.RWMutex // keys, lastFetch
	keys      []jose.JSONWebKey
	lastFetch time.Time
	// Read by every request, so without a lock.
	removals atomic.Uint64 // fetches that dropped a key
	// Due for a max-age refresh, in unix nanoseconds; 0 before the first
	// fetch. Written under fmu.
	expires atomic.Int64

	fmu       sync.Mutex // the fetch bookkeeping below
	inflight  *jwksCall
	last      *jwksCall // the last finished fetch
	started   uint64    // fetches started so far; each call's seq
	lastStart time.Time
	kidTried  map[string]kidMark // trusted refetches by kid
	failed    time.Time          // when the last fetch failed; zero after a success
	retry     time.Duration      // backoff of failed refreshes
	ok        bool               // a fetch has succeeded
	running   bool               // the refresher goroutine was started
	kick      chan struct{}
	done      chan struct{} // closed when the refresher has stopped
}

// kidMark is a trusted refetch charged to a kid: when, and which fetch.
type kidMark struct {
	at  time.Time
	seq uint64
}

type jwksCall struct {
	seq  uint64
	done chan struct{}
	err  error
}

func newKeySet(ctx context.Context, url string, client *http.Client, algs []string, now func() time.Time, tracker *Tracker, report Reporter) *KeySet {
	if now == nil {
		now = time.Now
	}
	return &KeySet{
		url: url, client: client, algs: algs, now: now, ctx: ctx, tracker: tracker, report: report,
		kidTried: map[string]kidMark{},
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// trusted and untrusted give go-oidc a key set with the refetch rule of
// the channel the token came by (see the top of this file).
func (k *KeySet) trusted() gooidc.KeySet   { return channelKeys{k, true} }
func (k *KeySet) untrusted() gooidc.KeySet { return channelKeys{k, false} }

type channelKeys struct {
	k       *KeySet
	trusted bool
}

// VerifySignature implements gooidc.KeySet.
func (c channelKeys) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	k := c.k
	// Only a fetch that starts after this point is sure to see the key
	// that signed the token (the token exists already).
	k.fmu.Lock()
	seq := k.started
	k.fmu.Unlock()
	k.wakeIfStale()

	algs := make([]jose.SignatureAlgorithm, len(k.algs))
	for i, a := range k.algs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	// Compact serialization only: a JWT is never the JWS JSON form.
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("jwt must have exactly one signature")
	}
	hdr := jws.Signatures[0].Header
	for {
		payload, found, verr := k.verifyWith(jws, hdr)
		if verr == nil {
			return payload, nil
		}
		allow := func(now time.Time) bool { return k.mayStart(now, hdr.KeyID, found, c.trusted) }
		fetched, ferr := k.await(ctx, seq, FetchUnknownKid, allow)
		switch {
		case ferr != nil:
			return nil, keysUnavailable(ctx, ferr)
		case !fetched && found:
			return nil, verr
		case !fetched:
			// The keys at hand lack the kid; if the last fetch failed,
			// the IdP's keys are unknown, not the kid.
			k.fmu.Lock()
			last := k.last
			k.fmu.Unlock()
			if last != nil && last.err != nil {
				return nil, keysUnavailable(ctx, last.err)
			}
			return nil, fmt.Errorf("%s %q", unknownKeyMsg, hdr.KeyID)
		}
	}
}

// mayStart decides, under fmu, whether a token whose signature failed may
// start a fetch; found says whether some key was a candidate.
func (k *KeySet) mayStart(now time.Time, kid string, found, trusted bool) bool {
	if k.started == 0 {
		return true // the first fetch
	}
	cooled := now.Sub(k.lastStart) >= JWKSCooldown
	if !trusted {
		// A known key that does not verify the token is a forgery, not
		// news from the IdP.
		return !found && cooled
	}
	if !k.failed.IsZero() && now.Sub(k.failed) < JWKSFailRetry {
		return false // the IdP failed a moment ago: do not hammer it
	}
	if t, ok := k.kidTried[kid]; ok && now.Sub(t.at) < JWKSKidInterval {
		return false
	}
	if len(k.kidTried) >= jwksMaxKids {
		for id, t := range k.kidTried {
			if now.Sub(t.at) >= JWKSKidInterval {
				delete(k.kidTried, id)
			}
		}
	}
	if len(k.kidTried) >= jwksMaxKids && !cooled {
		return false // many odd kids at once: back to the untrusted rule
	}
	k.kidTried[kid] = kidMark{at: now, seq: k.started + 1} // the fetch start makes next
	return true
}

// await waits for a fetch in flight, or else starts one if no fetch newer
// than seq has finished and allow says so. fetched reports whether a fetch
// finished meanwhile (the caller looks at the keys again); err is its
// failure, or the caller's context ending.
func (k *KeySet) await(ctx context.Context, seq uint64, reason string, allow func(time.Time) bool) (fetched bool, err error) {
	k.fmu.Lock()
	call := k.inflight
	if call == nil {
		if k.last != nil && k.last.seq > seq {
			k.fmu.Unlock()
			return false, k.last.err
		}
		now := k.now()
		if !allow(now) {
			k.fmu.Unlock()
			return false, nil
		}
		call = k.start(now, reason)
	}
	k.fmu.Unlock()
	select {
	case <-call.done:
		return true, call.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// start begins a fetch under fmu; it runs under the key set's context, so
// a request that gives up does not fail the others waiting for it.
func (k *KeySet) start(now time.Time, reason string) *jwksCall {
	k.started++
	k.lastStart = now
	call := &jwksCall{seq: k.started, done: make(chan struct{})}
	k.inflight = call
	if !k.ok {
		reason = FetchStartup // until a fetch has succeeded
	}
	if !k.running && k.ctx != nil {
		k.running = true
		go k.refresher()
	}
	go k.run(call, reason)
	return call
}

func (k *KeySet) run(call *jwksCall, reason string) {
	ctx := k.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	done := k.report.IdPCall("jwks")
	keys, maxAge, err := k.fetch(ctx)
	done()
	k.tracker.Record("jwks", err)
	result := "ok"
	if err != nil {
		result = "error"
		err = fmt.Errorf("%w: fetching JWKS: %v", ErrUnavailable, err)
	}
	k.report.JWKSFetch(reason, result)
	now := k.now()
	if err == nil {
		k.mu.Lock()
		if dropsKey(k.keys, keys) {
			k.removals.Add(1)
		}
		k.keys, k.lastFetch = keys, now
		k.mu.Unlock()
	}
	k.fmu.Lock()
	if err == nil {
		k.failed = time.Time{}
	} else {
		k.failed = now
		// Not an answer from the IdP: the kid that started this fetch
		// may try again after JWKSFailRetry.
		for id, t := range k.kidTried {
			if t.seq == call.seq {
				delete(k.kidTried, id)
			}
		}
	}
	switch {
	case err == nil:
		k.expires.Store(now.Add(maxAge).UnixNano())
		k.retry, k.ok = 0, true
	case k.expiredAt(now):
		// Keep the last good set and ask again later.
		k.retry = min(max(2*k.retry, jwksRetryMin), jwksRetryMax)
		k.expires.Store(now.Add(k.retry).UnixNano())
	}
	call.err = err
	k.inflight, k.last = nil, call
	k.fmu.Unlock()
	close(call.done)
}

// refresher refreshes the set when it reaches its maximum age, until the
// key set's context ends.
func (k *KeySet) refresher() {
	defer close(k.done)
	for {
		k.fmu.Lock()
		expires, seq := k.expires.Load(), k.started
		k.fmu.Unlock()
		wait := jwksWake
		if expires != 0 {
			wait = min(time.Duration(expires-k.now().UnixNano()), jwksWake)
		}
		if wait <= 0 {
			_, _ = k.await(k.ctx, seq, FetchMaxAge, func(time.Time) bool { return true })
			if k.ctx.Err() != nil {
				return
			}
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-k.ctx.Done():
			t.Stop()
			return
		case <-k.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// Refetch fetches the keys now unless a fetch started within JWKSCooldown
// (or one is under way, which it joins); for a readiness probe or a
// check of the configuration.
func (k *KeySet) Refetch(ctx context.Context) error {
	k.fmu.Lock()
	seq := k.started
	k.fmu.Unlock()
	_, err := k.await(ctx, seq, FetchStartup, func(now time.Time) bool {
		return k.started == 0 || now.Sub(k.lastStart) >= JWKSCooldown
	})
	return err
}

// stop waits, once the context is cancelled, for the refresher and a
// fetch under way to end.
func (k *KeySet) stop() {
	k.fmu.Lock()
	running, call := k.running, k.inflight
	k.fmu.Unlock()
	if call != nil {
		<-call.done
	}
	if running {
		<-k.done
	}
}

// wakeIfStale wakes the refresher when the set is past its maximum age (a
// clock that jumped, or a refresher still waiting for its timer).
func (k *KeySet) wakeIfStale() {
	if k.expiredAt(k.now()) {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

// expiredAt reports whether the set is past its maximum age (or its retry
// time) at now; never before the first fetch.
func (k *KeySet) expiredAt(now time.Time) bool {
	at := k.expires.Load()
	return at != 0 && now.UnixNano() >= at
}

// removalCount counts the fetches that dropped a key: a verdict cached
// before the latest of them is checked again. As every request asks, it
// also wakes the refresher of a stale set.
func (k *KeySet) removalCount() uint64 {
	k.wakeIfStale()
	return k.removals.Load()
}

// dropsKey reports whether next lacks a key of prev (by kid and key).
func dropsKey(prev, next []jose.JSONWebKey) bool {
outer:
	for i := range prev {
		for j := range next {
			if prev[i].KeyID == next[j].KeyID && keyEqual(&prev[i], &next[j]) {
				continue outer
			}
		}
		return true
	}
	return false
}

func keyEqual(a, b *jose.JSONWebKey) bool {
	ta, err1 := a.Thumbprint(crypto.SHA256)
	tb, err2 := b.Thumbprint(crypto.SHA256)
	return err1 == nil && err2 == nil && string(ta) == string(tb)
}

// verifyWith tries the keys matching the header's kid (all keys when the
// token names none); found is false when no key was a candidate.
func (k *KeySet) verifyWith(jws *jose.JSONWebSignature, hdr jose.Header) (payload []byte, found bool, err error) {
	k.mu.RLock()
	keys := k.keys
	k.mu.RUnlock()
	err = errors.New("signature does not verify")
	for i := range keys {
		key := &keys[i]
		if (hdr.KeyID != "" && key.KeyID != hdr.KeyID) || key.Use == "enc" {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
			continue
		}
		found = true
		if p, verr := jws.Verify(key.Key); verr == nil {
			return p, true, nil
		}
	}
	return nil, found, err
}

// fetch loads the JWKS, skipping keys that do not parse or are symmetric,
// so one odd key does not disable the others; maxAge is how long the set
// may be used before it is refreshed.
func (k *KeySet) fetch(ctx context.Context) (keys []jose.JSONWebKey, maxAge time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, IdPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return nil, 0, err
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, 0, fmt.Errorf("malformed JWKS: %w", err)
	}
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil || !key.Valid() || !key.IsPublic() {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("JWKS has no usable public key")
	}
	return keys, jwksMaxAge(resp.Header), nil
}

// jwksMaxAge reads max-age from Cache-Control and keeps it within
// [JWKSMinMaxAge, JWKSMaxMaxAge]; without one (no-store and no-cache say
// nothing useful for a key set that must be kept) it is JWKSDefaultMaxAge.
func jwksMaxAge(h http.Header) time.Duration {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
			if !ok || !strings.EqualFold(name, "max-age") {
				continue
			}
			secs, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || secs < 0 {
				continue
			}
			secs = min(secs, int64(JWKSMaxMaxAge/time.Second))
			return max(time.Duration(secs)*time.Second, JWKSMinMaxAge)
		}
	}
	return JWKSDefaultMaxAge
}

// keyErrKey is the context key under which verifyToken asks the key set
// to record why it could not check a signature when the IdP's keys were
// out of reach: go-oidc passes key set errors on as text only, which
// would lose the ErrUnavailable marker and turn an IdP outage into a
// refused token (and a session ended for nothing).
type keyErrKey struct{}

// keysUnavailable marks err (a failed fetch, or the caller's context
// ending while it waited for one) as the IdP being unavailable, and
// records it for verifyToken.
func keysUnavailable(ctx context.Context, err error) error {
	if !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: waiting for the JWKS: %v", ErrUnavailable, err)
	}
	if p, ok := ctx.Value(keyErrKey{}).(*error); ok {
		*p = err
	}
	return err
}

// verifyToken is v.Verify, except that a token the key set could not
// check because the IdP's keys were out of reach fails with an error that
// wraps ErrUnavailable, so callers answer "unavailable", not "refused".
func verifyToken(ctx context.Context, client *http.Client, v *gooidc.IDTokenVerifier, raw string) (*gooidc.IDToken, error) {
	var keyErr error
	tok, err := v.Verify(context.WithValue(gooidc.ClientContext(ctx, client), keyErrKey{}, &keyErr), raw)
	if err != nil && keyErr != nil {
		return nil, keyErr
	}
	return tok, err
}

// unknownKeyMsg starts the error for a kid the JWKS lacks (after a refetch,
// or when the refetch rules allowed none). go-oidc passes key set errors
// on as text.
const unknownKeyMsg = "no key in the provider's JWKS matches kid"

// Size reports how many usable keys the set holds and when they were last
// fetched (zero before the first successful fetch).
func (k *KeySet) Size() (keys int, fetched time.Time) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys), k.lastFetch
}

// LastFetch reports the number of the latest finished fetch (fetches are
// numbered from 1 as they start; 0: none has finished) and its error.
func (k *KeySet) LastFetch() (seq uint64, err error) {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	if k.last == nil {
		return 0, nil
	}
	return k.last.seq, k.last.err
}

// RefresherStarted reports whether the background refresher was started:
// it starts with the first fetch.
func (k *KeySet) RefresherStarted() bool {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	return k.running
}

// RefresherDone is closed when the refresher goroutine has ended.
func (k *KeySet) RefresherDone() <-chan struct{} { return k.done }
