//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Several Caddy instances sharing a Redis store: a back-channel logout received
// by one instance is honoured by the others, revocations outlive the instances,
// and Redis going away and coming back behaves as the README documents.

// redisServer is a redis-server on a fixed port that a test can stop and start
// again on the same port.
type redisServer struct {
	t    *testing.T
	port int
	proc *process
}

func newRedisServer(t *testing.T) *redisServer {
	r := &redisServer{t: t, port: freePort(t)}
	r.start()
	return r
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *redisServer) start() {
	r.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		r.t.Fatalf("redis-server not found (run scripts/setup.sh)")
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	r.proc = startProcess(r.t, "redis", cmd)
	waitFor(r.t, "redis on "+r.addr(), 10*time.Second, func() bool {
		if r.proc.exited() {
			r.t.Fatalf("redis exited: %v\n%s", r.proc.err, r.proc.log.String())
		}
		return portOpen(r.addr())
	})
}

// subscribers counts the clients subscribed to the channels matching pattern.
func (r *redisServer) subscribers(pattern string) int {
	cli := func(args ...string) []string {
		out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(r.port)}, args...)...).Output()
		if err != nil {
			return nil
		}
		return strings.Fields(string(out))
	}
	channels := cli("PUBSUB", "CHANNELS", pattern)
	if len(channels) == 0 {
		return 0
	}
	n := 0
	reply := cli(append([]string{"PUBSUB", "NUMSUB"}, channels...)...)
	for k := 1; k < len(reply); k += 2 {
		c, _ := strconv.Atoi(reply[k])
		n += c
	}
	return n
}

func (r *redisServer) stop() {
	r.t.Helper()
	r.proc.stop()
	waitFor(r.t, "redis to stop", 5*time.Second, func() bool { return !portOpen(r.addr()) })
}

// instance is one Caddy of a cluster, serving the app on its own port.
type instance struct {
	t     *testing.T
	name  string
	port  int
	app   string // http://127.0.0.1:<port>
	site  siteConfig
	caddy *caddy
}

func newInstance(t *testing.T, name string, port int, site siteConfig) *instance {
	site.port = port
	n := &instance{t: t, name: name, port: port, app: fmt.Sprintf("http://127.0.0.1:%d", port), site: site}
	n.start()
	return n
}

// start runs Caddy with a fresh directory, so nothing but the shared store
// can carry state from an earlier run.
func (n *instance) start() {
	n.t.Helper()
	dir := n.t.TempDir()
	admin := freePort(n.t)
	cfg := globalOptions(admin, filepath.Join(dir, "storage")) + n.site.block()
	n.caddy = startCaddy(n.t, dir, admin, cfg, n.app+"/signed-out")
}

func (n *instance) stop() {
	n.t.Helper()
	n.caddy.proc.stop()
	waitFor(n.t, n.name+" to stop", 5*time.Second, func() bool { return !portOpen(fmt.Sprintf("127.0.0.1:%d", n.port)) })
}

func (n *instance) restart() {
	n.t.Helper()
	n.stop()
	n.start()
}

// logTimes returns the times of the log entries of this Caddy whose msg is msg.
func (n *instance) logTimes(msg string) []time.Time {
	var out []time.Time
	sc := bufio.NewScanner(strings.NewReader(n.caddy.logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Msg != msg {
			continue
		}
		out = append(out, time.Unix(0, int64(e.TS*float64(time.Second))))
	}
	return out
}

// newCluster starts an IdP whose client has its back-channel logout URI on the
// first port only, and one Caddy instance per port, all with the Redis store.
func newCluster(t *testing.T, redis *redisServer, names ...string) (*idp, []*instance) {
	t.Helper()
	ports := make([]int, len(names))
	for k := range names {
		ports[k] = freePort(t)
	}
	i := startIdP(t, idpOptions{clients: []idpClient{registration(clientID, clientSecret, ports...)}})
	site := siteConfig{
		issuer:       i.Issuer,
		clientID:     clientID,
		clientSecret: clientSecret,
		upstream:     newUpstream(t),
		extra:        fmt.Sprintf("store redis://%s/0", redis.addr()),
	}
	var nodes []*instance
	for k, name := range names {
		nodes = append(nodes, newInstance(t, name, ports[k], site))
	}
	return i, nodes
}

// loginAt signs alice in at app with a fresh browser and returns it with a copy
// of the session cookies.
func loginAt(t *testing.T, app string) (*browser, []*http.Cookie) {
	t.Helper()
	b := newBrowser(t)
	j := b.login(app+"/", "alice", "alice-password")
	if j.final.Status != http.StatusOK || !strings.Contains(j.final.Body, "hello "+aliceSub) {
		t.Fatalf("login at %s:\n%s", app, describeChain(j.chain))
	}
	cookies := sessionCookies(b, app)
	if len(cookies) == 0 {
		t.Fatalf("no session cookies after the login at %s", app)
	}
	return b, cookies
}

// wantStatus makes an API call on every instance with a copy of cookies.
func wantStatus(t *testing.T, what string, want int, cookies []*http.Cookie, nodes ...*instance) {
	t.Helper()
	for _, n := range nodes {
		if got := apiStatus(t, newBrowser(t), n.app, cookies, n.app+"/echo/"+strings.ReplaceAll(what, " ", "-")); got != want {
			t.Errorf("%s: %s answered %d, want %d", what, n.name, got, want)
		}
	}
}

func TestBackchannelOnOneInstanceHonouredByOther(t *testing.T) {
	redis := newRedisServer(t)
	i, nodes := newCluster(t, redis, "instance 1", "instance 2")
	n1, n2 := nodes[0], nodes[1]

	b, cookies := loginAt(t, n1.app)
	wantStatus(t, "the session before logout", http.StatusOK, cookies, n1, n2)

	// The user signs out at the IdP; its back-channel call reaches instance 1 only.
	idpLogout(t, b, i, clientID, n1.app+"/signed-out")
	waitFor(t, "the IdP's back-channel logout", 5*time.Second, func() bool {
		return len(i.stats(t).Backchannel) > 0
	})
	seen := time.Now()
	st := i.stats(t)
	if len(st.Backchannel) != 1 || !st.Backchannel[0].OK {
		t.Fatalf("back-channel logouts at the IdP: %+v", st.Backchannel)
	}
	received := n1.logTimes("back-channel logout")
	if len(received) != 1 {
		t.Fatalf("instance 1 logged %d back-channel logouts, want 1", len(received))
	}
	if got := n2.logTimes("back-channel logout"); len(got) != 0 {
		t.Fatalf("instance 2 received a back-channel logout itself; the test would prove nothing")
	}
	// Time runs from the moment instance 1 recorded the logout (its log entry),
	// or from when the IdP reported it if that is earlier.
	start := received[0]
	if seen.Before(start) {
		start = seen
	}
	const bound = time.Second
	var last int
	for {
		last = apiStatus(t, newBrowser(t), n2.app, cookies, n2.app+"/echo/poll")
		if last == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > bound {
			t.Fatalf("instance 2 still answers %d to the logged-out session %s after instance 1 received the back-channel logout", last, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("instance 2 refused the session %s after instance 1 recorded the back-channel logout", time.Since(start).Round(time.Millisecond))
	wantStatus(t, "the session after back-channel logout", http.StatusUnauthorized, cookies, n1, n2)

	// A new login still works on both.
	_, fresh := loginAt(t, n2.app)
	wantStatus(t, "a new session", http.StatusOK, fresh, n1, n2)
}

func TestRedisRevocationsSurviveRestartOfBothInstances(t *testing.T) {
	redis := newRedisServer(t)
	i, nodes := newCluster(t, redis, "instance 1", "instance 2")
	n1, n2 := nodes[0], nodes[1]

	// x is ended by back-channel logout (its sid), y by RP logout at instance
	// 1 (its session), z stays signed in.
	x, xCookies := loginAt(t, n1.app)
	y, yCookies := loginAt(t, n1.app)
	_, zCookies := loginAt(t, n2.app)
	wantStatus(t, "session x before logout", http.StatusOK, xCookies, n1, n2)
	wantStatus(t, "session y before logout", http.StatusOK, yCookies, n1, n2)

	idpLogout(t, x, i, clientID, n1.app+"/signed-out")
	waitFor(t, "the back-channel logout of x", 5*time.Second, func() bool {
		st := i.stats(t)
		return len(st.Backchannel) > 0 && st.Backchannel[0].OK
	})
	if p := y.navigate(n1.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("RP logout of y at instance 1: %s", p)
	}
	waitFor(t, "both logouts to reach instance 2", 5*time.Second, func() bool {
		return apiStatus(t, newBrowser(t), n2.app, xCookies, n2.app+"/echo/x") == http.StatusUnauthorized &&
			apiStatus(t, newBrowser(t), n2.app, yCookies, n2.app+"/echo/y") == http.StatusUnauthorized
	})

	// Both instances go away; new ones start with empty storage.
	n1.stop()
	n2.stop()
	n1.start()
	n2.start()

	wantStatus(t, "session x (back-channel logout) after restarting both", http.StatusUnauthorized, xCookies, n1, n2)
	wantStatus(t, "session y (RP logout) after restarting both", http.StatusUnauthorized, yCookies, n1, n2)
	wantStatus(t, "session z (never logged out) after restarting both", http.StatusOK, zCookies, n1, n2)
	for _, n := range []*instance{n1, n2} {
		if p := x.withCookies(n.app, xCookies).navigate(n.app + "/"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize") {
			t.Errorf("navigation with session x at %s after the restart: want a redirect to login, got %s", n.name, p)
		}
	}
}

func TestRedisDownBehaviour(t *testing.T) {
	redis := newRedisServer(t)
	i, nodes := newCluster(t, redis, "instance 1", "instance 2")
	n1, n2 := nodes[0], nodes[1]

	x, s1 := loginAt(t, n1.app)
	wantStatus(t, "S1 with Redis up", http.StatusOK, s1, n1, n2)

	redis.stop()

	// (a) Sessions are still served by both instances.
	wantStatus(t, "S1 with Redis down", http.StatusOK, s1, n1, n2)
	for _, n := range []*instance{n1, n2} {
		if p := x.navigate(n.app + "/page"); p.Status != http.StatusOK || !strings.Contains(p.Body, "hello "+aliceSub) {
			t.Errorf("navigation with S1 at %s while Redis is down: %s", n.name, p)
		}
	}

	// (b) A back-channel logout with a valid logout token, sent by the IdP to
	// instance 1, cannot be recorded: 503, so the IdP does not take it as done.
	idpLogout(t, x, i, clientID, n1.app+"/signed-out")
	waitFor(t, "the IdP's back-channel logout attempt", 10*time.Second, func() bool {
		return len(i.stats(t).Backchannel) > 0
	})
	bc := i.stats(t).Backchannel
	if len(bc) != 1 || bc[0].ClientID != clientID {
		t.Fatalf("back-channel logouts at the IdP: %+v", bc)
	}
	if bc[0].OK {
		t.Errorf("instance 1 answered the back-channel logout with success although Redis is down")
	} else if !strings.Contains(bc[0].Error, "503") {
		t.Errorf("the back-channel logout failed at the IdP with %q, want a 503 answer", bc[0].Error)
	}
	if !strings.Contains(i.logs(), "backchannel logout: client="+clientID) || !strings.Contains(i.logs(), "error=") {
		t.Errorf("the IdP did not log the failed back-channel delivery")
	}
	if len(n1.logTimes("back-channel logout refused")) == 0 && len(n1.logTimes("back-channel logout not recorded")) == 0 {
		t.Errorf("instance 1 logged no refused back-channel logout")
	}

	// (c) An instance that starts while Redis is down starts and serves.
	n2.restart()
	wantStatus(t, "S1 at an instance started while Redis is down", http.StatusOK, s1, n2)
	if p := newBrowser(t).do(http.MethodGet, n2.app+"/echo/anon", apiCall, nil); p.Status != http.StatusUnauthorized {
		t.Errorf("unauthenticated API call at an instance started while Redis is down: %s", p)
	}
	if p := newBrowser(t).navigate(n2.app + "/anon"); p.Status != http.StatusFound || !strings.HasPrefix(p.location(), i.Issuer+"/oauth/authorize") {
		t.Errorf("unauthenticated navigation at an instance started while Redis is down: %s", p)
	}

	// (d) Redis is back on the same address: a revocation made now reaches the
	// other instance (the one that never saw Redis until now) within seconds.
	redis.start()
	// Both instances subscribe to the revocation channel again on their own.
	// A revocation published before that is not announced to them (see the
	// 30 s reload in the README), so the test waits for it, within a bound.
	waitFor(t, "both instances to subscribe to Redis again", 5*time.Second, func() bool {
		return redis.subscribers("oidc_auth:*:revocations") >= 2
	})
	y, s2 := loginAt(t, n1.app)
	wantStatus(t, "S2 with Redis back", http.StatusOK, s2, n1, n2)
	if p := y.navigate(n1.app + "/auth/logout"); p.Status != http.StatusFound {
		t.Fatalf("RP logout of S2 at instance 1: %s", p)
	}
	start := time.Now()
	const bound = 5 * time.Second
	var last int
	for {
		last = apiStatus(t, newBrowser(t), n2.app, s2, n2.app+"/echo/poll")
		if last == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > bound {
			if strings.Contains(n1.caddy.logs(), "logout not recorded in the store") {
				t.Errorf("instance 1 could not record the logout in Redis after it came back")
			}
			t.Fatalf("instance 2 still answers %d to S2 %s after its RP logout at instance 1", last, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("instance 2 refused S2 %s after its logout at instance 1", time.Since(start).Round(time.Millisecond))
	wantStatus(t, "S2 after its logout", http.StatusUnauthorized, s2, n1, n2)
}
