package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// idpTracker records the outcome of every call to one provider (discovery,
// JWKS, token endpoint, revocation, Management API, background probe), so
// that health and the idp_up metric say what the latest calls found, not
// what the first discovery did.
//
// A call the IdP answered with a refusal (a 4xx, such as invalid_grant)
// counts as a success: the IdP is up and working. Failures are transport
// errors, timeouts and 5xx answers, and for the documents the handler needs
// (discovery, JWKS) any answer it cannot use. A call abandoned by its caller
// (context.Canceled) says nothing about the IdP and is not recorded.
type idpTracker struct {
	issuer string
	logger *zap.Logger // nil: no log lines (the check command)
	now    func() time.Time

	mu          sync.Mutex
	success     idpCall
	failure     idpCall
	consecutive int // failures since the last success
}

// idpCall is one recorded call; the zero value means none yet.
type idpCall struct {
	Endpoint string    `json:"endpoint"`
	At       time.Time `json:"at"`
	Error    string    `json:"error,omitempty"`
}

func newIdPTracker(issuer string) *idpTracker {
	return &idpTracker{issuer: issuer, now: time.Now}
}

// record notes the outcome of one call to endpoint ("discovery", "jwks",
// "token", "revocation", "management"); err is what the call returned.
func (t *idpTracker) record(endpoint string, err error) {
	if t == nil || errors.Is(err, context.Canceled) {
		return
	}
	failed := err != nil && !idpRefused(err)
	now := t.now()
	t.mu.Lock()
	wasDown := t.consecutive > 0
	if failed {
		t.failure = idpCall{Endpoint: endpoint, At: now, Error: describeIdPError(err)}
		t.consecutive++
	} else {
		t.success = idpCall{Endpoint: endpoint, At: now}
		t.consecutive = 0
	}
	fail, since := t.failure, t.success.At
	t.mu.Unlock()

	if failed {
		metrics.idpUp.WithLabelValues(t.issuer).Set(0)
	} else {
		metrics.idpUp.WithLabelValues(t.issuer).Set(1)
		metrics.idpLastSuccess.WithLabelValues(t.issuer).Set(float64(now.UnixNano()) / 1e9)
	}
	// Transitions only, so an outage logs two lines, not one per request.
	switch {
	case t.logger == nil:
	case failed && !wasDown:
		t.logger.Warn("identity provider unavailable", zap.String("issuer", t.issuer),
			zap.String("endpoint", endpoint), zap.String("error", fail.Error))
	case !failed && wasDown:
		t.logger.Info("identity provider reachable again", zap.String("issuer", t.issuer),
			zap.String("endpoint", endpoint), zap.Duration("last_success_ago", now.Sub(since)))
	}
}

// idpState is what the tracker knows, for the health report.
type idpState struct {
	LastSuccess         *idpCall
	LastFailure         *idpCall
	ConsecutiveFailures int
}

// down reports whether the latest call failed: no call has succeeded since.
func (s idpState) down() bool { return s.ConsecutiveFailures > 0 }

func (t *idpTracker) state() idpState {
	if t == nil {
		return idpState{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := idpState{ConsecutiveFailures: t.consecutive}
	if !t.success.At.IsZero() {
		c := t.success
		s.LastSuccess = &c
	}
	if !t.failure.At.IsZero() {
		c := t.failure
		s.LastFailure = &c
	}
	return s
}

// idpRefused tells a refusal by a working IdP (4xx) from a failure.
func idpRefused(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode < 500
	}
	var se *idpStatusError
	return errors.As(err, &se) && se.code < 500
}

// idpStatusError is an IdP's answer with an HTTP status the caller did not
// want; only 5xx counts as a failure of the IdP.
type idpStatusError struct{ code int }

func (e *idpStatusError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }

// callOutcome turns the result of a plain HTTP call to the IdP into what
// record takes.
func callOutcome(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return &idpStatusError{resp.StatusCode}
	}
	return nil
}

// describeIdPError says what failed without the request's URL (the
// Management API's names a user) or a token endpoint's response body.
func describeIdPError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return describeTokenError(err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return truncate(err.Error(), 300)
}

// Every provider of an issuer shares its gauges; they are removed when the
// last one goes, so an issuer no configuration uses any more leaves none.
var issuerGauges = struct {
	sync.Mutex
	users map[string]int
}{users: map[string]int{}}

func (t *idpTracker) acquireGauges() {
	issuerGauges.Lock()
	issuerGauges.users[t.issuer]++
	issuerGauges.Unlock()
}

func (t *idpTracker) releaseGauges() {
	issuerGauges.Lock()
	defer issuerGauges.Unlock()
	if issuerGauges.users[t.issuer]--; issuerGauges.users[t.issuer] > 0 {
		return
	}
	delete(issuerGauges.users, t.issuer)
	metrics.idpUp.DeleteLabelValues(t.issuer)
	metrics.idpLastSuccess.DeleteLabelValues(t.issuer)
}

// recordedTokenSource records each token request it makes; cached tokens
// (oauth2.ReuseTokenSource around it) make no call and record nothing.
type recordedTokenSource struct {
	src     oauth2.TokenSource
	tracker *idpTracker
}

func (s recordedTokenSource) Token() (*oauth2.Token, error) {
	tok, err := s.src.Token()
	s.tracker.record("token", err)
	return tok, err
}
