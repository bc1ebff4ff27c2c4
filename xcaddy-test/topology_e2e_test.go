//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/store/storetest"
)

// The shared store in the topologies production runs: Redis with TLS and an
// ACL user, a primary with a replica managed by three Sentinels (the primary
// killed while a back-channel logout arrives), and a three-primary Redis
// Cluster. Each runs the two-instance back-channel logout journey.

// startRedisProc runs one redis-server (or redis-sentinel) and waits for
// its port.
func startRedisProc(t *testing.T, name string, port int, bin string, args ...string) *process {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s not found (run scripts/setup.sh)", bin)
	}
	p := startProcess(t, name, exec.Command(path, args...))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, name+" on "+addr, 10*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", name, p.err, p.log.String())
		}
		return portOpen(addr)
	})
	return p
}

// redisCLI runs redis-cli against a port and returns its output.
func redisCLI(port int, args ...string) string {
	out, _ := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
	return string(out)
}

// newStoreCluster starts an IdP whose back-channel logout URI is on the first
// port, and two Caddy instances sharing the store given by storeLines.
func newStoreCluster(t *testing.T, storeLines string) (*idp, *instance, *instance) {
	t.Helper()
	ports := []int{freePort(t), freePort(t)}
	i := startIdP(t, idpOptions{clients: []idpClient{registration(clientID, clientSecret, ports...)}})
	site := siteConfig{
		issuer:       i.Issuer,
		clientID:     clientID,
		clientSecret: clientSecret,
		upstream:     newUpstream(t),
		extra:        storeLines,
	}
	return i, newInstance(t, "instance 1", ports[0], site), newInstance(t, "instance 2", ports[1], site)
}

// backchannelJourney: a session made at instance 1 works on both; the user
// signs out at the IdP, whose back-channel call reaches instance 1 only; both
// instances refuse the session from then on; a new login works on both.
func backchannelJourney(t *testing.T, i *idp, n1, n2 *instance) {
	t.Helper()
	start := time.Now()
	b, cookies := loginAt(t, n1.app)
	wantStatus(t, "the session before logout", http.StatusOK, cookies, n1, n2)
	before := len(i.stats(t).Backchannel)
	idpLogout(t, b, i, clientID, n1.app+"/signed-out")
	waitFor(t, "the IdP's back-channel logout", 10*time.Second, func() bool {
		return len(i.stats(t).Backchannel) > before
	})
	if bc := i.stats(t).Backchannel; !bc[len(bc)-1].OK {
		t.Fatalf("the back-channel logout failed at the IdP: %+v", bc[len(bc)-1])
	}
	waitRefused(t, cookies, 5*time.Second, n2)
	wantStatus(t, "the session after back-channel logout", http.StatusUnauthorized, cookies, n1, n2)
	_, fresh := loginAt(t, n2.app)
	wantStatus(t, "a new session", http.StatusOK, fresh, n1, n2)
	t.Logf("back-channel logout journey: %s", time.Since(start).Round(time.Millisecond))
}

// waitRefused polls the instances with cookies until they answer 401.
func waitRefused(t *testing.T, cookies []*http.Cookie, bound time.Duration, nodes ...*instance) {
	t.Helper()
	for _, n := range nodes {
		start := time.Now()
		for {
			got := apiStatus(t, newBrowser(t), n.app, cookies, n.app+"/echo/poll")
			if got == http.StatusUnauthorized {
				break
			}
			if got >= 500 && got != http.StatusServiceUnavailable {
				t.Errorf("%s answered %d", n.name, got)
			}
			if time.Since(start) > bound {
				t.Fatalf("%s still answers %d to a logged-out session after %s", n.name, got, bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// logoutDuringFailover signs the user of browser x out at the IdP while the
// store fails over. The IdP's back-channel call reaches instance 1: if it is
// answered 503 (the logout could not be recorded yet), the test retries it
// with the same logout token, as the IdP is to, until it is recorded. The
// session stay, meanwhile, is served by both instances, never with a 5xx.
func logoutDuringFailover(t *testing.T, i *idp, n1, n2 *instance, x *browser, stay []*http.Cookie, since time.Time) {
	t.Helper()
	before := len(i.stats(t).Backchannel)
	beforeTokens := len(i.issued(t).LogoutTokens)
	idpLogout(t, x, i, clientID, n1.app+"/signed-out")
	waitFor(t, "the IdP's back-channel logout", 10*time.Second, func() bool {
		return len(i.stats(t).Backchannel) > before
	})
	bc := i.stats(t).Backchannel
	delivered := bc[len(bc)-1].OK
	t.Logf("the IdP's back-channel logout %s after the kill: ok=%v %s", time.Since(since).Round(time.Millisecond), delivered, bc[len(bc)-1].Error)
	if !delivered {
		tokens := i.issued(t).LogoutTokens
		if len(tokens) <= beforeTokens {
			t.Fatal("the IdP issued no logout token")
		}
		token := tokens[len(tokens)-1]
		waitFor(t, "a retried back-channel logout to be recorded", 60*time.Second, func() bool {
			resp, err := http.PostForm(n1.app+"/auth/backchannel-logout", url.Values{"logout_token": {token}})
			if err != nil {
				return false
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return true
			case http.StatusServiceUnavailable:
				// Redis away: the documented answer. Sessions are still served.
				for _, n := range []*instance{n1, n2} {
					if got := apiStatus(t, newBrowser(t), n.app, stay, n.app+"/echo/during-failover"); got != http.StatusOK {
						t.Errorf("a live session at %s during the failover: %d", n.name, got)
					}
				}
				return false
			default:
				t.Fatalf("a retried back-channel logout during the failover: %d", resp.StatusCode)
			}
			return false
		})
	}
	t.Logf("back-channel logout recorded %s after the kill", time.Since(since).Round(time.Millisecond))
}

// Redis with TLS only (a CA made here, client certificates required) and an
// ACL user allowed nothing but the module's keys and channels; the password
// comes from a file.
func TestStoreTLSWithACLUser(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := storetest.WritePKI(t, dir)
	port := freePort(t)
	startRedisProc(t, "redis-tls", port, "redis-server",
		"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--user", "default", "off",
		"--user", "caddy", "on", ">e2e-redis-pass", "~oidc_auth:*", "&oidc_auth:*", "+@all")
	pw := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pw, []byte("e2e-redis-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	i, n1, n2 := newStoreCluster(t, fmt.Sprintf(`store rediss://caddy:{file.%s}@127.0.0.1:%d/0 {
	tls_ca          %s
	tls_cert        %s
	tls_key         %s
	tls_server_name redis.internal
	dial_timeout    2s
}`, pw, port, ca, cert, key))
	backchannelJourney(t, i, n1, n2)

	// The revocation is in Redis, under the module's prefix, for the ACL user.
	cli := func(args ...string) string {
		base := []string{"-p", strconv.Itoa(port), "--tls", "--cacert", ca, "--cert", cert, "--key", key, "--user", "caddy", "--pass", "e2e-redis-pass", "--no-auth-warning"}
		out, _ := exec.Command("redis-cli", append(base, args...)...).CombinedOutput()
		return string(out)
	}
	if out := cli("--scan", "--pattern", "oidc_auth:*:rev:sid:*"); !strings.Contains(out, ":rev:sid:") {
		t.Errorf("no sid revocation in Redis: %q", out)
	}
}

// One primary, one replica, three Sentinels. The primary is killed; a
// back-channel logout arrives while Sentinel promotes the replica and is
// honoured on both instances once the IdP's retry gets through; no request
// gets a 500; both instances find the new primary by themselves.
func TestStoreSentinelFailover(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	redisArgs := func(port int, extra ...string) []string {
		d := filepath.Join(dir, strconv.Itoa(port))
		os.MkdirAll(d, 0o700)
		return append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d, "--repl-diskless-sync-delay", "0"}, extra...)
	}
	primary := startRedisProc(t, "redis-primary", p1, "redis-server", redisArgs(p1)...)
	startRedisProc(t, "redis-replica", p2, "redis-server", redisArgs(p2, "--replicaof", "127.0.0.1", strconv.Itoa(p1))...)
	waitFor(t, "the replica to sync", 30*time.Second, func() bool {
		return strings.Contains(redisCLI(p2, "INFO", "replication"), "master_link_status:up")
	})
	var sentinels []int
	for k := range 3 {
		s := freePort(t)
		sentinels = append(sentinels, s)
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", k))
		os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor mymaster 127.0.0.1 %d 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
`, s, dir, p1)), 0o600)
		startRedisProc(t, fmt.Sprintf("sentinel-%d", k), s, "redis-sentinel", conf)
	}
	// Failover needs the Sentinels to know each other and the replica.
	waitFor(t, "the Sentinels to see each other and the replica", 30*time.Second, func() bool {
		for _, s := range sentinels {
			out := redisCLI(s, "SENTINEL", "MASTER", "mymaster")
			if !strings.Contains(out, "num-other-sentinels\n2\n") || !strings.Contains(out, "num-slaves\n1\n") {
				return false
			}
		}
		return true
	})
	storeURL := fmt.Sprintf("redis://127.0.0.1:%d/0?master_name=mymaster&addr=127.0.0.1:%d&addr=127.0.0.1:%d", sentinels[0], sentinels[1], sentinels[2])
	i, n1, n2 := newStoreCluster(t, "store "+storeURL)
	backchannelJourney(t, i, n1, n2)

	// Sessions for the failover: B is logged out during it, C stays.
	xb, sb := loginAt(t, n1.app)
	_, sc := loginAt(t, n2.app)
	wantStatus(t, "B and C before the failover", http.StatusOK, sb, n1, n2)
	wantStatus(t, "C before the failover", http.StatusOK, sc, n1, n2)

	failover := time.Now()
	if err := primary.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-primary.done
	logoutDuringFailover(t, i, n1, n2, xb, sc, failover)
	waitRefused(t, sb, 5*time.Second, n1, n2)
	wantStatus(t, "C after the failover", http.StatusOK, sc, n1, n2)

	// The replica is the primary now, and holds the logout.
	waitFor(t, "the replica to be promoted", 30*time.Second, func() bool {
		return strings.Contains(redisCLI(p2, "ROLE"), "master")
	})
	if out := redisCLI(p2, "--scan", "--pattern", "oidc_auth:*:rev:sid:*"); strings.Count(out, ":rev:sid:") < 2 {
		t.Errorf("the new primary holds %d sid revocations, want both logouts", strings.Count(out, ":rev:sid:"))
	}
	// Both instances found the new primary by themselves: an RP logout at
	// instance 2 is announced to instance 1.
	yc := newBrowser(t).withCookies(n2.app, sc)
	if p := yc.navigate(n2.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("RP logout of C at instance 2 after the failover: %s", p)
	}
	waitRefused(t, sc, 5*time.Second, n1)
	if strings.Contains(n1.caddy.logs()+n2.caddy.logs(), `"status":500`) {
		t.Error("an instance answered 500 during the failover")
	}
	t.Logf("Sentinel test: failover part %s", time.Since(failover).Round(time.Millisecond))
}

// Three primaries, each with a replica, in a Redis Cluster: the module's
// keys share one slot (hash tag), announcements reach instances subscribed
// on other nodes, and when the primary that holds the app's keys is killed,
// a back-channel logout arriving during the failover is honoured on both
// instances once recorded.
func TestStoreRedisCluster(t *testing.T) {
	dir := t.TempDir()
	var nodes []string
	var ports []int
	procs := map[int]*process{}
	for range 6 {
		p := freePort(t)
		d := filepath.Join(dir, strconv.Itoa(p))
		os.MkdirAll(d, 0o700)
		procs[p] = startRedisProc(t, fmt.Sprintf("redis-cluster-%d", p), p, "redis-server",
			"--port", strconv.Itoa(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(d, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0")
		nodes = append(nodes, fmt.Sprintf("127.0.0.1:%d", p))
		ports = append(ports, p)
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, nodes...), "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	clusterOK := func(ports []int) bool {
		for _, p := range ports {
			if !strings.Contains(redisCLI(p, "CLUSTER", "INFO"), "cluster_state:ok") {
				return false
			}
		}
		return true
	}
	waitFor(t, "the cluster to be ok", 30*time.Second, func() bool { return clusterOK(ports) })
	waitFor(t, "every replica to sync", 30*time.Second, func() bool {
		synced := 0
		for _, p := range ports {
			if strings.Contains(redisCLI(p, "INFO", "replication"), "master_link_status:up") {
				synced++
			}
		}
		return synced == 3
	})
	i, n1, n2 := newStoreCluster(t, fmt.Sprintf("store redis://%s?addr=%s&addr=%s", nodes[0], nodes[1], nodes[2]))
	backchannelJourney(t, i, n1, n2)

	// An RP logout at instance 2 is announced to instance 1.
	_, s := loginAt(t, n1.app)
	wantStatus(t, "S before its RP logout", http.StatusOK, s, n1, n2)
	yy := newBrowser(t).withCookies(n2.app, s)
	if p := yy.navigate(n2.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("RP logout at instance 2: %s", p)
	}
	waitRefused(t, s, 5*time.Second, n1, n2)

	// Every key of the app is in one slot, on one primary (and its replica).
	slots := map[string]bool{}
	holder := 0
	for _, p := range ports {
		if !strings.Contains(redisCLI(p, "ROLE"), "master") {
			continue
		}
		keys := strings.Fields(redisCLI(p, "--scan", "--pattern", "oidc_auth:*"))
		if len(keys) > 0 {
			if holder != 0 {
				t.Errorf("the app's keys are on two primaries, %d and %d", holder, p)
			}
			holder = p
		}
		for _, k := range keys {
			slots[strings.TrimSpace(redisCLI(p, "CLUSTER", "KEYSLOT", k))] = true
		}
	}
	if holder == 0 || len(slots) != 1 {
		t.Fatalf("the app's keys are in %d slots (primary %d), want one", len(slots), holder)
	}

	// The primary that holds them is killed; its replica takes over.
	xb, sb := loginAt(t, n1.app)
	_, sc := loginAt(t, n2.app)
	wantStatus(t, "B and C before the failover", http.StatusOK, sb, n1, n2)
	failover := time.Now()
	if err := procs[holder].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-procs[holder].done
	logoutDuringFailover(t, i, n1, n2, xb, sc, failover)
	waitRefused(t, sb, 5*time.Second, n1, n2)
	wantStatus(t, "C after the failover", http.StatusOK, sc, n1, n2)
	var alive []int
	for _, p := range ports {
		if p != holder {
			alive = append(alive, p)
		}
	}
	waitFor(t, "the cluster to be ok again", 30*time.Second, func() bool { return clusterOK(alive) })

	// Both instances follow the new primary: an RP logout at instance 2 is
	// announced to instance 1.
	yc := newBrowser(t).withCookies(n2.app, sc)
	if p := yc.navigate(n2.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("RP logout of C at instance 2 after the failover: %s", p)
	}
	waitRefused(t, sc, 5*time.Second, n1)
	t.Logf("Cluster test: failover part %s", time.Since(failover).Round(time.Millisecond))
}
