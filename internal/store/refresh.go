package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

const (
	// RefreshGrace is how long the outcome of a refresh is kept for
	// requests that still carry the old refresh token (sent before the
	// browser got the new cookie). With rotating refresh tokens, replaying
	// the old one at the IdP would fail and end the session.
	RefreshGrace = 2 * time.Minute
	// refreshPoll is how often an instance waiting for another one's
	// refresh looks for its outcome.
	refreshPoll = 50 * time.Millisecond
)

// Refresh is the caller's part of a refresh the store coordinates. T is
// the caller's result (its tokens); the store never looks into it, and
// keeps it, in other instances' eyes, only as Seal made it.
type Refresh[T any] struct {
	// Token is the refresh token the session holds.
	Token string
	// Fresh reports whether a result kept from an earlier call with the
	// same Token may be handed out again.
	Fresh func(T) bool
	// Alone refreshes when no other instance shares the store.
	Alone func(ctx context.Context) (T, error)
	// Call calls the IdP with a refresh token: Token, or the one an
	// outcome published by another instance names. It is used when other
	// instances share the store, and when they cannot be reached.
	Call func(ctx context.Context, token string) (T, error)
	// Seal turns the outcome of Call into the value published to the
	// other instances under key, and how long it is kept; "" publishes
	// nothing.
	Seal func(key string, v T, err error) (string, time.Duration)
	// Open reads a value another instance published under key: done says
	// that v and err are the answer; otherwise next, when not "", is the
	// refresh token to call the IdP with.
	Open func(key, sealed string) (v T, done bool, next string, err error)
	// Timeout bounds a call to the IdP: an instance holds a refresh
	// token's lock, and the others wait for its outcome, this long and 5 s.
	Timeout time.Duration
	// Unavailable is the error of a refresh that reached no answer: such
	// an outcome is not kept for later requests. The store wraps it when
	// another instance's outcome does not come in time.
	Unavailable error
}

// refreshExchange is a shared backend's part of a refresh: a lock per
// refresh token, and the outcome its holder publishes for the others.
type refreshExchange interface {
	lock(ctx context.Context, key string, ttl time.Duration) (bool, error)
	unlock(ctx context.Context, key string)
	outcome(ctx context.Context, key string) (string, error)
	publish(ctx context.Context, key, sealed string, ttl time.Duration) error
}

type refreshCall struct {
	done     chan struct{}
	v        any
	err      error
	finished time.Time
}

// Coordinate makes one refresh per refresh token: concurrent requests on
// this instance share one call, and requests that come within
// RefreshGrace with the same (now rotated) token get its outcome unless
// it is no longer Fresh. With a shared backend, one instance of the
// cluster calls the IdP and the others take its published outcome; if
// the backend fails, each instance calls on its own (a rotating IdP may
// then refuse one of them). now is the caller's time of the request.
// shared tells whether the result came from another request's call.
func Coordinate[T any](ctx context.Context, s *Store, now time.Time, r Refresh[T]) (v T, shared bool, err error) {
	res, shared, err := s.coalesce(r.Token, now, r.Unavailable, func(v any) bool {
		t, _ := v.(T)
		return r.Fresh(t)
	}, func() (any, error) {
		if x := s.backend.exchange(); x != nil {
			return exchange(ctx, s, x, r)
		}
		return r.Alone(ctx)
	})
	v, _ = res.(T)
	return v, shared, err
}

// coalesce runs fn once for key, however many requests ask at the same
// time, and hands its outcome to requests that arrive within
// RefreshGrace, if it failed or is still fresh.
func (s *Store) coalesce(key string, now time.Time, unavailable error, fresh func(any) bool, fn func() (any, error)) (any, bool, error) {
	s.refreshMu.Lock()
	if now.Sub(s.lastSweep) > RefreshGrace {
		for k, c := range s.refreshes {
			if !c.finished.IsZero() && now.Sub(c.finished) > RefreshGrace {
				delete(s.refreshes, k)
			}
		}
		s.lastSweep = now
	}
	if c, ok := s.refreshes[key]; ok {
		select {
		case <-c.done:
			if now.Sub(c.finished) <= RefreshGrace && (c.err != nil || fresh(c.v)) {
				s.refreshMu.Unlock()
				return c.v, true, c.err
			}
		default:
			s.refreshMu.Unlock()
			<-c.done
			return c.v, true, c.err
		}
	}
	c := &refreshCall{done: make(chan struct{})}
	s.refreshes[key] = c
	s.refreshMu.Unlock()

	c.v, c.err = fn()
	s.refreshMu.Lock()
	c.finished = s.now()
	if c.err != nil && errors.Is(c.err, unavailable) {
		// Not an answer from the IdP: let the next request try again.
		delete(s.refreshes, key)
	}
	s.refreshMu.Unlock()
	close(c.done)
	return c.v, false, c.err
}

// exchange makes one refresh per refresh token in the whole cluster: the
// instance holding the lock calls the IdP and publishes the outcome; the
// others wait for it.
func exchange[T any](ctx context.Context, s *Store, x refreshExchange, r Refresh[T]) (T, error) {
	var zero T
	key := Key(r.Token)
	ttl := r.Timeout + 5*time.Second
	deadline := s.now().Add(ttl)
	for s.now().Before(deadline) {
		use := r.Token
		sealed, err := x.outcome(ctx, key)
		if err != nil {
			s.logger.Warn("store unreachable; refreshing without cluster coordination", zap.Error(err))
			return r.Call(ctx, r.Token)
		}
		if sealed != "" {
			v, done, next, err := r.Open(key, sealed)
			if done {
				return v, err
			}
			if next != "" {
				use = next
			}
		}
		locked, err := x.lock(ctx, key, ttl)
		if err != nil {
			s.logger.Warn("store unreachable; refreshing without cluster coordination", zap.Error(err))
			return r.Call(ctx, use)
		}
		if locked {
			v, err := r.Call(ctx, use)
			if out, keep := r.Seal(key, v, err); out != "" {
				if perr := x.publish(ctx, key, out, keep); perr != nil {
					s.logger.Warn("cannot share refresh outcome", zap.Error(perr))
				}
			}
			x.unlock(ctx, key)
			return v, err
		}
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%w: %v", r.Unavailable, ctx.Err())
		case <-time.After(refreshPoll):
		}
	}
	return zero, fmt.Errorf("%w: timed out waiting for another instance's refresh", r.Unavailable)
}
