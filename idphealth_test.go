package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddy-oidc-auth/oidcauth/oidctest"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestIdPTrackerGauges(t *testing.T) {
	issuer := "https://gauges.example"
	at := time.Unix(1_800_000_000, 0)
	now := at
	tr := oidc.NewTracker(issuer, func() time.Time { return now }, nil, metricsReporter{})
	acquireGauges(issuer)
	tr.Record("discovery", nil)
	if v := testutil.ToFloat64(metrics.idpUp.WithLabelValues(issuer)); v != 1 {
		t.Errorf("idp_up after a success = %v, want 1", v)
	}
	if v := testutil.ToFloat64(metrics.idpLastSuccess.WithLabelValues(issuer)); v != 1_800_000_000 {
		t.Errorf("idp_last_success_timestamp_seconds = %v, want %d", v, 1_800_000_000)
	}
	now = at.Add(time.Minute)
	tr.Record("token", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")})
	if v := testutil.ToFloat64(metrics.idpUp.WithLabelValues(issuer)); v != 0 {
		t.Errorf("idp_up after a failure = %v, want 0", v)
	}
	if v := testutil.ToFloat64(metrics.idpLastSuccess.WithLabelValues(issuer)); v != 1_800_000_000 {
		t.Errorf("a failure moved the last success to %v", v)
	}
	releaseGauges(issuer)
	if metrics.idpUp.DeleteLabelValues(issuer) || metrics.idpLastSuccess.DeleteLabelValues(issuer) {
		t.Errorf("the gauges of an issuer no provider uses any more are still exported")
	}
}

// TestProbeLifecycleAcrossReload: the provider's probe runs while any
// handler uses it, goes on across a reload (the new config is provisioned
// before the old one is cleaned up), and ends with the last Cleanup.
func TestProbeLifecycleAcrossReload(t *testing.T) {
	op := oidctest.New(t, oidctest.NewClock())
	provision := func(interval time.Duration) *OIDCAuth {
		h := &OIDCAuth{Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret,
			CookieSecret: itCookieSecret, HealthProbeInterval: caddy.Duration(interval)}
		ctx, _ := caddy.NewContext(itCaddyContext(t))
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		return h
	}
	running := func(p *provider) bool {
		select {
		case <-p.ProbeDone():
			return false
		default:
			return true
		}
	}
	old := provision(time.Hour)
	p := old.provider
	if !running(p) {
		t.Fatal("no probe after Provision")
	}
	reloaded := provision(2 * time.Hour)
	if reloaded.provider != p {
		t.Fatal("a reload made a new provider")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if !running(p) {
		t.Fatal("the probe stopped with the old config while the new one uses the provider")
	}
	got := p.ProbeInterval()
	if got != 2*time.Hour {
		t.Errorf("interval after the reload: %s, want the new config's 2h", got)
	}
	if err := reloaded.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if running(p) {
		t.Fatal("the probe goroutine is left behind after the last Cleanup")
	}
}

// healthOf runs the admin health handler and returns its status and the
// entry of issuer.
func healthOf(t *testing.T, issuer string) (int, providerHealth) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := serveHealth(rec, httptest.NewRequest(http.MethodGet, "/oidc_auth/health", nil)); err != nil {
		t.Fatal(err)
	}
	var report struct {
		Providers []providerHealth `json:"providers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &report); err != nil {
		t.Fatal(err)
	}
	for _, p := range report.Providers {
		if p.Issuer == issuer {
			return rec.Code, p
		}
	}
	t.Fatalf("health does not list %s: %s", issuer, rec.Body)
	return 0, providerHealth{}
}

// TestHealthFollowsIdPCalls: health turns unready when a login's token
// exchange cannot reach the token endpoint, names it, stays ready when the
// IdP refuses a code (it is up), and follows the background probe.
func TestHealthFollowsIdPCalls(t *testing.T) {
	t.Parallel()
	e := newITEnv(t)
	issuer := e.op.Issuer
	e.browser().mustLogin("/")
	if code, h := healthOf(t, issuer); !h.Reachable || h.FailingEndpoint != "" || h.LastSuccess == nil {
		t.Fatalf("after a login: %d %+v, want reachable", code, h)
	}

	e.op.Set(func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			http.Error(w, "upstream down", http.StatusBadGateway)
			return true
		}
	})
	if res := e.browser().login("/"); res.StatusCode != http.StatusBadGateway && res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login with the token endpoint failing: %d, want 502/503", res.StatusCode)
	}
	code, h := healthOf(t, issuer)
	if code != http.StatusServiceUnavailable || h.Reachable || h.FailingEndpoint != "token" || h.ConsecutiveFailures != 1 {
		t.Fatalf("after a failed token exchange: %d %+v, want 503, failing endpoint token", code, h)
	}
	if !strings.Contains(h.Error, "token endpoint") || !strings.Contains(h.Error, "HTTP 502") {
		t.Errorf("error %q does not say the token endpoint answered 502", h.Error)
	}

	e.op.Set(func(s *oidctest.Script) {
		s.Token = func(w http.ResponseWriter, r *http.Request, grant string) bool {
			oidctest.TokenError(w, http.StatusBadRequest, "invalid_grant", "code expired")
			return true
		}
	})
	if res := e.browser().login("/"); res.StatusCode < 400 || res.StatusCode >= 500 {
		t.Fatalf("login with a refused code: %d, want 4xx", res.StatusCode)
	}
	if code, h := healthOf(t, issuer); !h.Reachable || h.FailingEndpoint != "" || h.LastFailure == nil || h.LastFailure.Endpoint != "token" {
		t.Fatalf("after the IdP refused a code: %d %+v, want reachable, with the earlier failure kept", code, h)
	}

	e.op.Close()
	if err := e.h.provider.Probe(context.Background()); err == nil {
		t.Fatal("the probe of a closed IdP succeeded")
	}
	code, h = healthOf(t, issuer)
	if code != http.StatusServiceUnavailable || h.FailingEndpoint != "discovery" || !strings.Contains(h.Error, "discovery endpoint") {
		t.Fatalf("after a failed probe: %d %+v, want 503 naming discovery", code, h)
	}
}

// TestRevocationRecorded: a revocation endpoint answering 5xx or not at
// all is a failure; one refusing the token (4xx) is an IdP that is up.
func TestRevocationRecorded(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(status.Load())) }))
	m := newUnitHandler(t, withOverrides)
	meta := &metadata{Endpoints: endpoints{Revocation: srv.URL + "/revoke", Token: srv.URL + "/token"}}
	m.tokens.revokeToken(context.Background(), meta, "rt-1")
	if st := m.provider.Tracker().State(); !st.Down() || st.LastFailure.Endpoint != "revocation" {
		t.Fatalf("after a 503: %+v, want the revocation endpoint failing", st)
	}
	status.Store(http.StatusBadRequest)
	m.tokens.revokeToken(context.Background(), meta, "rt-1")
	if st := m.provider.Tracker().State(); st.Down() {
		t.Fatalf("after a 400: %+v, want up", st)
	}
	srv.Close()
	m.tokens.revokeToken(context.Background(), meta, "rt-1")
	if st := m.provider.Tracker().State(); !st.Down() || !strings.Contains(st.LastFailure.Error, "connect") {
		t.Fatalf("with the endpoint gone: %+v, want a connection failure", st)
	}
}
