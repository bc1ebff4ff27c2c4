package store

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// In Redis the registry is a hash per session (its record and last-seen
// time, expiring with the session) and sorted sets of session IDs per
// user, per IdP session and overall, scored by the session's end: trimming
// them drops the expired first, then the soonest to end.

func (b *redisBackend) sessKey(id string) string     { return b.prefix + "sess:" + id }
func (b *redisBackend) userKey(sub string) string    { return b.prefix + "user:" + Key(sub) }
func (b *redisBackend) sidSessKey(sid string) string { return b.prefix + "sidsess:" + Key(sid) }
func (b *redisBackend) allSessKey() string           { return b.prefix + "sessions" }

func (b *redisBackend) recordSession(ctx context.Context, e SessionEntry, now int64) error {
	ttl := time.Duration(e.Until-now) * time.Second
	if ttl <= 0 {
		return nil
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	score := float64(e.Until)
	stale := "(" + strconv.FormatInt(now, 10)
	sets := []string{b.userKey(e.Subject), b.allSessKey()}
	if e.SID != "" {
		sets = append(sets, b.sidSessKey(e.SID))
	}
	var cards []*redis.IntCmd
	_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, b.sessKey(e.ID), "e", raw, "l", e.LastSeen)
		p.Expire(ctx, b.sessKey(e.ID), ttl)
		for _, set := range sets {
			p.ZAdd(ctx, set, redis.Z{Score: score, Member: e.ID})
			p.ZRemRangeByScore(ctx, set, "-inf", stale)
			// The set lives as long as its newest session, which, with
			// one session_lifetime per app, ends last. (EXPIRE GT would
			// need Redis 7.)
			p.Expire(ctx, set, ttl)
		}
		cards = append(cards, p.ZCard(ctx, sets[0]), p.ZCard(ctx, sets[1]))
		return nil
	})
	if err != nil {
		return err
	}
	// Past a bound, the sessions that end soonest lose their records.
	for i, limit := range []int64{MaxSessionsPerUser, MaxSessions} {
		if n := cards[i].Val(); n > limit {
			popped, err := b.client.ZPopMin(ctx, sets[i], n-limit).Result()
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(popped))
			for _, z := range popped {
				if id, ok := z.Member.(string); ok {
					keys = append(keys, b.sessKey(id))
				}
			}
			if len(keys) > 0 {
				if err := b.client.Del(ctx, keys...).Err(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (b *redisBackend) touchSession(ctx context.Context, id string, seen int64) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	// Only an existing record is touched: HSET on a key that expired
	// would make one without an expiry.
	return touchScript.Run(ctx, b.client, []string{b.sessKey(id)}, seen).Err()
}

var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  local old = tonumber(redis.call('HGET', KEYS[1], 'l') or '0')
  if tonumber(ARGV[1]) > old then redis.call('HSET', KEYS[1], 'l', ARGV[1]) end
end
return 0`)

func (b *redisBackend) session(ctx context.Context, id string, now int64) (SessionEntry, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	vals, err := b.client.HMGet(ctx, b.sessKey(id), "e", "l").Result()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return SessionEntry{}, false, nil
		}
		return SessionEntry{}, false, err
	}
	e, ok := decodeEntry(vals)
	if !ok || e.Until < now {
		return SessionEntry{}, false, nil
	}
	return e, true, nil
}

func decodeEntry(vals []any) (SessionEntry, bool) {
	var e SessionEntry
	raw, ok := vals[0].(string)
	if !ok || json.Unmarshal([]byte(raw), &e) != nil {
		return e, false
	}
	if l, ok := vals[1].(string); ok {
		if seen, err := strconv.ParseInt(l, 10, 64); err == nil && seen > e.LastSeen {
			e.LastSeen = seen
		}
	}
	return e, true
}

func (b *redisBackend) sessions(ctx context.Context, sub string, now int64) ([]SessionEntry, error) {
	return b.listSet(ctx, b.userKey(sub), now)
}

func (b *redisBackend) sessionsOfSID(ctx context.Context, sid string, now int64) ([]SessionEntry, error) {
	return b.listSet(ctx, b.sidSessKey(sid), now)
}

func (b *redisBackend) listSet(ctx context.Context, set string, now int64) ([]SessionEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	ids, err := b.client.ZRangeByScore(ctx, set, &redis.ZRangeBy{Min: strconv.FormatInt(now, 10), Max: "+inf"}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, b.sessKey(id), "e", "l")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []SessionEntry
	for _, c := range cmds {
		if e, ok := decodeEntry(c.Val()); ok && e.Until >= now {
			out = append(out, e)
		}
	}
	return out, nil
}

func (b *redisBackend) forgetSessions(ctx context.Context, list []SessionEntry) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range list {
			p.Del(ctx, b.sessKey(e.ID))
			p.ZRem(ctx, b.userKey(e.Subject), e.ID)
			p.ZRem(ctx, b.allSessKey(), e.ID)
			if e.SID != "" {
				p.ZRem(ctx, b.sidSessKey(e.SID), e.ID)
			}
		}
		return nil
	})
	return err
}
