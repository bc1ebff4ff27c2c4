package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

const (
	redisTimeout = 2 * time.Second
	// Revocations are announced on a channel; a full reload this often
	// catches any announcement missed while the connection was down.
	redisResync = 30 * time.Second
	// How long one instance may hold a refresh token's lock, and how long
	// the others wait for its outcome.
	refreshLockTTL = idpTimeout + 5*time.Second
	refreshPoll    = 50 * time.Millisecond
)

// redisBackend shares revocations, jti records and refresh outcomes among
// every Caddy instance that uses the same Redis database. Keys live under
// oidc_auth:<app>: and expire when nothing they describe can be alive.
// Refresh outcomes hold tokens and are stored sealed with the app's
// cookie key, bound to their key and user, so Redis never sees a token in
// clear and cannot hand one user's tokens to another.
type redisBackend struct {
	client *redis.Client
	prefix string
	logger *zap.Logger

	stop     chan struct{}
	stopOnce sync.Once
}

func newRedisBackend(rawURL, app string, logger *zap.Logger) (*redisBackend, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	return &redisBackend{
		client: redis.NewClient(opts),
		prefix: "oidc_auth:" + app + ":",
		logger: logger,
		stop:   make(chan struct{}),
	}, nil
}

func (b *redisBackend) revKey(rev revocation) string {
	return b.prefix + "rev:" + rev.Kind + ":" + hashKey(rev.Value)
}

func (b *redisBackend) channel() string { return b.prefix + "revocations" }

func (b *redisBackend) load(ctx context.Context) ([]revocation, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*redisTimeout)
	defer cancel()
	var out []revocation
	iter := b.client.Scan(ctx, 0, b.prefix+"rev:*", 1000).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		vals, err := b.client.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for _, v := range vals {
			s, ok := v.(string)
			var rev revocation
			if ok && json.Unmarshal([]byte(s), &rev) == nil {
				out = append(out, rev)
			}
		}
		keys = keys[:0]
		return nil
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func (b *redisBackend) save(ctx context.Context, rev revocation) error {
	raw, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	ttl := time.Until(time.Unix(rev.Until, 0))
	if ttl <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, b.revKey(rev), raw, ttl)
		p.Publish(ctx, b.channel(), raw)
		return nil
	})
	return err
}

func (b *redisBackend) claimOnce(ctx context.Context, key string, until time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.SetNX(ctx, b.prefix+"once:"+hashKey(key), 1, time.Until(until)).Result()
}

func (b *redisBackend) releaseOnce(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"once:"+hashKey(key))
}

func (b *redisBackend) recordSID(ctx context.Context, sid string, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"sid:"+hashKey(sid), 1, time.Until(until)).Err()
}

func (b *redisBackend) knownSID(ctx context.Context, sid string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	n, err := b.client.Exists(ctx, b.prefix+"sid:"+hashKey(sid)).Result()
	return n > 0, err
}

// watch applies revocations announced by other instances, and reloads
// all of them periodically and after the subscription (re)connects.
func (b *redisBackend) watch(apply func(revocation)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-b.stop
		cancel()
	}()
	sub := b.client.Subscribe(ctx, b.channel())
	defer sub.Close()
	// With subscription confirmations too: each one (the first, and every
	// one after a reconnect) triggers a full reload, since announcements
	// made while the connection was down are lost.
	msgs := sub.ChannelWithSubscriptions()
	tick := time.NewTicker(redisResync)
	defer tick.Stop()
	resync := func() {
		revs, err := b.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.logger.Warn("revocation store unreachable", zap.Error(err))
			}
			return
		}
		for _, rev := range revs {
			apply(rev)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-msgs:
			if !ok {
				return
			}
			switch msg := msg.(type) {
			case *redis.Subscription:
				if msg.Kind == "subscribe" {
					resync()
				}
			case *redis.Message:
				var rev revocation
				if json.Unmarshal([]byte(msg.Payload), &rev) == nil {
					apply(rev)
				}
			}
		case <-tick.C:
			resync()
		}
	}
}

func (b *redisBackend) close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	return b.client.Close()
}

// lockRefresh takes the cluster-wide lock on one refresh token.
func (b *redisBackend) lockRefresh(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.SetNX(ctx, b.prefix+"refresh-lock:"+key, 1, refreshLockTTL).Result()
}

func (b *redisBackend) unlockRefresh(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"refresh-lock:"+key)
}

func (b *redisBackend) refreshOutcome(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	v, err := b.client.Get(ctx, b.prefix+"refreshed:"+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (b *redisBackend) storeRefreshOutcome(ctx context.Context, key, sealed string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"refreshed:"+key, sealed, ttl).Err()
}

// sharedOutcome is a refresh outcome as kept in Redis, sealed.
type sharedOutcome struct {
	Tokens  *tokenSet `json:"t,omitempty"`
	Refused string    `json:"r,omitempty"`
	// Next is the refresh token of an unverifiedRefresh: the next try
	// refreshes with it.
	Next string `json:"n,omitempty"`
}

// refreshAcrossInstances makes one refresh per refresh token in the whole
// cluster: the instance holding the lock calls the IdP and publishes the
// outcome; the others wait for it. If Redis fails, each instance falls
// back to refreshing on its own (a rotating IdP may then refuse one of
// them, which ends that session).
func (m *OIDCAuth) refreshAcrossInstances(ctx context.Context, refreshToken, sub string) (*tokenSet, error) {
	b := m.app.shared
	key := hashKey(refreshToken)
	deadline := time.Now().Add(refreshLockTTL)
	for time.Now().Before(deadline) {
		use := refreshToken
		sealed, err := b.refreshOutcome(ctx, key)
		if err != nil {
			m.logger.Warn("store unreachable; refreshing without cluster coordination", zap.Error(err))
			return m.refresh(ctx, refreshToken, sub)
		}
		if sealed != "" {
			if out := m.openOutcome(sealed, key, sub); out != nil {
				if out.Refused != "" {
					return nil, &refreshFailed{Err: errors.New(out.Refused)}
				}
				if out.Tokens != nil && out.Tokens.Subject == sub && time.Now().Before(refreshTime(time.Now(), out.Tokens.Expiry)) {
					return out.Tokens, nil
				}
				if out.Next != "" {
					use = out.Next
				}
			}
		}
		locked, err := b.lockRefresh(ctx, key)
		if err != nil {
			m.logger.Warn("store unreachable; refreshing without cluster coordination", zap.Error(err))
			return m.refresh(ctx, use, sub)
		}
		if locked {
			ts, err := m.refresh(ctx, use, sub)
			var out sharedOutcome
			var refused *refreshFailed
			var unverified *unverifiedRefresh
			ttl := refreshGrace
			switch {
			case err == nil:
				out.Tokens = ts
			case errors.As(err, &refused):
				out.Refused = refused.Err.Error()
			case errors.As(err, &unverified):
				out.Next, ttl = unverified.Next, m.sessionLifetime
			}
			if out.Tokens != nil || out.Refused != "" || out.Next != "" {
				if raw, merr := json.Marshal(out); merr == nil {
					if serr := b.storeRefreshOutcome(ctx, key, m.cookies.Seal(m.outcomePurpose(key, sub), raw), ttl); serr != nil {
						m.logger.Warn("cannot share refresh outcome", zap.Error(serr))
					}
				}
			}
			b.unlockRefresh(ctx, key)
			return ts, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", errIdPUnavailable, ctx.Err())
		case <-time.After(refreshPoll):
		}
	}
	return nil, fmt.Errorf("%w: timed out waiting for another instance's refresh", errIdPUnavailable)
}

// outcomePurpose binds a sealed refresh outcome to the Redis key it is
// stored under (the refresh token's hash), the session's user and this
// client: whoever can write to Redis can move an outcome to another key,
// but it then no longer opens, so one user's tokens never become
// another's session.
func (m *OIDCAuth) outcomePurpose(key, sub string) string {
	return purposeRefresh + "\x00" + key + "\x00" + sub + "\x00" + m.ClientID
}

// openOutcome opens a refresh outcome kept under key for a session of
// sub; nil when it was sealed for another key, user or client, or
// tampered with.
func (m *OIDCAuth) openOutcome(sealed, key, sub string) *sharedOutcome {
	raw, err := m.cookies.Open(m.outcomePurpose(key, sub), sealed)
	if err != nil {
		return nil
	}
	var out sharedOutcome
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return &out
}
