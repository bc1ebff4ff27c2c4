package oidcauth

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// countingReader counts what the handler reads of a body.
type countingReader struct {
	r    io.Reader
	read atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// TestInitiateBodyLimit: a posted login initiation over 64 KiB gets 413
// and is not read past the limit; a small one is still parsed.
func TestInitiateBodyLimit(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	post := func(body io.Reader, length int64) int {
		r := httptest.NewRequest(http.MethodPost, "/auth/initiate", body)
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Accept", "text/html")
		r.ContentLength = length
		rec, _ := serve(t, m, r)
		return rec.Code
	}
	big := "iss=" + url.QueryEscape(unreachableIssuer) + "&pad=" + strings.Repeat("a", 100<<10)
	if code := post(strings.NewReader(big), int64(len(big))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("100 KiB body: status %d, want 413", code)
	}
	endless := &countingReader{r: io.LimitReader(neverEnding('a'), 20<<20)}
	if code := post(endless, -1); code != http.StatusRequestEntityTooLarge {
		t.Errorf("20 MB body without a length: status %d, want 413", code)
	}
	if n := endless.read.Load(); n > 2*maxInitiateBody {
		t.Errorf("read %d bytes of an oversized body, limit %d", n, maxInitiateBody)
	}
	// Within the limit: parsed (here refused for naming another issuer).
	small := "iss=" + url.QueryEscape("https://other.example") + "&pad=" + strings.Repeat("a", 60<<10)
	if code := post(strings.NewReader(small), int64(len(small))); code != http.StatusBadRequest {
		t.Errorf("60 KiB body: status %d, want the 400 of another issuer", code)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// revocationIdP is a token revocation endpoint that counts its calls and
// holds them until released.
type revocationIdP struct {
	calls, inFlight, peak atomic.Int64
	release               chan struct{}
	releaseAll            func()
	srv                   *httptest.Server
}

func newRevocationIdP(t *testing.T) *revocationIdP {
	idp := &revocationIdP{release: make(chan struct{})}
	var once sync.Once
	idp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idp.calls.Add(1)
		n := idp.inFlight.Add(1)
		defer idp.inFlight.Add(-1)
		for {
			p := idp.peak.Load()
			if n <= p || idp.peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-idp.release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		once.Do(func() { close(idp.release) })
		idp.srv.Close()
	})
	idp.releaseAll = func() { once.Do(func() { close(idp.release) }) }
	return idp
}

// logoutHandler is a unit handler whose provider has a revocation
// endpoint, and whose store writes to a directory the test can count.
func logoutHandler(t *testing.T, revocation string) (*OIDCAuth, func() int) {
	m := newUnitHandler(t, withOverrides)
	meta, err := m.provider.Metadata(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	meta.Revocation = revocation
	dir := t.TempDir()
	m.app.store = newTestStore(t, m.app.id, dir, nil)
	return m, func() int {
		n := 0
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
}

func logoutWith(t *testing.T, m *OIDCAuth, s *session) int {
	r := navRequest(http.MethodGet, "/auth/logout")
	addSession(t, m, r, s)
	rec, _ := serve(t, m, r)
	return rec.Code
}

// TestLogoutOfEndedSession: replaying the cookie of a revoked or expired
// session at logout calls nothing at the IdP and writes nothing; a live
// session's logout does both, once.
func TestLogoutOfEndedSession(t *testing.T) {
	idp := newRevocationIdP(t)
	idp.releaseAll()
	m, files := logoutHandler(t, idp.srv.URL)
	now := time.Now()

	revoked := unitSession(now)
	revoked.RefreshToken = "rt-revoked"
	if err := m.app.store.Revoke(t.Context(), store.Revocation{Kind: store.RevokeSession, Value: revoked.ID, Until: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	before := files() // the revocation just made
	expired := unitSession(now)
	expired.RefreshToken = "rt-expired"
	expired.Created = now.Add(-25 * time.Hour).Unix()
	spent := unitSession(now) // no refresh token, access token expired
	spent.Expiry = now.Add(-time.Minute).Unix()
	for range 20 {
		for _, s := range []*session{revoked, expired, spent} {
			if code := logoutWith(t, m, s); code != http.StatusFound {
				t.Fatalf("logout: status %d, want 302", code)
			}
		}
	}
	if n := files() - before; n != 0 {
		t.Errorf("60 logouts of ended sessions wrote %d revocations", n)
	}
	live := unitSession(now)
	live.RefreshToken = "rt-live"
	if code := logoutWith(t, m, live); code != http.StatusFound {
		t.Fatalf("logout: status %d", code)
	}
	waitIdle(t, m)
	if c := idp.calls.Load(); c != 1 {
		t.Errorf("revocation calls: %d, want 1 (the live session's only)", c)
	}
	if n := files() - before; n != 1 {
		t.Errorf("revocations written: %d, want 1", n)
	}
}

// waitIdle waits until no token revocation is under way.
func waitIdle(t *testing.T, m *OIDCAuth) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for m.provider.RevocationsUnderWay() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("token revocations still under way after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRevocationCallsBounded: logouts while the IdP's revocation endpoint
// hangs never have more than oidc.MaxRevocationCalls calls under way, and each
// logout answers without waiting for one.
func TestRevocationCallsBounded(t *testing.T) {
	idp := newRevocationIdP(t)
	m, _ := logoutHandler(t, idp.srv.URL)
	const n = 3 * oidc.MaxRevocationCalls
	for i := range n {
		s := unitSession(time.Now())
		s.RefreshToken = "rt-" + randomString(8)
		if code := logoutWith(t, m, s); code != http.StatusFound {
			t.Fatalf("logout %d: status %d", i, code)
		}
	}
	// Let the calls that were started arrive.
	deadline := time.Now().Add(30 * time.Second)
	for idp.inFlight.Load() < oidc.MaxRevocationCalls && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p := idp.peak.Load(); p > oidc.MaxRevocationCalls {
		t.Fatalf("%d revocation calls under way at once, limit %d", p, oidc.MaxRevocationCalls)
	}
	if c := idp.calls.Load(); c != oidc.MaxRevocationCalls {
		t.Errorf("%d revocation calls for %d logouts while the IdP hangs, want %d", c, n, oidc.MaxRevocationCalls)
	}
	idp.releaseAll()
	waitIdle(t, m)
}
