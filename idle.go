package oidcauth

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// checkIdleTimeout checks idle_timeout.
func checkIdleTimeout(idle caddy.Duration) error {
	d := time.Duration(idle)
	if d < 0 || (d > 0 && d < time.Second) {
		return fmt.Errorf("idle_timeout: must be at least 1s, got %s", d)
	}
	return nil
}

// touchInterval is how stale a session's recorded activity may be before a
// request records it again (in the cookie and the registry): a minute, or
// a quarter of a short idle_timeout, so that the timeout stays accurate
// to within that and the cookie is not rewritten on every request.
func (tk *tokens) touchInterval() int64 {
	return int64(min(time.Minute, max(tk.idle/4, time.Second)) / time.Second)
}

// lastActive is the session's latest recorded activity, by its cookie.
func lastActive(s *session) int64 {
	return max(s.Seen, s.Created)
}

// idleOver reports whether s has had no request for idle_timeout. The
// cookie answers on the hot path; only when it says the session is idle
// is the registry asked, which holds activity recorded by every instance
// (and by requests whose rewritten cookie the client never kept).
func (tk *tokens) idleOver(ctx context.Context, s *session, now int64) bool {
	idle := int64(tk.idle / time.Second)
	if now-lastActive(s) < idle {
		return false
	}
	e, ok, err := tk.app.store.Session(ctx, s.ID)
	if err != nil {
		tk.logger.Warn("session registry unreachable; idle timeout decided by the cookie", zap.Error(err))
		return true
	}
	return !ok || e.Subject != s.Subject || now-e.LastSeen >= idle
}

// touch records activity of s at now in the registry, off the request's
// path: it happens at most once per touchInterval per session.
func (tk *tokens) touch(s *session, now int64) {
	st, id := tk.app.store, s.ID
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := st.TouchSession(ctx, id, now); err != nil {
			tk.logger.Debug("cannot record session activity", zap.Error(err))
		}
	}()
}
