package oidc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func refused(t *testing.T) error {
	t.Helper()
	return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
}

func retrieveError(status int, code, body string) error {
	return &oauth2.RetrieveError{Response: &http.Response{StatusCode: status}, Body: []byte(body), ErrorCode: code}
}

// TestIdPTrackerRecord: what counts as a failure, what as the IdP being up,
// and what health is told about it.
func TestIdPTrackerRecord(t *testing.T) {
	type call struct {
		endpoint string
		err      error
	}
	userURL := "https://idp.example.com/api/v1/users/usr_secret_id"
	tests := []struct {
		name        string
		calls       []call
		down        bool
		consecutive int
		endpoint    string // failing endpoint when down
		errHas      string
		errLacks    string
	}{
		{"nothing yet", nil, false, 0, "", "", ""},
		{"a success", []call{{"discovery", nil}}, false, 0, "", "", ""},
		{"connection refused", []call{{"discovery", nil}, {"jwks", &url.Error{Op: "Get", URL: "http://127.0.0.1:9/keys", Err: refused(t)}}},
			true, 1, "jwks", "connection refused", "/keys"},
		{"two failures in a row", []call{{"token", refused(t)}, {"discovery", refused(t)}}, true, 2, "discovery", "connection refused", ""},
		{"a success after failures", []call{{"token", refused(t)}, {"discovery", refused(t)}, {"discovery", nil}}, false, 0, "", "", ""},
		{"invalid_grant is the IdP up", []call{{"token", refused(t)}, {"token", retrieveError(400, "invalid_grant", `{"error":"invalid_grant"}`)}}, false, 0, "", "", ""},
		{"invalid_client is the IdP up", []call{{"token", retrieveError(401, "invalid_client", "")}}, false, 0, "", "", ""},
		{"a 5xx token answer is a failure, its body not quoted", []call{{"token", retrieveError(503, "", "<html>refresh_token=rt-123</html>")}},
			true, 1, "token", "HTTP 503", "rt-123"},
		{"a timeout", []call{{"token", fmt.Errorf("exchanging: %w", context.DeadlineExceeded)}}, true, 1, "token", "deadline", ""},
		{"a cancelled call says nothing", []call{{"discovery", nil}, {"token", &url.Error{Op: "Post", URL: "x", Err: context.Canceled}}}, false, 0, "", "", ""},
		{"a cancelled call keeps a failure", []call{{"token", refused(t)}, {"discovery", context.Canceled}}, true, 1, "token", "", ""},
		{"revocation 400 is up", []call{{"revocation", CallOutcome(&http.Response{StatusCode: 400}, nil)}}, false, 0, "", "", ""},
		{"revocation 502 is down", []call{{"revocation", CallOutcome(&http.Response{StatusCode: 502}, nil)}}, true, 1, "revocation", "HTTP 502", ""},
		{"management URL not quoted", []call{{"management", CallOutcome(nil, &url.Error{Op: "Get", URL: userURL, Err: refused(t)})}},
			true, 1, "management", "connection refused", "usr_secret_id"},
		{"management 404 is up", []call{{"management", CallOutcome(&http.Response{StatusCode: 404}, nil)}}, false, 0, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker("https://tracker.example/"+strings.ReplaceAll(tt.name, " ", "-"), nil, nil, nil)
			for _, c := range tt.calls {
				tr.Record(c.endpoint, c.err)
			}
			s := tr.State()
			if s.Down() != tt.down || s.ConsecutiveFailures != tt.consecutive {
				t.Fatalf("down=%v consecutive=%d, want %v %d (%+v)", s.Down(), s.ConsecutiveFailures, tt.down, tt.consecutive, s)
			}
			if !tt.down {
				return
			}
			if s.LastFailure.Endpoint != tt.endpoint {
				t.Errorf("failing endpoint %q, want %q", s.LastFailure.Endpoint, tt.endpoint)
			}
			if !strings.Contains(s.LastFailure.Error, tt.errHas) {
				t.Errorf("error %q lacks %q", s.LastFailure.Error, tt.errHas)
			}
			if tt.errLacks != "" && strings.Contains(s.LastFailure.Error, tt.errLacks) {
				t.Errorf("error %q quotes %q", s.LastFailure.Error, tt.errLacks)
			}
		})
	}
}

// fakeTimers stands in for the prober's timer: each wait is reported on
// waits and ends when the test sends on fire.
type fakeTimers struct {
	waits chan time.Duration
	fire  chan time.Time
}

func newFakeTimers() *fakeTimers {
	return &fakeTimers{waits: make(chan time.Duration), fire: make(chan time.Time)}
}

func (f *fakeTimers) timer(d time.Duration) (<-chan time.Time, func() bool) {
	f.waits <- d
	return f.fire, func() bool { return true }
}

func (f *fakeTimers) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the prober never waited")
		return 0
	}
}

// scriptedProbe answers each probe with the next error sent on results.
type scriptedProbe struct{ results chan error }

func (s scriptedProbe) probe(ctx context.Context) error {
	select {
	case err := <-s.results:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newTestProber(t *testing.T, interval time.Duration, jitter float64) (*prober, *fakeTimers, scriptedProbe) {
	sp := scriptedProbe{results: make(chan error)}
	ft := newFakeTimers()
	pr := newProber(sp.probe, time.Now)
	pr.timer = ft.timer
	pr.jitter = func() float64 { return jitter }
	now := time.Unix(1_800_000_000, 0)
	pr.now = func() time.Time { return now }
	pr.use(interval)
	pr.start()
	t.Cleanup(pr.stop)
	return pr, ft, sp
}

// TestProberBacksOffAndRecovers: probes are an interval apart; failures
// double the wait up to the cap; a success brings the interval back.
func TestProberBacksOffAndRecovers(t *testing.T) {
	pr, ft, sp := newTestProber(t, 10*time.Second, 0)
	down := errors.New("down")
	want := []struct {
		wait   time.Duration
		result error
	}{
		{10 * time.Second, nil},
		{10 * time.Second, down},
		{20 * time.Second, down},
		{40 * time.Second, down},
		{80 * time.Second, down},
		{160 * time.Second, down},
		{maxProbeBackoff, down},
		{maxProbeBackoff, nil},
		{10 * time.Second, nil},
	}
	for i, w := range want {
		if d := ft.nextWait(t); d != w.wait {
			t.Fatalf("wait %d: %s, want %s", i, d, w.wait)
		}
		ft.fire <- time.Time{}
		sp.results <- w.result
	}
	ft.nextWait(t)
	_ = pr
}

func TestProberJitterOnlyLengthens(t *testing.T) {
	for _, j := range []float64{0, 0.5, 0.999} {
		_, ft, _ := newTestProber(t, 30*time.Second, j)
		d := ft.nextWait(t)
		if d < 30*time.Second || d >= 36*time.Second {
			t.Errorf("jitter %v: wait %s, want within [30s, 36s)", j, d)
		}
	}
}

// TestProberIntervalOfHandlers: the shortest interval of the handlers
// still using the provider applies.
func TestProberIntervalOfHandlers(t *testing.T) {
	pr := newProber(func(context.Context) error { return nil }, time.Now)
	if got := pr.interval(); got != DefaultProbeInterval {
		t.Errorf("no handler: %s, want %s", got, DefaultProbeInterval)
	}
	pr.use(time.Minute)
	pr.use(5 * time.Second)
	pr.use(5 * time.Second)
	if got := pr.interval(); got != 5*time.Second {
		t.Errorf("%s, want 5s", got)
	}
	pr.release(5 * time.Second)
	if got := pr.interval(); got != 5*time.Second {
		t.Errorf("one of two 5s handlers gone: %s, want 5s", got)
	}
	pr.release(5 * time.Second)
	if got := pr.interval(); got != time.Minute {
		t.Errorf("both 5s handlers gone: %s, want 1m", got)
	}
}

// TestProberIntervalChangeWakesTheWait: a handler asking for a shorter
// interval (a reload) shortens the wait under way; the longer one back
// lengthens it again.
func TestProberIntervalChangeWakesTheWait(t *testing.T) {
	pr, ft, sp := newTestProber(t, time.Hour, 0)
	if d := ft.nextWait(t); d != time.Hour {
		t.Fatalf("first wait %s, want 1h", d)
	}
	pr.use(2 * time.Second)
	if d := ft.nextWait(t); d != 2*time.Second {
		t.Fatalf("after a handler asked for 2s: wait %s, want 2s", d)
	}
	pr.release(2 * time.Second)
	if d := ft.nextWait(t); d != time.Hour {
		t.Fatalf("after that handler went: wait %s, want 1h", d)
	}
	pr.use(time.Hour) // the same interval: the wait goes on
	ft.fire <- time.Time{}
	sp.results <- nil
	if d := ft.nextWait(t); d != time.Hour {
		t.Fatalf("after a probe: wait %s, want 1h", d)
	}
}

// TestProberRecheck: health's recheck starts a probe at once, but not
// again within an interval of the last one.
func TestProberRecheck(t *testing.T) {
	pr, ft, sp := newTestProber(t, 10*time.Second, 0)
	now := time.Unix(1_800_000_000, 0)
	pr.mu.Lock()
	pr.now = func() time.Time { return now }
	pr.mu.Unlock()
	ft.nextWait(t)
	kick(t, pr)
	sp.results <- errors.New("down") // the probe ran without the timer firing
	if d := ft.nextWait(t); d != 20*time.Second {
		t.Fatalf("after a failed probe: wait %s, want 20s", d)
	}
	pr.mu.Lock()
	pr.now = func() time.Time { return now.Add(9 * time.Second) }
	pr.mu.Unlock()
	if pr.due() || pr.recheck() {
		t.Fatal("recheck probed again 9s after a probe, with a 10s interval")
	}
	pr.mu.Lock()
	pr.now = func() time.Time { return now.Add(10 * time.Second) }
	pr.mu.Unlock()
	kick(t, pr)
	sp.results <- nil
	if d := ft.nextWait(t); d != 10*time.Second {
		t.Fatalf("after a successful probe: wait %s, want 10s", d)
	}
}

// kick calls recheck until the prober, waiting for its timer, takes it.
func kick(t *testing.T, pr *prober) {
	t.Helper()
	if !pr.due() {
		t.Fatal("no probe is due")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !pr.recheck() {
		if time.Now().After(deadline) {
			t.Fatal("recheck never started a probe")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestProberStop: stop ends the goroutine, also while a probe is under way.
func TestProberStop(t *testing.T) {
	started := make(chan struct{})
	pr := newProber(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}, time.Now)
	ft := newFakeTimers()
	pr.timer = ft.timer
	pr.start()
	ft.nextWait(t)
	ft.fire <- time.Time{}
	<-started
	stopped := make(chan struct{})
	go func() { pr.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not end a probe under way")
	}
	select {
	case <-pr.done:
	default:
		t.Fatal("the goroutine is still running")
	}
	pr.recheck() // after stop: no effect, no block
}
