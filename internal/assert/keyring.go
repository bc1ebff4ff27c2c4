// Package assert signs the identity assertions that the handler passes to
// upstreams (short ES256 JWTs) and keeps their keys: a ring of generated
// keys in shared storage, rotated on a schedule with each next key
// published a full period before it signs, or keys an operator supplies.
// It imports nothing of Caddy; storage is any certmagic-like store.
package assert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Storage is the part of certmagic.Storage (Caddy's storage) the ring uses.
type Storage interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
}

// Key is one key of a ring. A key signs from SignFrom until SignUntil and
// is published from when it is made until Retire.
type Key struct {
	ID        string // RFC 7638 thumbprint, base64url
	SignFrom  time.Time
	SignUntil time.Time // zero: signs for good (an operator's key)
	private   *ecdsa.PrivateKey
	public    *ecdsa.PublicKey
	signer    jose.Signer
}

// Keyring holds the keys of one issuer of assertions. Its methods are safe
// for concurrent use.
type Keyring struct {
	storage Storage
	name    string        // storage key of the ring
	period  time.Duration // how long each generated key signs
	retain  time.Duration // how long a key stays published after it signs
	now     func() time.Time
	onError func(error)

	loadMu     sync.Mutex // one load from storage at a time
	refreshing atomic.Bool

	mu        sync.RWMutex
	keys      []*Key // by SignFrom
	jwks      []byte
	etag      string
	nextEvent time.Time // when the ring changes next (zero: never)
	static    bool
}

// Options configure a generated ring.
type Options struct {
	// Period is how long each key signs; the next key is published a
	// period before it starts to.
	Period time.Duration
	// Retain is how long a key stays published after it stopped signing:
	// at least the lifetime of the assertions it signed.
	Retain time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnError hears of failed background rotations (the ring keeps
	// working from memory and retries).
	OnError func(error)
}

// NewRotating returns a ring of generated keys kept in storage under name.
// It touches storage only on first use.
func NewRotating(storage Storage, name string, o Options) (*Keyring, error) {
	if storage == nil {
		return nil, errors.New("no storage to keep the generated signing keys")
	}
	if o.Period <= 0 || o.Retain < 0 {
		return nil, fmt.Errorf("invalid rotation period %s / retention %s", o.Period, o.Retain)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	return &Keyring{storage: storage, name: name, period: o.Period, retain: o.Retain, now: o.Now, onError: o.OnError}, nil
}

// NewStatic returns a ring of an operator's keys: signing signs, the
// others (private or public keys) are only published, for a rotation the
// operator runs.
func NewStatic(signing *ecdsa.PrivateKey, published ...*ecdsa.PublicKey) (*Keyring, error) {
	k, err := newKey(signing, &signing.PublicKey, time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	keys := []*Key{k}
	for _, pub := range published {
		pk, err := newKey(nil, pub, time.Time{}, time.Time{})
		if err != nil {
			return nil, err
		}
		if pk.ID != k.ID {
			keys = append(keys, pk)
		}
	}
	r := &Keyring{static: true, now: time.Now, onError: func(error) {}}
	if err := r.set(keys); err != nil {
		return nil, err
	}
	return r, nil
}

func newKey(priv *ecdsa.PrivateKey, pub *ecdsa.PublicKey, from, until time.Time) (*Key, error) {
	if pub.Curve != elliptic.P256() {
		return nil, errors.New("the key must be an EC key on curve P-256 (ES256)")
	}
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	k := &Key{ID: base64.RawURLEncoding.EncodeToString(sum), SignFrom: from, SignUntil: until, private: priv, public: pub}
	if priv != nil {
		opts := (&jose.SignerOptions{}).WithType("JWT")
		k.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: k.ID}}, opts)
		if err != nil {
			return nil, err
		}
	}
	return k, nil
}

// ParsePEM reads an EC P-256 key from PEM: a private key (PKCS#8 or SEC 1)
// or a public key (PKIX). Exactly one of the results is set.
func ParsePEM(data []byte) (*ecdsa.PrivateKey, *ecdsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	default:
		return nil, nil, fmt.Errorf("PEM block %q is not a private or public key", block.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, nil, errors.New("the key must be on curve P-256 (ES256)")
		}
		return k, nil, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, nil, errors.New("the key must be on curve P-256 (ES256)")
		}
		return nil, k, nil
	default:
		return nil, nil, fmt.Errorf("the key is a %T, not an EC P-256 key (ES256)", key)
	}
}

// Signing returns the key that signs now. The first call of a generated
// ring loads (or makes) the ring in storage; later changes of the ring
// happen in the background, as the next key is already in memory when
// the current one stops signing.
func (r *Keyring) Signing(ctx context.Context) (*Key, error) {
	now := r.now()
	r.mu.RLock()
	k, next := r.signingAt(now), r.nextEvent
	r.mu.RUnlock()
	if k == nil {
		if err := r.Refresh(ctx); err != nil {
			return nil, err
		}
		r.mu.RLock()
		k = r.signingAt(r.now())
		r.mu.RUnlock()
		if k == nil {
			return nil, errors.New("no signing key for the current time")
		}
		return k, nil
	}
	if !next.IsZero() && !now.Before(next) {
		r.refreshInBackground()
	}
	return k, nil
}

func (r *Keyring) signingAt(now time.Time) *Key {
	for i := len(r.keys) - 1; i >= 0; i-- {
		k := r.keys[i]
		if k.signer != nil && !now.Before(k.SignFrom) && (k.SignUntil.IsZero() || now.Before(k.SignUntil)) {
			return k
		}
	}
	return nil
}

func (r *Keyring) refreshInBackground() {
	if !r.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Refresh(ctx); err != nil {
			r.onError(err)
			// Keep signing from memory; try again in a while rather than
			// on every request.
			r.mu.Lock()
			r.nextEvent = r.now().Add(retryAfter)
			r.mu.Unlock()
		}
	}()
}

// retryAfter is the wait before a failed background refresh is retried.
const retryAfter = 30 * time.Second

// JWKS returns the published keys as a JSON Web Key Set, with an ETag of
// its content and how long a client may cache it.
func (r *Keyring) JWKS(ctx context.Context) (doc []byte, etag string, maxAge time.Duration, err error) {
	if _, err := r.Signing(ctx); err != nil {
		return nil, "", 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.jwks, r.etag, r.MaxAge(), nil
}

// PublicKeys returns the published keys, for a set merged from rings.
func (r *Keyring) PublicKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	if _, err := r.Signing(ctx); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return publicJWKs(r.keys), nil
}

// MaxAge is how long clients may cache the JWKS: a quarter of the
// rotation period (so they learn the next key long before it signs), at
// most an hour; five minutes for an operator's keys.
func (r *Keyring) MaxAge() time.Duration {
	if r.static {
		return 5 * time.Minute
	}
	return min(time.Hour, r.period/4)
}

func publicJWKs(keys []*Key) []jose.JSONWebKey {
	out := make([]jose.JSONWebKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, jose.JSONWebKey{Key: k.public, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return out
}

// set installs keys and the JWKS made from them.
func (r *Keyring) set(keys []*Key) error {
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: publicJWKs(keys)})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(doc)
	var next time.Time
	now := r.now()
	for _, k := range keys {
		if k.SignUntil.IsZero() {
			continue
		}
		for _, t := range []time.Time{k.SignUntil, k.SignUntil.Add(r.retain)} {
			if t.After(now) && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
	}
	r.mu.Lock()
	r.keys, r.jwks, r.etag, r.nextEvent = keys, doc, `"`+base64.RawURLEncoding.EncodeToString(sum[:12])+`"`, next
	r.mu.Unlock()
	return nil
}

// stored is the ring as kept in storage.
type stored struct {
	Keys []storedKey `json:"keys"`
}

type storedKey struct {
	PEM       string `json:"pem"` // PKCS#8 private key
	SignFrom  int64  `json:"sign_from"`
	SignUntil int64  `json:"sign_until"`
}

// Refresh brings a generated ring up to date: under the storage lock it
// loads the ring, drops retired keys, adds the keys due, and stores it when
// it changed. Instances on one storage thus agree on one ring.
func (r *Keyring) Refresh(ctx context.Context) error {
	if r.static {
		return nil
	}
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if err := r.storage.Lock(ctx, r.name); err != nil {
		return fmt.Errorf("locking signing keys: %w", err)
	}
	defer r.storage.Unlock(context.WithoutCancel(ctx), r.name) //nolint:errcheck
	var st stored
	raw, err := r.storage.Load(ctx, r.name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("loading signing keys: %w", err)
	default:
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("signing keys in storage (%s) are corrupt: %w", r.name, err)
		}
	}
	keys, err := decodeKeys(st)
	if err != nil {
		return fmt.Errorf("signing keys in storage (%s): %w", r.name, err)
	}
	keys, changed, err := advance(keys, r.now(), r.period, r.retain)
	if err != nil {
		return err
	}
	if changed {
		if raw, err = encodeKeys(keys); err != nil {
			return err
		}
		if err := r.storage.Store(ctx, r.name, raw); err != nil {
			return fmt.Errorf("storing signing keys: %w", err)
		}
	}
	return r.set(keys)
}

// advance drops the keys retired at now and adds keys until one signs now
// and the next one, which signs a period later, is published.
func advance(keys []*Key, now time.Time, period, retain time.Duration) ([]*Key, bool, error) {
	// Whole seconds, as kept in storage: every instance sees the same
	// times as the one that made the keys.
	now = now.Truncate(time.Second)
	changed := false
	kept := keys[:0:0]
	for _, k := range keys {
		if now.Before(k.SignUntil.Add(retain)) {
			kept = append(kept, k)
		} else {
			changed = true
		}
	}
	keys = kept
	if len(keys) == 0 || !now.Before(keys[len(keys)-1].SignUntil) {
		// Nothing signs now (a first start, or storage left alone for
		// longer than a period): a key that signs at once.
		k, err := generate(now, now.Add(period))
		if err != nil {
			return nil, false, err
		}
		keys, changed = append(keys, k), true
	}
	for last := keys[len(keys)-1]; !last.SignUntil.After(now.Add(period)); last = keys[len(keys)-1] {
		k, err := generate(last.SignUntil, last.SignUntil.Add(period))
		if err != nil {
			return nil, false, err
		}
		keys, changed = append(keys, k), true
	}
	return keys, changed, nil
}

func generate(from, until time.Time) (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return newKey(priv, &priv.PublicKey, from, until)
}

func encodeKeys(keys []*Key) ([]byte, error) {
	var st stored
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.private)
		if err != nil {
			return nil, err
		}
		st.Keys = append(st.Keys, storedKey{
			PEM:      string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			SignFrom: k.SignFrom.Unix(), SignUntil: k.SignUntil.Unix(),
		})
	}
	return json.MarshalIndent(st, "", "  ")
}

func decodeKeys(st stored) ([]*Key, error) {
	var keys []*Key
	for i, sk := range st.Keys {
		priv, _, err := ParsePEM([]byte(sk.PEM))
		if err == nil && priv == nil {
			err = errors.New("not a private key")
		}
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		k, err := newKey(priv, &priv.PublicKey, time.Unix(sk.SignFrom, 0), time.Unix(sk.SignUntil, 0))
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
