package oidc

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
)

// DefaultProbeInterval and MinProbeInterval bound the background probe's
// interval.
const (
	DefaultProbeInterval = 30 * time.Second
	MinProbeInterval     = time.Second
)

const (
	// While probes fail, the wait doubles up to this (or the interval, if
	// longer): an IdP that is down is not asked every few seconds.
	maxProbeBackoff = 5 * time.Minute
	// Each wait is longer by up to this fraction, at random, so that many
	// Caddy instances do not probe the IdP in step.
	probeJitter  = 0.2
	probeTimeout = 5 * time.Second
)

// prober checks a provider in the background while handlers use it, so
// that an idle site notices an IdP outage too. It belongs to the pooled
// provider and owns one goroutine, which stop ends.
type prober struct {
	probe func(context.Context) error
	// Seams for tests: the wait before each probe, and the random jitter
	// in [0, 1).
	timer  func(time.Duration) (<-chan time.Time, func() bool)
	jitter func() float64
	now    func() time.Time

	ctx     context.Context
	cancel  context.CancelFunc
	kick    chan struct{}
	changed chan struct{} // the interval changed: the wait is measured again
	done    chan struct{}

	mu        sync.Mutex
	intervals map[time.Duration]int // interval -> handlers that asked for it
	failures  int                   // failed probes in a row
	last      time.Time             // start of the last probe
}

func newProber(probe func(context.Context) error, now func() time.Time) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	return &prober{
		probe: probe,
		timer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
		jitter:    rand.Float64,
		now:       now,
		ctx:       ctx,
		cancel:    cancel,
		kick:      make(chan struct{}),
		changed:   make(chan struct{}, 1),
		done:      make(chan struct{}),
		intervals: map[time.Duration]int{},
	}
}

func (pr *prober) start() { go pr.run() }

// stop ends the goroutine (an ongoing probe is cancelled) and waits for it.
func (pr *prober) stop() {
	pr.cancel()
	<-pr.done
}

// use and release say which interval a handler wants; the shortest wanted
// by any handler still loaded applies, to the current wait too, so a
// reload to a shorter interval takes effect at once.
func (pr *prober) use(d time.Duration) {
	pr.mu.Lock()
	before := pr.interval()
	pr.intervals[d]++
	pr.notify(before)
	pr.mu.Unlock()
}

func (pr *prober) release(d time.Duration) {
	pr.mu.Lock()
	before := pr.interval()
	if pr.intervals[d]--; pr.intervals[d] <= 0 {
		delete(pr.intervals, d)
	}
	pr.notify(before)
	pr.mu.Unlock()
}

// notify wakes the waiting loop when the interval is no longer before;
// pr.mu must be held.
func (pr *prober) notify(before time.Duration) {
	if pr.interval() != before {
		select {
		case pr.changed <- struct{}{}:
		default: // already told
		}
	}
}

// interval is the shortest interval asked for; pr.mu must be held.
func (pr *prober) interval() time.Duration {
	best := time.Duration(0)
	for d := range pr.intervals {
		if best == 0 || d < best {
			best = d
		}
	}
	if best == 0 {
		best = DefaultProbeInterval
	}
	return best
}

// delay is the wait before the next probe: the interval, doubled for each
// failed probe in a row up to maxProbeBackoff, plus jitter; pr.mu must be
// held.
func (pr *prober) delay() time.Duration {
	base := pr.interval()
	ceiling := max(base, maxProbeBackoff)
	d := base
	for i := 0; i < pr.failures && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d + time.Duration(pr.jitter()*probeJitter*float64(d))
}

func (pr *prober) run() {
	defer close(pr.done)
	for {
		if !pr.wait() {
			return
		}
		pr.mu.Lock()
		pr.last = pr.now()
		pr.mu.Unlock()
		err := pr.probe(pr.ctx)
		if pr.ctx.Err() != nil {
			return
		}
		pr.mu.Lock()
		if err != nil {
			pr.failures++
		} else {
			pr.failures = 0
		}
		pr.mu.Unlock()
	}
}

// wait waits until the next probe is due, or health asks for one; it
// returns false when the prober is stopped.
func (pr *prober) wait() bool {
	select {
	case <-pr.changed: // a change before this wait is in its delay already
	default:
	}
	pr.mu.Lock()
	start := pr.now()
	pr.mu.Unlock()
	for {
		pr.mu.Lock()
		d := pr.delay() - pr.now().Sub(start)
		pr.mu.Unlock()
		if d <= 0 {
			return true
		}
		c, stopTimer := pr.timer(d)
		select {
		case <-pr.ctx.Done():
			stopTimer()
			return false
		case <-pr.kick:
			stopTimer()
			return true
		case <-pr.changed:
			stopTimer() // what is left of the new interval
		case <-c:
			return true
		}
	}
}

// recheck starts a probe now unless one started less than an interval ago
// (or one is under way), and reports whether it did. Health calls it while
// the provider is failing, so that a monitor sees the recovery within an
// interval, whatever the backoff.
func (pr *prober) recheck() bool {
	if pr == nil || !pr.due() {
		return false
	}
	select {
	case pr.kick <- struct{}{}:
		return true
	default: // a probe is under way, or the prober has stopped
		return false
	}
}

// due reports whether the last probe started at least an interval ago.
func (pr *prober) due() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.last.IsZero() || pr.now().Sub(pr.last) >= pr.interval()
}

// Probe is the background check of a provider: discovery when it is not
// discovered yet, else a fetch of its discovery document (or of its JWKS,
// for a provider configured without discovery). Nothing it fetches is kept;
// its outcome is recorded like any other call's.
func (p *Provider) Probe(ctx context.Context) error {
	p.mu.Lock()
	meta, keys := p.meta, p.keys.Load()
	p.mu.Unlock()
	if meta == nil {
		_, err := p.Metadata(ctx)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if o := p.overrides; o.Authorization != "" && o.Token != "" && o.JWKS != "" {
		done := p.report.IdPCall("jwks")
		_, _, err := keys.fetch(ctx)
		done()
		p.tracker.Record("jwks", err)
		return err
	}
	done := p.report.IdPCall("discovery")
	_, err := gooidc.NewProvider(gooidc.ClientContext(ctx, p.client), p.issuer)
	done()
	p.tracker.Record("discovery", err)
	return err
}
