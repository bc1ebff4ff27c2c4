package store

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func testStorageBackend(t *testing.T, now *time.Time) *storageBackend {
	b := Embedded(&certmagic.FileStorage{Path: t.TempDir()}, "test").(*storageBackend)
	b.now = func() time.Time { return *now }
	return b
}

// TestSingleUseStoreBounded: 200,000 distinct single-use values (what an
// anonymous flood of callbacks with fresh state cookies records) keep the
// store at its cap, recent values are still refused when replayed, and
// expired ones age out without a scan.
func TestSingleUseStoreBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := testStorageBackend(t, &now)
	ctx := context.Background()
	const n = 200_000
	for i := range n {
		if i%1000 == 0 {
			now = now.Add(time.Second) // the flood takes a few minutes
		}
		fresh, err := b.claimOnce(ctx, "state:"+strconv.Itoa(i), now.Add(11*time.Minute))
		if err != nil || !fresh {
			t.Fatalf("claim %d: fresh=%v err=%v", i, fresh, err)
		}
		if i%10_000 == 0 {
			if l, q := b.once.len(), b.once.queued; l > maxSingleUse || q > maxSingleUse {
				t.Fatalf("after %d claims: %d entries, %d queued, cap %d", i+1, l, q, maxSingleUse)
			}
		}
	}
	if l := b.once.len(); l != maxSingleUse {
		t.Fatalf("after %d claims: %d entries, want the cap %d", n, l, maxSingleUse)
	}
	for _, i := range []int{n - 1, n - maxSingleUse/2, n - maxSingleUse} {
		if fresh, _ := b.claimOnce(ctx, "state:"+strconv.Itoa(i), now.Add(time.Minute)); fresh {
			t.Errorf("value %d, among the newest %d, accepted twice", i, maxSingleUse)
		}
	}

	// Released values may be claimed again, once.
	b.releaseOnce(ctx, "state:"+strconv.Itoa(n-1))
	if fresh, _ := b.claimOnce(ctx, "state:"+strconv.Itoa(n-1), now.Add(time.Minute)); !fresh {
		t.Error("a released value is refused")
	}
	if fresh, _ := b.claimOnce(ctx, "state:"+strconv.Itoa(n-1), now.Add(time.Minute)); fresh {
		t.Error("a value claimed again after release is accepted a third time")
	}

	// Everything has expired: the next claim ages the whole set out.
	now = now.Add(12 * time.Minute)
	if fresh, _ := b.claimOnce(ctx, "later", now.Add(time.Minute)); !fresh {
		t.Fatal("claim after expiry refused")
	}
	if l, q, nb := b.once.len(), b.once.queued, len(b.once.buckets); l != 1 || q != 1 || nb != 1 {
		t.Fatalf("after expiry: %d entries, %d queued, %d buckets; want 1 each", l, q, nb)
	}
}

// TestExpiringSetAgeing: a value is refused until its own time, even in a
// bucket with later values, and accepted after.
func TestExpiringSetAgeing(t *testing.T) {
	s := newExpiringSet(10)
	if !s.add("a", 100, 0) || !s.add("b", 1000, 1) {
		t.Fatal("first adds refused")
	}
	if s.add("a", 100, 50) || !s.has("a", 100) {
		t.Fatal("a accepted twice before its time")
	}
	if !s.add("a", 300, 101) {
		t.Fatal("a refused after its time")
	}
	if s.has("b", 1001) || s.len() != 0 {
		t.Fatalf("entries after everything expired: %d", s.len())
	}
}

func BenchmarkClaimOnceFull(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	sb := Embedded(nil, "bench").(*storageBackend)
	sb.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range maxSingleUse {
		_, _ = sb.claimOnce(ctx, "fill:"+strconv.Itoa(i), now.Add(10*time.Minute))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = sb.claimOnce(ctx, "k:"+strconv.Itoa(i), now.Add(10*time.Minute))
	}
}

// BenchmarkRevocationLookup1M checks a session against a store holding a
// million revoked sids (and reports the memory each one takes).
func BenchmarkRevocationLookup1M(b *testing.B) {
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a, err := New(context.Background(), Embedded(&certmagic.FileStorage{Path: b.TempDir()}, "bench"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	until := time.Now().Add(time.Hour).Unix()
	a.mu.Lock()
	for i := range n {
		a.sids["ses_"+strconv.Itoa(i)] = until
	}
	a.mu.Unlock()
	runtime.GC()
	runtime.ReadMemStats(&after)
	type session struct {
		ID, Subject, SID string
		Created          int64
	}
	live := &session{ID: "sess-live", Subject: "usr_live", SID: "ses_live", Created: time.Now().Unix()}
	dead := &session{ID: "sess-dead", Subject: "usr_dead", SID: "ses_123456", Created: time.Now().Unix()}
	revoked := func(s *session) bool { return a.Revoked(s.ID, s.SID, s.Subject, s.Created) }
	if revoked(live) || !revoked(dead) {
		b.Fatal("revocation lookup is wrong")
	}
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if revoked(live) {
			b.Fatal("live session reported revoked")
		}
	}
	// After the loop: ResetTimer would discard a metric reported before it.
	b.ReportMetric(perEntry, "heap-bytes/entry")
}

// pending is how many refresh calls are kept for token.
func (s *Store) pending(token string) int {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if _, ok := s.refreshes[token]; ok {
		return 1
	}
	return 0
}
