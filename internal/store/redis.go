package store

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
)

// redisBackend shares revocations, single-use records, sids and refresh
// outcomes among every Caddy instance that uses the same Redis database.
// Keys live under oidc_auth:<app>: and expire when nothing they describe
// can be alive. Refresh outcomes are stored as the caller seals them.
type redisBackend struct {
	client *redis.Client
	prefix string
	logger *zap.Logger
	now    func() time.Time

	stop     chan struct{}
	stopOnce sync.Once
}

// Redis returns the backend that shares everything through the Redis
// database at url (redis://host:port/db, or rediss:// for TLS), under keys
// named after app (see AppID). No connection is made until first use.
func Redis(url, app string) (Backend, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	return &redisBackend{
		client: redis.NewClient(opts),
		prefix: "oidc_auth:" + app + ":",
		logger: zap.NewNop(),
		now:    time.Now,
		stop:   make(chan struct{}),
	}, nil
}

func (b *redisBackend) kind() string { return "redis" }

func (b *redisBackend) setup(now func() time.Time, logger *zap.Logger) {
	b.now, b.logger = now, logger
}

// A Redis that is down must not stop Caddy; the watcher loads everything
// once it is reachable.
func (b *redisBackend) tolerant() bool { return true }

func (b *redisBackend) revKey(rev Revocation) string {
	return b.prefix + "rev:" + rev.Kind + ":" + Key(rev.Value)
}

func (b *redisBackend) channel() string { return b.prefix + "revocations" }

func (b *redisBackend) load(ctx context.Context) ([]Revocation, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*redisTimeout)
	defer cancel()
	var out []Revocation
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
			var rev Revocation
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

func (b *redisBackend) save(ctx context.Context, rev Revocation) error {
	raw, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	ttl := time.Unix(rev.Until, 0).Sub(b.now())
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
	return b.client.SetNX(ctx, b.prefix+"once:"+Key(key), 1, until.Sub(b.now())).Result()
}

func (b *redisBackend) releaseOnce(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"once:"+Key(key))
}

func (b *redisBackend) recordSID(ctx context.Context, sid string, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"sid:"+Key(sid), 1, until.Sub(b.now())).Err()
}

func (b *redisBackend) knownSID(ctx context.Context, sid string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	n, err := b.client.Exists(ctx, b.prefix+"sid:"+Key(sid)).Result()
	return n > 0, err
}

// watch applies revocations announced by other instances, and reloads
// all of them periodically and after the subscription (re)connects.
func (b *redisBackend) watch(apply func(Revocation)) {
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
				var rev Revocation
				if json.Unmarshal([]byte(msg.Payload), &rev) == nil {
					apply(rev)
				}
			}
		case <-tick.C:
			resync()
		}
	}
}

func (b *redisBackend) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.Ping(ctx).Err()
}

func (b *redisBackend) close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	return b.client.Close()
}

func (b *redisBackend) exchange() refreshExchange { return b }

// lock takes the cluster-wide lock on one refresh token for ttl.
func (b *redisBackend) lock(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.SetNX(ctx, b.prefix+"refresh-lock:"+key, 1, ttl).Result()
}

func (b *redisBackend) unlock(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"refresh-lock:"+key)
}

func (b *redisBackend) outcome(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	v, err := b.client.Get(ctx, b.prefix+"refreshed:"+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (b *redisBackend) publish(ctx context.Context, key, sealed string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"refreshed:"+key, sealed, ttl).Err()
}
