package oidc

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

// Tracker records the outcome of every call to one provider (discovery,
// JWKS, token endpoint, revocation, Management API, background probe), so
// that health and the idp_up metric say what the latest calls found, not
// what the first discovery did.
//
// A call the IdP answered with a refusal (a 4xx, such as invalid_grant)
// counts as a success: the IdP is up and working. Failures are transport
// errors, timeouts and 5xx answers, and for the documents the handler needs
// (discovery, JWKS) any answer it cannot use. A call abandoned by its caller
// (context.Canceled) says nothing about the IdP and is not recorded.
type Tracker struct {
	issuer string
	logger *zap.Logger // nil: no log lines (the check command)
	now    func() time.Time
	report Reporter

	mu          sync.Mutex
	success     Call
	failure     Call
	consecutive int // failures since the last success
}

// Call is one recorded call; the zero value means none yet.
type Call struct {
	Endpoint string    `json:"endpoint"`
	At       time.Time `json:"at"`
	Error    string    `json:"error,omitempty"`
}

// NewTracker returns the tracker of issuer. now is its clock (nil:
// time.Now); logger, when not nil, gets a line when the IdP goes down and
// when it is back; report (nil: none) is told each outcome.
func NewTracker(issuer string, now func() time.Time, logger *zap.Logger, report Reporter) *Tracker {
	if now == nil {
		now = time.Now
	}
	if report == nil {
		report = nopReporter{}
	}
	return &Tracker{issuer: issuer, now: now, logger: logger, report: report}
}

// Record notes the outcome of one call to endpoint ("discovery", "jwks",
// "token", "revocation", "management"); err is what the call returned.
func (t *Tracker) Record(endpoint string, err error) {
	if t == nil || errors.Is(err, context.Canceled) {
		return
	}
	failed := err != nil && !idpRefused(err)
	now := t.now()
	t.mu.Lock()
	wasDown := t.consecutive > 0
	if failed {
		t.failure = Call{Endpoint: endpoint, At: now, Error: describeIdPError(err)}
		t.consecutive++
	} else {
		t.success = Call{Endpoint: endpoint, At: now}
		t.consecutive = 0
	}
	fail, since := t.failure, t.success.At
	t.mu.Unlock()

	t.report.IdPUp(t.issuer, !failed, now)
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

// State is what a Tracker knows, for a health report.
type State struct {
	LastSuccess         *Call
	LastFailure         *Call
	ConsecutiveFailures int
}

// Down reports whether the latest call failed: no call has succeeded since.
func (s State) Down() bool { return s.ConsecutiveFailures > 0 }

// State returns what the tracker knows now.
func (t *Tracker) State() State {
	if t == nil {
		return State{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := State{ConsecutiveFailures: t.consecutive}
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
	var se *StatusError
	return errors.As(err, &se) && se.Code < 500
}

// StatusError is an IdP's answer with an HTTP status the caller did not
// want; only 5xx counts as a failure of the IdP.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d", e.Code) }

// CallOutcome turns the result of a plain HTTP call to the IdP into what
// Record takes: err, or a StatusError for a status of 300 or more.
func CallOutcome(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return &StatusError{Code: resp.StatusCode}
	}
	return nil
}

// describeIdPError says what failed without the request's URL (the
// Management API's names a user) or a token endpoint's response body.
func describeIdPError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return DescribeTokenError(err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return truncate(err.Error(), 300)
}

// RecordedTokenSource returns a token source that records each token
// request src makes under "token"; cached tokens (oauth2.ReuseTokenSource
// around it) make no call and record nothing.
func (t *Tracker) RecordedTokenSource(src oauth2.TokenSource) oauth2.TokenSource {
	return recordedTokenSource{src, t}
}

type recordedTokenSource struct {
	src     oauth2.TokenSource
	tracker *Tracker
}

func (s recordedTokenSource) Token() (*oauth2.Token, error) {
	tok, err := s.src.Token()
	s.tracker.Record("token", err)
	return tok, err
}
