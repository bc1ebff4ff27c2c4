package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

const (
	// IdPTimeout bounds each call to the IdP.
	IdPTimeout       = 10 * time.Second
	discoveryBackoff = time.Second
	maxBackoff       = time.Minute
	// ClockLeeway is the clock skew allowed between the IdP and this host.
	ClockLeeway = 5 * time.Minute
	// MaxRevocationCalls bounds the token revocations under way per
	// provider: beyond it, a logout revokes its session locally only.
	MaxRevocationCalls = 16
)

// Asymmetric algorithms only: HS* would let anyone holding the client
// secret (or a public key mistaken for one) mint tokens, and none is none.
var asymmetricAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// ErrUnavailable marks failures to reach the IdP, as opposed to the IdP
// refusing something; they become 502/503 answers, not logouts.
var ErrUnavailable = errors.New("identity provider unavailable")

// Endpoints are the IdP's endpoints; set in a Config, they override
// discovery (which is skipped when Authorization, Token and JWKS are set).
type Endpoints struct {
	Authorization string
	Token         string
	JWKS          string
	EndSession    string
	Revocation    string
}

// Metadata is what the module needs of the provider's discovery document.
type Metadata struct {
	Endpoints
	// Algs are the ID token signing algorithms accepted: the asymmetric
	// ones the provider lists, else RS256.
	Algs              []string
	AuthMethods       []string // token_endpoint_auth_methods_supported
	IssParamSupported bool     // authorization_response_iss_parameter_supported
}

// Reporter is told what the package measures; the module registers the
// metrics. Each method must be safe for concurrent use.
type Reporter interface {
	// IdPCall is called as a call to endpoint ("discovery", "jwks",
	// "token", "revocation") starts; it returns the function to call when
	// the call ends.
	IdPCall(endpoint string) (done func())
	// JWKSFetch counts a fetch of the key set, by reason ("startup",
	// "unknown_kid", "max_age") and result ("ok", "error").
	JWKSFetch(reason, result string)
	// IdPUp says whether the latest call to issuer's IdP worked, at when.
	IdPUp(issuer string, up bool, at time.Time)
}

type nopReporter struct{}

func (nopReporter) IdPCall(string) func()         { return func() {} }
func (nopReporter) JWKSFetch(string, string)      {}
func (nopReporter) IdPUp(string, bool, time.Time) {}

// Config describes a Provider.
type Config struct {
	Issuer    string
	Overrides Endpoints
	// Now is the clock of discovery's backoff and of the key set's rules;
	// default time.Now. The tracker and the background probe, whose
	// records and waits are wall time, keep time.Now.
	Now func() time.Time
	// Logger gets a line when the IdP goes down and when it is back; nil:
	// none.
	Logger   *zap.Logger
	Reporter Reporter // nil: nothing is reported
	// Transport carries the calls to the IdP; default http.DefaultTransport.
	// Whatever it is, no response body is read past 1 MiB and no redirect
	// is followed.
	Transport http.RoundTripper
}

// Provider is one IdP as a configuration sees it: discovered on first
// use, with its key set, its HTTP client, its call tracker and, once
// StartProbe is called, a background probe. It is meant to be pooled
// across configuration reloads; Destruct ends its goroutines.
type Provider struct {
	issuer    string
	overrides Endpoints
	client    *http.Client
	now       func() time.Time
	report    Reporter

	// ctx bounds the key set's fetches and refresher; Destruct ends it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	meta    *Metadata
	nextTry time.Time
	backoff time.Duration
	lastErr error
	keys    atomic.Pointer[KeySet] // set with meta, under mu; read by every request without it

	revocationSlots chan struct{} // token revocations under way
	tracker         *Tracker      // outcome of the latest calls, for health
	prober          *prober       // set by StartProbe
}

// NewProvider returns the provider of cfg. It makes no network request.
func NewProvider(cfg Config) *Provider {
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Reporter == nil {
		cfg.Reporter = nopReporter{}
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	return &Provider{
		issuer:          cfg.Issuer,
		overrides:       cfg.Overrides,
		now:             cfg.Now,
		report:          cfg.Reporter,
		ctx:             ctx,
		cancel:          cancel,
		revocationSlots: make(chan struct{}, MaxRevocationCalls),
		tracker:         NewTracker(cfg.Issuer, nil, cfg.Logger, cfg.Reporter),
		client: &http.Client{
			Timeout:   IdPTimeout,
			Transport: limitedTransport{cfg.Transport},
			// Never follow a redirect: the token endpoint receives the code
			// and the client secret, which must go nowhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Issuer is the issuer the provider was made for.
func (p *Provider) Issuer() string { return p.issuer }

// HTTPClient is the client for every call to the IdP: bounded responses,
// a timeout, no redirects.
func (p *Provider) HTTPClient() *http.Client { return p.client }

// Tracker records the outcome of the calls to the IdP.
func (p *Provider) Tracker() *Tracker { return p.tracker }

// Destruct implements caddy.Destructor: the background probe ends and the
// key set's refresher stops and is waited for, so no goroutine outlives the
// last config using this provider.
func (p *Provider) Destruct() error {
	if p.prober != nil {
		p.prober.stop()
	}
	p.cancel()
	if keys := p.keys.Load(); keys != nil {
		keys.stop()
	}
	return nil
}

// Metadata returns the provider's metadata, discovering it on first use.
// Failed attempts back off exponentially, so an IdP that is down is asked
// at most about once a minute however many requests arrive. Errors wrap
// ErrUnavailable.
func (p *Provider) Metadata(ctx context.Context) (*Metadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.meta != nil {
		return p.meta, nil
	}
	now := p.now()
	if now.Before(p.nextTry) {
		return nil, p.lastErr
	}
	meta, err := p.discover(ctx)
	if err != nil {
		if p.backoff == 0 {
			p.backoff = discoveryBackoff
		} else {
			p.backoff = min(2*p.backoff, maxBackoff)
		}
		p.nextTry = now.Add(p.backoff)
		p.lastErr = fmt.Errorf("%w: discovery of %s: %v", ErrUnavailable, p.issuer, err)
		return nil, p.lastErr
	}
	p.meta = meta
	p.keys.Store(newKeySet(p.ctx, meta.JWKS, p.client, meta.Algs, p.now, p.tracker, p.report))
	return meta, nil
}

// Keys is the provider's key set; nil before discovery.
func (p *Provider) Keys() *KeySet {
	return p.keys.Load()
}

// KeyRemovals is the key set's removal count (0 before discovery): a
// verdict on a token reached before the latest removal must be reached
// again. As every request asks, it also wakes the refresher of a stale set.
func (p *Provider) KeyRemovals() uint64 {
	keys := p.Keys()
	if keys == nil {
		return 0
	}
	return keys.removalCount()
}

// Status is the provider's state, for a health report.
type Status struct {
	Discovered bool
	// DiscoveryError is the latest failure of discovery, while it fails.
	DiscoveryError error
	Calls          State
	JWKSKeys       int
	JWKSFetched    time.Time // zero: never
}

// Status returns the provider's state now.
func (p *Provider) Status() Status {
	p.mu.Lock()
	s := Status{Discovered: p.meta != nil}
	if p.meta == nil {
		s.DiscoveryError = p.lastErr
	}
	keys := p.keys.Load()
	p.mu.Unlock()
	s.Calls = p.tracker.State()
	if keys != nil {
		s.JWKSKeys, s.JWKSFetched = keys.Size()
	}
	return s
}

func (p *Provider) discover(ctx context.Context) (*Metadata, error) {
	o := p.overrides
	meta := &Metadata{Endpoints: o}
	if o.Authorization == "" || o.Token == "" || o.JWKS == "" {
		ctx, cancel := context.WithTimeout(ctx, IdPTimeout)
		defer cancel()
		done := p.report.IdPCall("discovery")
		prov, err := gooidc.NewProvider(gooidc.ClientContext(ctx, p.client), p.issuer)
		done()
		p.tracker.Record("discovery", err)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Auth        string   `json:"authorization_endpoint"`
			Token       string   `json:"token_endpoint"`
			JWKS        string   `json:"jwks_uri"`
			EndSession  string   `json:"end_session_endpoint"`
			Revocation  string   `json:"revocation_endpoint"`
			Algs        []string `json:"id_token_signing_alg_values_supported"`
			AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
			IssParam    bool     `json:"authorization_response_iss_parameter_supported"`
		}
		if err := prov.Claims(&doc); err != nil {
			return nil, err
		}
		meta.Authorization = firstNonEmpty(o.Authorization, doc.Auth)
		meta.Token = firstNonEmpty(o.Token, doc.Token)
		meta.JWKS = firstNonEmpty(o.JWKS, doc.JWKS)
		meta.EndSession = firstNonEmpty(o.EndSession, doc.EndSession)
		meta.Revocation = doc.Revocation
		meta.Algs = doc.Algs
		meta.AuthMethods = doc.AuthMethods
		meta.IssParamSupported = doc.IssParam
	}
	if meta.Authorization == "" || meta.Token == "" || meta.JWKS == "" {
		return nil, errors.New("the provider's metadata lacks an authorization, token or jwks_uri endpoint")
	}
	var algs []string
	for _, a := range meta.Algs {
		if asymmetricAlgs[a] {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	meta.Algs = algs
	return meta, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// StartProbe starts the background probe; its first probe waits an
// interval. Call it once, for a pooled provider; Destruct stops it.
func (p *Provider) StartProbe() {
	p.prober = newProber(p.Probe, time.Now)
	p.prober.start()
}

// UseProbeInterval and ReleaseProbeInterval say which interval a
// configuration wants: the shortest one wanted by any configuration still
// loaded applies, at once.
func (p *Provider) UseProbeInterval(d time.Duration) { p.prober.use(d) }

// ReleaseProbeInterval undoes one UseProbeInterval.
func (p *Provider) ReleaseProbeInterval(d time.Duration) { p.prober.release(d) }

// ProbeInterval is the probe's interval now.
func (p *Provider) ProbeInterval() time.Duration {
	p.prober.mu.Lock()
	defer p.prober.mu.Unlock()
	return p.prober.interval()
}

// ProbeDone is closed once the probe goroutine has ended.
func (p *Provider) ProbeDone() <-chan struct{} { return p.prober.done }

// Recheck starts a probe now unless one started less than an interval ago
// (or one is under way), and reports whether it did; it is a no-op
// without a probe.
func (p *Provider) Recheck() bool { return p.prober.recheck() }

// RevocationSlot takes one of the MaxRevocationCalls slots for a token
// revocation; ok is false when all are taken. release frees it.
func (p *Provider) RevocationSlot() (release func(), ok bool) {
	select {
	case p.revocationSlots <- struct{}{}:
		return func() { <-p.revocationSlots }, true
	default:
		return nil, false
	}
}

// RevocationsUnderWay counts the slots taken.
func (p *Provider) RevocationsUnderWay() int { return len(p.revocationSlots) }
