package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

var errTestUnavailable = errors.New("idp unavailable")

// fakeExchange is a shared backend's refresh exchange held in memory, as
// another instance would see it.
type fakeExchange struct {
	mu        sync.Mutex
	outcomes  map[string]string
	locks     map[string]bool
	failRead  bool
	published []string
}

func (x *fakeExchange) lock(_ context.Context, key string, _ time.Duration) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.locks[key] {
		return false, nil
	}
	x.locks[key] = true
	return true, nil
}

func (x *fakeExchange) unlock(_ context.Context, key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.locks, key)
}

func (x *fakeExchange) outcome(_ context.Context, key string) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.failRead {
		return "", errors.New("connection refused")
	}
	return x.outcomes[key], nil
}

func (x *fakeExchange) publish(_ context.Context, key, sealed string, _ time.Duration) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.outcomes[key] = sealed
	x.published = append(x.published, sealed)
	return nil
}

// sharedBackend is the embedded backend with a cluster's exchange.
type sharedBackend struct {
	*storageBackend
	x *fakeExchange
}

func (b sharedBackend) exchange() refreshExchange { return b.x }

func newSharedStore(t *testing.T, now func() time.Time) (*Store, *fakeExchange) {
	x := &fakeExchange{outcomes: map[string]string{}, locks: map[string]bool{}}
	s, err := New(t.Context(), sharedBackend{Embedded(&certmagic.FileStorage{Path: t.TempDir()}, "test").(*storageBackend), x}, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s, x
}

// testRefresh records the tokens Call is called with; a published value
// "done:<v>" is a final answer, "next:<t>" names the token to use.
func testRefresh(token string, calls *[]string) Refresh[string] {
	var mu sync.Mutex
	return Refresh[string]{
		Token: token,
		Fresh: func(string) bool { return true },
		Alone: func(context.Context) (string, error) { return "alone", nil },
		Call: func(_ context.Context, use string) (string, error) {
			mu.Lock()
			*calls = append(*calls, use)
			mu.Unlock()
			return "tokens-from-" + use, nil
		},
		Seal: func(_ string, v string, err error) (string, time.Duration) {
			if err != nil {
				return "", 0
			}
			return "done:" + v, time.Minute
		},
		Open: func(_, sealed string) (string, bool, string, error) {
			switch {
			case len(sealed) > 5 && sealed[:5] == "done:":
				return sealed[5:], true, "", nil
			case len(sealed) > 5 && sealed[:5] == "next:":
				return "", false, sealed[5:], nil
			}
			return "", false, "", nil
		},
		Timeout:     time.Second,
		Unavailable: errTestUnavailable,
	}
}

// TestCoordinateAlone: without other instances, concurrent requests with
// one refresh token share one call, and a later request within the grace
// gets the same outcome.
func TestCoordinateAlone(t *testing.T) {
	s, err := New(t.Context(), Embedded(&certmagic.FileStorage{Path: t.TempDir()}, "test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	release := make(chan struct{})
	r := Refresh[string]{
		Token: "rt",
		Fresh: func(string) bool { return true },
		Alone: func(context.Context) (string, error) {
			calls.Add(1)
			<-release
			return "tokens", nil
		},
		Unavailable: errTestUnavailable,
	}
	var wg sync.WaitGroup
	var sharedN atomic.Int32
	for range 10 {
		wg.Go(func() {
			v, shared, err := Coordinate(t.Context(), s, time.Now(), r)
			if err != nil || v != "tokens" {
				t.Errorf("got %q, %v", v, err)
			}
			if shared {
				sharedN.Add(1)
			}
		})
	}
	for s.pending("rt") == 0 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if v, shared, _ := Coordinate(t.Context(), s, time.Now(), r); v != "tokens" || !shared {
		t.Errorf("within the grace: %q shared=%v, want the kept outcome", v, shared)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("calls: %d, want 1", n)
	}
	if n := sharedN.Load(); n != 9 {
		t.Errorf("shared outcomes: %d, want 9", n)
	}
}

// TestCoordinateExchange: with other instances, an outcome one of them
// published is taken without calling the IdP, a "next" token is used for
// the call, and a store that cannot be read means calling alone.
func TestCoordinateExchange(t *testing.T) {
	t.Run("published answer", func(t *testing.T) {
		s, x := newSharedStore(t, nil)
		x.outcomes[Key("rt")] = "done:theirs"
		var calls []string
		v, _, err := Coordinate(t.Context(), s, time.Now(), testRefresh("rt", &calls))
		if err != nil || v != "theirs" || len(calls) != 0 {
			t.Fatalf("got %q, %v, calls %v; want their outcome and no call", v, err, calls)
		}
	})
	t.Run("next token", func(t *testing.T) {
		s, x := newSharedStore(t, nil)
		x.outcomes[Key("rt")] = "next:rt2"
		var calls []string
		v, _, err := Coordinate(t.Context(), s, time.Now(), testRefresh("rt", &calls))
		if err != nil || v != "tokens-from-rt2" || len(calls) != 1 || calls[0] != "rt2" {
			t.Fatalf("got %q, %v, calls %v; want one call with rt2", v, err, calls)
		}
		if len(x.published) != 1 || x.published[0] != "done:tokens-from-rt2" || len(x.locks) != 0 {
			t.Fatalf("published %v, locks %v; want the outcome and the lock released", x.published, x.locks)
		}
	})
	t.Run("store down", func(t *testing.T) {
		s, x := newSharedStore(t, nil)
		x.failRead = true
		var calls []string
		v, _, err := Coordinate(t.Context(), s, time.Now(), testRefresh("rt", &calls))
		if err != nil || v != "tokens-from-rt" || len(calls) != 1 {
			t.Fatalf("got %q, %v, calls %v; want one call of its own", v, err, calls)
		}
	})
	t.Run("lock never released", func(t *testing.T) {
		var mu sync.Mutex
		now := time.Unix(1_800_000_000, 0)
		s, x := newSharedStore(t, func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Second)
			return now
		})
		x.locks[Key("rt")] = true
		var calls []string
		_, _, err := Coordinate(t.Context(), s, time.Now(), testRefresh("rt", &calls))
		if !errors.Is(err, errTestUnavailable) || len(calls) != 0 {
			t.Fatalf("err %v, calls %v; want unavailable and no call", err, calls)
		}
		// Not an answer: the next request tries again.
		if s.pending("rt") != 0 {
			t.Fatal("an unavailable outcome is kept")
		}
	})
}
