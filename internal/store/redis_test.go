package store

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/store/storetest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testRedis is a redis-server started for one test or benchmark.
type testRedis struct {
	url  string       // redis:// or rediss://
	opts RedisOptions // the TLS files for rediss
	ca   string
}

// startRedis runs a redis-server on a free loopback port; with tls, it
// serves TLS only, with a certificate from a CA made here, and asks for a
// client certificate. Extra arguments go to redis-server.
func startRedis(tb testing.TB, withTLS bool, extra ...string) testRedis {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server not installed (scripts/setup.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := tb.TempDir()
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	r := testRedis{url: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	if withTLS {
		ca, cert, key := storetest.WritePKI(tb, dir)
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes")
		r = testRedis{
			url:  fmt.Sprintf("rediss://127.0.0.1:%d/0", port),
			opts: RedisOptions{TLSCA: ca, TLSCert: cert, TLSKey: key},
			ca:   ca,
		}
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting redis-server: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return r
		}
		if i == 200 {
			tb.Fatalf("redis-server on port %d did not start", port)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func openRedisStore(tb testing.TB, url string, o RedisOptions) *Store {
	tb.Helper()
	b, err := Redis(url, "app", o)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := New(context.Background(), b, Options{Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// Over TLS with the test CA and a client certificate, as an ACL user: a
// revocation made by one store is announced to another, and single-use
// values are single use. Without the CA, or with another server name, the
// connection is refused.
func TestRedisTLSWithACLUser(t *testing.T) {
	r := startRedis(t, true, "--user", "default", "off",
		"--user", "caddy", "on", ">pw", "~team-a:*", "&team-a:*", "+@all")
	url := strings.Replace(r.url, "rediss://", "rediss://caddy:pw@", 1)
	o := r.opts
	o.KeyPrefix = "team-a:"
	a, b := openRedisStore(t, url, o), openRedisStore(t, url, o)
	ctx := context.Background()
	if err := a.Ping(ctx); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
	if err := a.Revoke(ctx, Revocation{Kind: RevokeSID, Value: "sid-1", Until: time.Now().Add(time.Hour).Unix()}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.SIDRevoked("sid-1") {
		if time.Now().After(deadline) {
			t.Fatal("the revocation was not announced to the other store")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fresh, err := a.ClaimOnce(ctx, "jti:1", time.Now().Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("first claim: %v %v", fresh, err)
	}
	if fresh, err := b.ClaimOnce(ctx, "jti:1", time.Now().Add(time.Minute)); fresh || err != nil {
		t.Fatalf("second claim on the other store: %v %v", fresh, err)
	}

	// The ACL user may touch team-a:* only: the default prefix is refused.
	other := openRedisStore(t, url, r.opts)
	if _, err := other.ClaimOnce(ctx, "jti:2", time.Now().Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("a key outside the ACL user's pattern: %v", err)
	}

	for name, o := range map[string]RedisOptions{
		"without the CA":        {TLSCert: r.opts.TLSCert, TLSKey: r.opts.TLSKey},
		"with another name":     {TLSCA: r.ca, TLSCert: r.opts.TLSCert, TLSKey: r.opts.TLSKey, TLSServerName: "other.example"},
		"without a client cert": {TLSCA: r.ca},
	} {
		o.DialTimeout = time.Second
		st := openRedisStore(t, url, o)
		if err := st.Ping(ctx); err == nil {
			t.Errorf("%s: the connection was accepted", name)
		}
	}
	// The certificate carries redis.internal too.
	o = r.opts
	o.TLSServerName = "redis.internal"
	if err := openRedisStore(t, url, o).Ping(ctx); err != nil {
		t.Errorf("tls_server_name redis.internal: %v", err)
	}
}

func TestRedisTopology(t *testing.T) {
	for url, want := range map[string]string{
		"redis://r:6379/0":                             TopologySingle,
		"rediss://u:p@r:6380/2?dial_timeout=3s":        TopologySingle,
		"redis://s1:26379?master_name=m":               TopologySentinel,
		"redis://s1:26379?master_name=m&addr=s2:26379": TopologySentinel,
		"redis://n1:7000?addr=n2:7000":                 TopologyCluster,
	} {
		if got, err := RedisTopology(url); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", url, got, err, want)
		}
	}
	// A Cluster's keys share the app's hash tag; elsewhere the names stay
	// as they were.
	c, _ := Redis("redis://n1:7000?addr=n2:7000", "app", RedisOptions{})
	s, _ := Redis("redis://r:6379", "app", RedisOptions{KeyPrefix: "x:"})
	if p := c.(*redisBackend).prefix; p != "oidc_auth:{app}:" {
		t.Errorf("cluster prefix %q", p)
	}
	if p := s.(*redisBackend).prefix; p != "x:app:" {
		t.Errorf("single prefix %q", p)
	}
	if !strings.HasPrefix(c.(*redisBackend).channel(), "oidc_auth:{app}:") {
		t.Errorf("the cluster's channel %q has not the app's hash tag", c.(*redisBackend).channel())
	}
}

// BenchmarkRedisStore measures the store's round trips to a local
// redis-server, plain and over TLS:
//
//	go test -run '^$' -bench RedisStore -benchmem ./internal/store
func BenchmarkRedisStore(b *testing.B) {
	for _, withTLS := range []bool{false, true} {
		name := "plain"
		if withTLS {
			name = "tls"
		}
		r := startRedis(b, withTLS)
		st := openRedisStore(b, r.url, r.opts)
		ctx := context.Background()
		until := time.Now().Add(time.Hour)
		b.Run(name+"/claim_once", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := st.ClaimOnce(ctx, "jti:"+strconv.Itoa(i), until); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/revoke", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if err := st.Revoke(ctx, Revocation{Kind: RevokeSession, Value: strconv.Itoa(i), Until: until.Unix()}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// With Sentinel, a revocation is acknowledged once a replica has it: the
// save waits for the replica (WAIT), and says so when none answered.
func TestRedisRevocationWaitsForReplica(t *testing.T) {
	primary := startRedis(t, false)
	port := strings.TrimSuffix(strings.TrimPrefix(primary.url, "redis://127.0.0.1:"), "/0")
	replica := startRedis(t, false, "--replicaof", "127.0.0.1", port)
	rb, err := Redis(primary.url, "app", RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := rb.(*redisBackend)
	b.replicated = true // as the Sentinel form sets it; one server plays the primary here
	core, logs := observer.New(zap.WarnLevel)
	st, err := New(context.Background(), b, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	replicaClient := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(replica.url, "redis://"), "/0")})
	defer replicaClient.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(replicaClient.Info(ctx, "replication").Val(), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not sync")
		}
		time.Sleep(50 * time.Millisecond)
	}

	rev := Revocation{Kind: RevokeSID, Value: "sid-1", Until: time.Now().Add(time.Hour).Unix()}
	if err := st.Revoke(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("no replica").Len() != 0 {
		t.Error("warned although the replica is up")
	}
	// The replica stops answering: the revocation is recorded on the primary
	// after a bounded wait, with a warning.
	if err := replicaClient.Do(ctx, "client", "pause", "3000", "write").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rev.Value = "sid-2"
	if err := st.Revoke(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("no replica").Len() != 1 {
		t.Errorf("no warning after a revocation no replica acknowledged (took %s)", time.Since(start))
	}
}

// An operation may take as long as the longest timeout, from the block or
// the URL; a timeout the URL turns off stays off.
func TestRedisTimeouts(t *testing.T) {
	for _, tt := range []struct {
		url  string
		o    RedisOptions
		want time.Duration
	}{
		{"redis://r:6379", RedisOptions{}, redisTimeout},
		{"redis://r:6379", RedisOptions{ReadTimeout: 5 * time.Second}, 5 * time.Second},
		{"redis://r:6379?dial_timeout=7s", RedisOptions{}, 7 * time.Second},
		{"redis://s:26379?master_name=m&read_timeout=4s", RedisOptions{}, 4 * time.Second},
		{"redis://n1:7000?addr=n2:7000", RedisOptions{WriteTimeout: 3 * time.Second}, 3 * time.Second},
	} {
		c, _, got, err := newRedisClient(tt.url, tt.o)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if got != tt.want {
			t.Errorf("%s %+v: operation timeout %s, want %s", tt.url, tt.o, got, tt.want)
		}
	}
	c, _, _, err := newRedisClient("redis://r:6379?read_timeout=-1", RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// go-redis reads -1 as "no deadline" and keeps it as 0.
	if rt := c.(*redis.Client).Options().ReadTimeout; rt != 0 {
		t.Errorf("read_timeout=-1 became %s, want none", rt)
	}
}

// startRedisCluster runs three redis-server primaries joined into a Redis
// Cluster and returns the store URL of the Cluster form.
func startRedisCluster(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Skip("redis-cli not installed (scripts/setup.sh installs it)")
	}
	var addrs []string
	for range 3 {
		// The cluster bus listens on port+10000: keep below 55536.
		var port int
		for {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
			if port < 55536 {
				break
			}
		}
		dir := tb.TempDir()
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			tb.Skip("redis-server not installed (scripts/setup.sh installs it)")
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"))
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for i := 0; ; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			if i == 200 {
				tb.Fatalf("redis-server on %s did not start", addr)
			}
			time.Sleep(25 * time.Millisecond)
		}
		addrs = append(addrs, addr)
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for i := 0; ; i++ {
		ok := true
		for _, a := range addrs {
			_, port, _ := net.SplitHostPort(a)
			info, _ := exec.Command("redis-cli", "-p", port, "CLUSTER", "INFO").Output()
			ok = ok && strings.Contains(string(info), "cluster_state:ok")
		}
		if ok {
			break
		}
		if i == 400 {
			tb.Fatal("the cluster did not become ok")
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Sprintf("redis://%s?addr=%s&addr=%s", addrs[0], addrs[1], addrs[2])
}

// In a Redis Cluster: revocations are loaded by a store that starts later
// (one scan on the node of the app's slot) and announced to running ones;
// single-use values and the refresh lock and outcome work across slots.
func TestRedisClusterStore(t *testing.T) {
	url := startRedisCluster(t)
	ctx := context.Background()
	a, b := openRedisStore(t, url, RedisOptions{}), openRedisStore(t, url, RedisOptions{})
	for k := range 50 { // spread over many values, so a wrong slot would show
		if err := a.Revoke(ctx, Revocation{Kind: RevokeSID, Value: "sid-" + strconv.Itoa(k), Until: time.Now().Add(time.Hour).Unix()}); err != nil {
			t.Fatalf("revoke %d: %v", k, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.SIDRevoked("sid-49") {
		if time.Now().After(deadline) {
			t.Fatal("the revocation was not announced to the other store")
		}
		time.Sleep(10 * time.Millisecond)
	}
	later := openRedisStore(t, url, RedisOptions{})
	if n := later.Held(); n != 50 {
		t.Errorf("a store started later loaded %d revocations, want 50", n)
	}
	for k := range 20 {
		jti := "jti:" + strconv.Itoa(k)
		if fresh, err := a.ClaimOnce(ctx, jti, time.Now().Add(time.Minute)); !fresh || err != nil {
			t.Fatalf("claim %s: %v %v", jti, fresh, err)
		}
		if fresh, err := b.ClaimOnce(ctx, jti, time.Now().Add(time.Minute)); fresh || err != nil {
			t.Fatalf("second claim %s: %v %v", jti, fresh, err)
		}
	}
	ex := a.backend.exchange()
	if ok, err := ex.lock(ctx, "rt-1", time.Minute); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if ok, _ := b.backend.exchange().lock(ctx, "rt-1", time.Minute); ok {
		t.Error("the refresh lock was taken twice")
	}
	if err := ex.publish(ctx, "rt-1", "sealed", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := b.backend.exchange().outcome(ctx, "rt-1"); v != "sealed" || err != nil {
		t.Errorf("outcome on the other store: %q %v", v, err)
	}
}
