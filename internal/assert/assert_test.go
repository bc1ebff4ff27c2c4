package assert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// memStorage is an in-memory Storage with a real lock.
type memStorage struct {
	mu     sync.Mutex
	locks  map[string]*sync.Mutex
	data   map[string][]byte
	stores int
}

func newMemStorage() *memStorage {
	return &memStorage{locks: map[string]*sync.Mutex{}, data: map[string][]byte{}}
}

func (s *memStorage) lock(name string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[name] == nil {
		s.locks[name] = &sync.Mutex{}
	}
	return s.locks[name]
}
func (s *memStorage) Lock(_ context.Context, name string) error   { s.lock(name).Lock(); return nil }
func (s *memStorage) Unlock(_ context.Context, name string) error { s.lock(name).Unlock(); return nil }
func (s *memStorage) Store(_ context.Context, key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = append([]byte(nil), v...)
	s.stores++
	return nil
}
func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	period = time.Hour
	retain = 2 * time.Minute
)

func newRing(t *testing.T, st Storage, c *clock) *Keyring {
	t.Helper()
	r, err := NewRotating(st, "ring", Options{Period: period, Retain: retain, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func kids(t *testing.T, r *Keyring) []string {
	t.Helper()
	doc, _, _, err := r.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		if k.Algorithm != "ES256" || k.Use != "sig" || !k.IsPublic() {
			t.Errorf("published key %s: alg %q use %q public %v", k.KeyID, k.Algorithm, k.Use, k.IsPublic())
		}
		out = append(out, k.KeyID)
	}
	return out
}

func signingKID(t *testing.T, r *Keyring) string {
	t.Helper()
	k, err := r.Signing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k.ID
}

// verify checks tok against the JWKS document as an upstream would.
func verify(t *testing.T, jwksDoc []byte, tok, aud string, at time.Time) (map[string]any, error) {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksDoc, &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var all map[string]any
	if err := parsed.Claims(set, &std, &all); err != nil {
		return nil, err
	}
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: at}, 0); err != nil {
		return nil, err
	}
	return all, nil
}

func TestRotationSchedule(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	st := newMemStorage()
	r := newRing(t, st, c)

	first := signingKID(t, r)
	published := kids(t, r)
	if len(published) != 2 || published[0] != first {
		t.Fatalf("a new ring publishes the signing key and the next one, got %v (signing %s)", published, first)
	}
	next := published[1]

	// Within the period, the same key signs and nothing is stored again.
	stores := st.stores
	c.add(period - time.Second)
	if got := signingKID(t, r); got != first {
		t.Fatalf("before the period ends another key signs: %s", got)
	}
	if st.stores != stores {
		t.Fatalf("the ring was stored again within the period")
	}

	// At the period's end the published next key signs, from memory; the
	// ring then adds the one after it (in the background).
	c.add(time.Second)
	if got := signingKID(t, r); got != next {
		t.Fatalf("after the period the next key should sign: got %s, want %s", got, next)
	}
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	published = kids(t, r)
	if len(published) != 3 || published[0] != first || published[1] != next {
		t.Fatalf("after a rotation: the old key (retained), the signing key and a new next key, got %v", published)
	}

	// The old key retires after the retention.
	c.add(retain)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	published = kids(t, r)
	if len(published) != 2 || published[0] != next {
		t.Fatalf("after the retention the old key is gone: %v", published)
	}
}

// TestRotationKeepsOldJWKSWorking: an upstream that fetched the JWKS once
// still verifies assertions after the rotation (the new key was in it), and
// an assertion signed just before the rotation verifies against the new
// JWKS until the old key retires.
func TestRotationKeepsOldJWKSWorking(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	r := newRing(t, newMemStorage(), c)
	oldDoc, _, _, err := r.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sign := func() string {
		k, err := r.Signing(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		now := c.now()
		tok, err := k.Sign(Assertion{Issuer: "https://app", Audience: "https://app", IssuedAt: now, Expiry: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	c.add(period - 10*time.Second)
	before := sign()
	c.add(10 * time.Second)
	after := sign()
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	newDoc, _, _, _ := r.JWKS(context.Background())
	if _, err := verify(t, oldDoc, after, "https://app", c.now()); err != nil {
		t.Errorf("an upstream holding the JWKS of before the rotation cannot verify the new key's assertion: %v", err)
	}
	if _, err := verify(t, newDoc, before, "https://app", c.now()); err != nil {
		t.Errorf("the old key's assertion no longer verifies right after the rotation: %v", err)
	}
	c.add(retain)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	retiredDoc, _, _, _ := r.JWKS(context.Background())
	if _, err := verify(t, retiredDoc, before, "https://app", c.now().Add(-retain)); err == nil {
		t.Errorf("the retired key still verifies")
	}
}

// TestSharedStorage: instances on one storage, and a restart, use one ring.
func TestSharedStorage(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	st := newMemStorage()
	a, b := newRing(t, st, c), newRing(t, st, c)
	var wg sync.WaitGroup
	var ka, kb string
	wg.Add(2)
	go func() { defer wg.Done(); k, _ := a.Signing(context.Background()); ka = k.ID }()
	go func() { defer wg.Done(); k, _ := b.Signing(context.Background()); kb = k.ID }()
	wg.Wait()
	if ka == "" || ka != kb {
		t.Fatalf("two instances on one storage sign with different keys: %q and %q", ka, kb)
	}
	restarted := newRing(t, st, c)
	if got := signingKID(t, restarted); got != ka {
		t.Fatalf("after a restart another key signs: %s, want %s", got, ka)
	}
	// Both rotate to the same next key.
	c.add(period)
	_ = a.Refresh(context.Background())
	_ = b.Refresh(context.Background())
	if x, y := signingKID(t, a), signingKID(t, b); x != y || x == ka {
		t.Fatalf("after the rotation the instances disagree or did not rotate: %s / %s (was %s)", x, y, ka)
	}
	if x, y := strings.Join(kids(t, a), ","), strings.Join(kids(t, b), ","); x != y {
		t.Fatalf("instances publish different sets: %s / %s", x, y)
	}
}

// TestLongDowntime: a ring left alone for several periods makes a key that
// signs at once, and drops the stale ones.
func TestLongDowntime(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	st := newMemStorage()
	old := signingKID(t, newRing(t, st, c))
	c.add(5 * period)
	r := newRing(t, st, c)
	k := signingKID(t, r)
	if k == old {
		t.Fatal("a key past its period still signs")
	}
	if got := kids(t, r); len(got) != 2 || got[0] != k {
		t.Fatalf("after a long downtime: want the signing key and the next one, got %v", got)
	}
}

func TestSignedAssertion(t *testing.T) {
	c := &clock{t: time.Now()}
	r := newRing(t, newMemStorage(), c)
	k, err := r.Signing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := c.now()
	tok, err := k.Sign(Assertion{
		Issuer: "https://app.example", Audience: "https://api.example", IssuedAt: now, Expiry: now.Add(time.Minute), SID: "ses_1",
		Claims: map[string]any{"sub": "usr_1", "roles": []any{"admin", "viewer"}, "iss": "https://evil", "exp": 9999999999},
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _, _ := r.JWKS(context.Background())
	claims, err := verify(t, doc, tok, "https://api.example", now)
	if err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != "https://app.example" || claims["sub"] != "usr_1" || claims["sid"] != "ses_1" || claims["jti"] == "" {
		t.Errorf("claims: %v", claims)
	}
	if roles, _ := claims["roles"].([]any); len(roles) != 2 {
		t.Errorf("an array claim should stay an array: %v", claims["roles"])
	}
	if int64(claims["exp"].(float64)) != now.Add(time.Minute).Unix() {
		t.Errorf("a copied claim overrode exp: %v", claims["exp"])
	}
	if _, err := verify(t, doc, tok, "https://other.example", now); err == nil {
		t.Error("an assertion for another audience verified")
	}
	if _, err := verify(t, doc, tok, "https://api.example", now.Add(2*time.Minute)); err == nil {
		t.Error("an expired assertion verified")
	}
	parts := strings.Split(tok, ".")
	hdr, _ := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if len(parts) != 3 || hdr.Signatures[0].Header.KeyID != k.ID || hdr.Signatures[0].Header.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header: kid %q typ %v", hdr.Signatures[0].Header.KeyID, hdr.Signatures[0].Header.ExtraHeaders["typ"])
	}
}

func TestStaticKeys(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	next, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, err := NewStatic(priv, &next.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := signingKID(t, r)
	if got := kids(t, r); len(got) != 2 || got[0] != k {
		t.Fatalf("static ring publishes %v (signing %s)", got, k)
	}
	if r.MaxAge() != 5*time.Minute {
		t.Errorf("max age %s", r.MaxAge())
	}
}

func TestParsePEM(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	enc := func(typ string, der []byte, err error) string {
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, pem      string
		private, valid bool
	}{
		{"pkcs8", enc("PRIVATE KEY", pkcs8(ec), nil), true, true},
		{"sec1", enc("EC PRIVATE KEY", sec1, nil), true, true},
		{"public", enc("PUBLIC KEY", pub, nil), false, true},
		{"p384", enc("PRIVATE KEY", pkcs8(p384), nil), false, false},
		{"rsa", enc("PRIVATE KEY", pkcs8(rsaKey), nil), false, false},
		{"not pem", "hello", false, false},
		{"certificate", enc("CERTIFICATE", []byte{1}, nil), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			priv, pubKey, err := ParsePEM([]byte(tc.pem))
			if (err == nil) != tc.valid {
				t.Fatalf("err %v, want valid %v", err, tc.valid)
			}
			if tc.valid && (priv != nil) != tc.private || tc.valid && priv == nil && pubKey == nil {
				t.Fatalf("private %v public %v", priv != nil, pubKey != nil)
			}
		})
	}
}

func TestCache(t *testing.T) {
	c := NewCache(4)
	now := time.Unix(1_700_000_000, 0)
	tag := new(int)
	key := CacheKey{Session: "s1", Audience: "a"}
	c.Put(key, tag, "tok", now, now.Add(time.Minute))
	if tok, _, ok := c.Get(key, tag, now.Add(44*time.Second)); !ok || tok != "tok" {
		t.Fatal("miss within the lifetime")
	}
	if _, _, ok := c.Get(key, tag, now.Add(45*time.Second)); ok {
		t.Fatal("served with less than a quarter of its lifetime left")
	}
	if _, _, ok := c.Get(key, new(int), now); ok {
		t.Fatal("served for another identity")
	}
	if _, _, ok := c.Get(CacheKey{Session: "s1", Audience: "b"}, tag, now); ok {
		t.Fatal("served for another audience")
	}
	if _, _, ok := c.Get(CacheKey{Session: "s1", Audience: "a", Host: "other.example"}, tag, now); ok {
		t.Fatal("served for another site")
	}
	for i := 0; i < 20; i++ {
		c.Put(CacheKey{Session: string(rune('a' + i))}, tag, "t", now, now.Add(time.Minute))
	}
	if c.Len() > 4 {
		t.Fatalf("cache grew past its bound: %d", c.Len())
	}
}

func BenchmarkSign(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, _ := NewStatic(priv)
	k, _ := r.Signing(context.Background())
	now := time.Now()
	a := Assertion{Issuer: "https://app", Audience: "https://app", IssuedAt: now, Expiry: now.Add(time.Minute), SID: "s",
		Claims: map[string]any{"sub": "usr_1", "email": "a@example.com", "roles": []any{"admin"}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign(a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := NewCache(1000)
	now := time.Now()
	tag := new(int)
	key := CacheKey{Session: "session-id", Audience: "https://app"}
	c.Put(key, tag, "tok", now, now.Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := c.Get(key, tag, now); !ok {
			b.Fatal("miss")
		}
	}
}

// TestFirstUseWithMovingClock: the first Signing makes the ring while the
// clock moves on (a real clock), and finds the key it made.
func TestFirstUseWithMovingClock(t *testing.T) {
	base := time.Unix(1_700_000_000, 999_000_000)
	var calls int
	var mu sync.Mutex
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return base.Add(time.Duration(calls) * time.Millisecond)
	}
	r, err := NewRotating(newMemStorage(), "ring", Options{Period: period, Retain: retain, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Signing(context.Background()); err != nil {
		t.Fatalf("first use: %v", err)
	}
}
