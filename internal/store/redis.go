package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"strings"
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
	// DefaultKeyPrefix starts the name of every key the store writes.
	DefaultKeyPrefix = "oidc_auth:"
)

// RedisOptions are the settings of a Redis store beyond its URL. Zero
// values keep what the URL says, or the defaults.
type RedisOptions struct {
	TLSCA         string // PEM file of the CAs that sign the server's certificate
	TLSCert       string // PEM file of the client certificate (with TLSKey)
	TLSKey        string // PEM file of the client certificate's key
	TLSServerName string // name the server's certificate must carry
	DialTimeout   time.Duration
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	KeyPrefix     string // default DefaultKeyPrefix
}

// Redis topologies, as RedisTopology names them.
const (
	TopologySingle   = "single"   // one server (maybe a managed endpoint)
	TopologySentinel = "sentinel" // a primary found through Sentinel
	TopologyCluster  = "cluster"  // a Redis Cluster
)

// RedisTopology tells which go-redis parser reads url: a master_name
// parameter makes it the Sentinel form (redis.ParseFailoverURL: host and
// addr parameters are sentinels), addr parameters without it the Cluster
// form (redis.ParseClusterURL: seed nodes), anything else one server
// (redis.ParseURL).
func RedisTopology(url string) (string, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return "", err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", fmt.Errorf("must be a redis:// or rediss:// URL, got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("missing host")
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		if q.Get("master_name") == "" {
			return "", errors.New("master_name is empty")
		}
		return TopologySentinel, nil
	case q.Has("addr"):
		return TopologyCluster, nil
	}
	return TopologySingle, nil
}

// CheckRedis parses url and reads the TLS files as Redis would, without
// connecting: for configuration checks.
func CheckRedis(url string, o RedisOptions) error {
	c, _, _, err := newRedisClient(url, o)
	if err != nil {
		return err
	}
	return c.Close()
}

// newRedisClient makes the client for url's topology with o applied.
func newRedisClient(url string, o RedisOptions) (_ redis.UniversalClient, topo string, opTimeout time.Duration, err error) {
	if topo, err = RedisTopology(url); err != nil {
		return nil, "", 0, err
	}
	rediss := strings.HasPrefix(url, "rediss:")
	if !rediss && (o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != "" || o.TLSServerName != "") {
		return nil, "", 0, errors.New("tls_ca, tls_cert, tls_key and tls_server_name need a rediss:// URL")
	}
	var longest time.Duration
	timeouts := func(dial, read, write *time.Duration) {
		for _, t := range []struct {
			dst *time.Duration
			set time.Duration
		}{{dial, o.DialTimeout}, {read, o.ReadTimeout}, {write, o.WriteTimeout}} {
			switch {
			case t.set > 0:
				*t.dst = t.set
			case *t.dst == 0: // negative: the URL turned it off
				*t.dst = redisTimeout
			}
			longest = max(longest, *t.dst)
		}
	}
	tlsConf := func(c *tls.Config) (*tls.Config, error) {
		if c == nil {
			return nil, nil
		}
		return o.tlsConfig(c)
	}
	switch topo {
	case TopologySentinel:
		fo, err := redis.ParseFailoverURL(url)
		if err != nil {
			return nil, "", 0, err
		}
		if fo.TLSConfig, err = tlsConf(fo.TLSConfig); err != nil {
			return nil, "", 0, err
		}
		timeouts(&fo.DialTimeout, &fo.ReadTimeout, &fo.WriteTimeout)
		return redis.NewFailoverClient(fo), topo, max(longest, redisTimeout), nil
	case TopologyCluster:
		co, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, "", 0, err
		}
		if co.TLSConfig, err = tlsConf(co.TLSConfig); err != nil {
			return nil, "", 0, err
		}
		timeouts(&co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout)
		return redis.NewClusterClient(co), topo, max(longest, redisTimeout), nil
	}
	so, err := redis.ParseURL(url)
	if err != nil {
		return nil, "", 0, err
	}
	if so.TLSConfig, err = tlsConf(so.TLSConfig); err != nil {
		return nil, "", 0, err
	}
	timeouts(&so.DialTimeout, &so.ReadTimeout, &so.WriteTimeout)
	return redis.NewClient(so), topo, max(longest, redisTimeout), nil
}

// tlsConfig completes the TLS configuration that go-redis made from a
// rediss:// URL with the CA, client certificate and server name.
func (o RedisOptions) tlsConfig(c *tls.Config) (*tls.Config, error) {
	c = c.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if o.TLSServerName != "" {
		c.ServerName = o.TLSServerName
	}
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca: no PEM certificate in %s", o.TLSCA)
		}
		c.RootCAs = pool
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("tls_cert and tls_key go together")
	}
	if o.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls_cert, tls_key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// redisBackend shares revocations, single-use records, sids and refresh
// outcomes among every Caddy instance that uses the same Redis database
// (one server, a Sentinel-managed primary, or a Cluster). Keys live under
// <key prefix><app>: and expire when nothing they describe can be alive.
// In a Cluster the app's name is a hash tag, <key prefix>{<app>}:, so every
// key of an app, and its announcement channel, share one slot: the
// revocations are written with their announcement in one transaction and
// loaded with one SCAN and MGET on the node that holds them. Refresh
// outcomes are stored as the caller seals them.
type redisBackend struct {
	client     redis.UniversalClient
	cluster    bool
	replicated bool // Sentinel: writes wait for a replica
	prefix     string
	timeout    time.Duration // of one operation
	logger     *zap.Logger
	now        func() time.Time

	stop     chan struct{}
	stopOnce sync.Once
}

// Redis returns the backend that shares everything through the Redis at
// url (see RedisTopology for its forms; rediss:// for TLS), under keys
// named after app (see AppID). No connection is made until first use.
func Redis(url, app string, o RedisOptions) (Backend, error) {
	client, topo, timeout, err := newRedisClient(url, o)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	prefix := o.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	b := &redisBackend{
		client:     client,
		cluster:    topo == TopologyCluster,
		replicated: topo == TopologySentinel,
		prefix:     prefix + app + ":",
		timeout:    timeout,
		logger:     zap.NewNop(),
		now:        time.Now,
		stop:       make(chan struct{}),
	}
	if b.cluster {
		b.prefix = prefix + "{" + app + "}:"
	}
	return b, nil
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
	ctx, cancel := context.WithTimeout(ctx, 4*b.timeout)
	defer cancel()
	var out []Revocation
	var node redis.Cmdable = b.client
	if cc, ok := b.client.(*redis.ClusterClient); ok {
		// SCAN reads one node; the app's hash tag puts every key there.
		n, err := cc.MasterForKey(ctx, b.prefix+"rev:")
		if err != nil {
			return nil, err
		}
		node = n
	}
	iter := node.Scan(ctx, 0, b.prefix+"rev:*", 1000).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		vals, err := node.MGet(ctx, keys...).Result()
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
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if b.replicated {
		// Replication is asynchronous: a primary that dies right after
		// acknowledging would take the revocation with it. WAIT, on the
		// connection that wrote it, holds the answer until a replica has
		// it too, so a logout answered 200 survives a failover.
		var wait *redis.Cmd
		_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, b.revKey(rev), raw, ttl)
			p.Publish(ctx, b.channel(), raw)
			wait = p.Do(ctx, "wait", 1, min(b.timeout/2, time.Second).Milliseconds())
			return nil
		})
		if n, _ := wait.Int64(); err == nil && n < 1 {
			b.logger.Warn("revocation recorded on the primary only: no replica acknowledged it")
		}
		return err
	}
	_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, b.revKey(rev), raw, ttl)
		p.Publish(ctx, b.channel(), raw)
		return nil
	})
	return err
}

func (b *redisBackend) claimOnce(ctx context.Context, key string, until time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.client.SetNX(ctx, b.prefix+"once:"+Key(key), 1, until.Sub(b.now())).Result()
}

func (b *redisBackend) releaseOnce(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"once:"+Key(key))
}

func (b *redisBackend) recordSID(ctx context.Context, sid string, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"sid:"+Key(sid), 1, until.Sub(b.now())).Err()
}

func (b *redisBackend) knownSID(ctx context.Context, sid string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
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
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
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
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.client.SetNX(ctx, b.prefix+"refresh-lock:"+key, 1, ttl).Result()
}

func (b *redisBackend) unlock(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	b.client.Del(ctx, b.prefix+"refresh-lock:"+key)
}

func (b *redisBackend) outcome(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	v, err := b.client.Get(ctx, b.prefix+"refreshed:"+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (b *redisBackend) publish(ctx context.Context, key, sealed string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.client.Set(ctx, b.prefix+"refreshed:"+key, sealed, ttl).Err()
}
