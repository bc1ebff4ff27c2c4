package oidcauth

import (
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// providers holds one provider per issuer (and endpoint overrides). It is
// pooled so that a config reload keeps the discovered metadata, the JWKS
// and the cache of verified tokens.
var providers = caddy.NewUsagePool()

const (
	idpTimeout  = oidc.IdPTimeout
	maxVerified = 100_000
	clockLeeway = oidc.ClockLeeway
)

// errIdPUnavailable marks failures to reach the IdP, as opposed to the IdP
// refusing something; they become 502/503 answers, not logouts.
var errIdPUnavailable = oidc.ErrUnavailable

// provider is a pooled oidc.Provider; when the last configuration using
// it goes, so do its issuer's gauges.
type provider struct {
	*oidc.Provider
	pooled bool
}

// newProvider makes a provider that reports to the module's metrics and
// logs IdP outages to logger (nil: no lines).
func newProvider(issuer string, overrides endpoints, now func() time.Time, logger *zap.Logger) *provider {
	return &provider{Provider: oidc.NewProvider(oidc.Config{
		Issuer: issuer, Overrides: overrides, Now: now, Logger: logger, Reporter: metricsReporter{},
	})}
}

// Destruct implements caddy.Destructor.
func (p *provider) Destruct() error {
	err := p.Provider.Destruct()
	if p.pooled {
		releaseGauges(p.Issuer())
	}
	return err
}
