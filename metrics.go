package oidcauth

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The collectors are made once per process and registered with the
// registry of each config load, so counts go on across reloads. Labels take
// a few fixed values only: no users, sessions or paths.
var metrics struct {
	once           sync.Once
	logins         *prometheus.CounterVec   // result: started, completed, failed; reason
	refreshes      *prometheus.CounterVec   // result: ok, refused, unavailable, coalesced
	logouts        *prometheus.CounterVec   // kind: rp, backchannel, frontchannel; result; reason
	rejected       *prometheus.CounterVec   // reason
	idpLatency     *prometheus.HistogramVec // endpoint: discovery, token, jwks, revocation
	jwksFetches    *prometheus.CounterVec   // reason: startup, unknown_kid, max_age; result: ok, error
	bearerRequests *prometheus.CounterVec   // result: accepted, refused
	idpUp          *prometheus.GaugeVec     // issuer (configured, so bounded)
	idpLastSuccess *prometheus.GaugeVec     // issuer
	sessionsBegun  prometheus.Counter
	sessionsEnded  *prometheus.CounterVec // reason: logout, backchannel, frontchannel, idle, lifetime, admin, webhook
}

// The metrics' namespace: caddy_oidc_auth_*.
const metricsNamespace, metricsSubsystem = "caddy", "oidc_auth"

func counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}, labels)
}

func gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}, labels)
}

func initMetrics(registry *prometheus.Registry) error {
	metrics.once.Do(func() {
		metrics.logins = counter("logins_total", "Logins started, completed and failed (by reason).", "result", "reason")
		metrics.refreshes = counter("refreshes_total", "Token refreshes: ok, refused by the IdP, IdP unavailable, or coalesced with another request's refresh.", "result")
		metrics.logouts = counter("logouts_total", "Logouts by kind (rp, backchannel, frontchannel), accepted or refused (by reason).", "kind", "result", "reason")
		metrics.rejected = counter("sessions_rejected_total", "Sessions refused on a request, by reason.", "reason")
		metrics.idpLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "idp_request_duration_seconds",
			Help:    "Latency of requests to the identity provider, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"endpoint"})
		metrics.jwksFetches = counter("jwks_fetches_total", "Fetches of the provider's JWKS, by reason (startup, unknown_kid, max_age) and result (ok, error).", "reason", "result")
		metrics.bearerRequests = counter("bearer_requests_total", "Requests authenticated by bearer token, accepted or refused.", "result")
		metrics.idpUp = gauge("idp_up", "1 when the latest call to the identity provider succeeded (or was refused with a 4xx), 0 when it failed.", "issuer")
		metrics.idpLastSuccess = gauge("idp_last_success_timestamp_seconds", "Unix time of the latest successful call to the identity provider.", "issuer")
		metrics.sessionsBegun = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "sessions_started_total",
			Help: "Sessions begun by a completed login.",
		})
		metrics.sessionsEnded = counter("sessions_ended_total", "Sessions ended, by reason: logout, backchannel, frontchannel, idle, lifetime, admin, webhook.", "reason")
	})
	if registry == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.logins, metrics.refreshes, metrics.logouts, metrics.rejected,
		metrics.idpLatency, metrics.jwksFetches, metrics.bearerRequests,
		metrics.idpUp, metrics.idpLastSuccess, metrics.sessionsBegun, metrics.sessionsEnded,
	} {
		if err := registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

func init() {
	_ = initMetrics(nil) // make the collectors; registration happens in Provision
}

func observeIdP(endpoint string, start time.Time) {
	metrics.idpLatency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
}

func countLogin(result, reason string) { metrics.logins.WithLabelValues(result, reason).Inc() }
func countRefresh(result string)       { metrics.refreshes.WithLabelValues(result).Inc() }
func countRejected(reason string)      { metrics.rejected.WithLabelValues(reason).Inc() }
func countSessionStarted()             { metrics.sessionsBegun.Inc() }

// countSessionEnded counts n sessions ended for reason, one of a fixed few.
func countSessionEnded(reason string) { metrics.sessionsEnded.WithLabelValues(reason).Inc() }
func countSessionsEnded(reason string, n int) {
	metrics.sessionsEnded.WithLabelValues(reason).Add(float64(n))
}
func countLogout(kind, result, reason string) {
	metrics.logouts.WithLabelValues(kind, result, reason).Inc()
	if result == "accepted" {
		if kind == "rp" {
			kind = "logout"
		}
		countSessionEnded(kind)
	}
}

// metricsReporter records what the oidc package measures in the metrics.
type metricsReporter struct{}

func (metricsReporter) IdPCall(endpoint string) func() {
	start := time.Now()
	return func() { observeIdP(endpoint, start) }
}

func (metricsReporter) JWKSFetch(reason, result string) {
	metrics.jwksFetches.WithLabelValues(reason, result).Inc()
}

func (metricsReporter) IdPUp(issuer string, up bool, at time.Time) {
	if !up {
		metrics.idpUp.WithLabelValues(issuer).Set(0)
		return
	}
	metrics.idpUp.WithLabelValues(issuer).Set(1)
	metrics.idpLastSuccess.WithLabelValues(issuer).Set(float64(at.UnixNano()) / 1e9)
}

// Every provider of an issuer shares its gauges; they are removed when the
// last one goes, so an issuer no configuration uses any more leaves none.
var issuerGauges = struct {
	sync.Mutex
	users map[string]int
}{users: map[string]int{}}

func acquireGauges(issuer string) {
	issuerGauges.Lock()
	issuerGauges.users[issuer]++
	issuerGauges.Unlock()
}

func releaseGauges(issuer string) {
	issuerGauges.Lock()
	defer issuerGauges.Unlock()
	if issuerGauges.users[issuer]--; issuerGauges.users[issuer] > 0 {
		return
	}
	delete(issuerGauges.users, issuer)
	metrics.idpUp.DeleteLabelValues(issuer)
	metrics.idpLastSuccess.DeleteLabelValues(issuer)
}
