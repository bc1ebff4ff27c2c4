package oidcauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddy-oidc-auth/oidcauth/internal/oidc"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminHealth{})
}

// adminHealth serves GET /oidc_auth/health on Caddy's admin endpoint: the
// state of every provider and store in use, for readiness checks.
type adminHealth struct{}

// CaddyModule returns the Caddy module information.
func (adminHealth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.oidc_auth",
		New: func() caddy.Module { return new(adminHealth) },
	}
}

// Routes implements caddy.AdminRouter.
func (adminHealth) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/oidc_auth/health", Handler: caddy.AdminHandlerFunc(serveHealth)}}
}

type providerHealth struct {
	Issuer     string `json:"issuer"`
	Discovered bool   `json:"discovered"`
	// Reachable: the latest call to the provider succeeded.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// FailingEndpoint names the endpoint whose call failed last, while no
	// call has succeeded since.
	FailingEndpoint     string     `json:"failing_endpoint,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastSuccess         *oidc.Call `json:"last_success,omitempty"`
	LastFailure         *oidc.Call `json:"last_failure,omitempty"`
	JWKSKeys            int        `json:"jwks_keys"`
	JWKSAgeSecond       int64      `json:"jwks_age_seconds,omitempty"`
}

type storeHealth struct {
	App       string `json:"app"`
	Kind      string `json:"kind"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
}

func serveHealth(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	report := struct {
		Ready     bool             `json:"ready"`
		Providers []providerHealth `json:"providers"`
		Stores    []storeHealth    `json:"stores"`
	}{Ready: true, Providers: []providerHealth{}, Stores: []storeHealth{}}

	providers.Range(func(_, v any) bool {
		p := v.(*provider)
		// A readiness probe must not wait for a user's request to make the
		// provider known: the probe itself discovers it (with the usual
		// backoff) and loads its keys.
		if _, err := p.Metadata(r.Context()); err == nil {
			if n, _ := p.Keys().Size(); n == 0 {
				_ = p.Keys().Refetch(r.Context())
			}
		}
		h := p.health()
		if !h.Discovered || h.JWKSKeys == 0 || !h.Reachable {
			report.Ready = false
		}
		if h.FailingEndpoint != "" {
			// Whatever the probe's backoff, a watched provider is checked
			// again once an interval.
			p.Recheck()
		}
		report.Providers = append(report.Providers, h)
		return true
	})
	apps.Range(func(_, v any) bool {
		a := v.(*appState)
		h := storeHealth{App: a.id, Kind: a.store.Kind(), Reachable: true}
		if err := a.store.Ping(r.Context()); err != nil {
			h.Reachable, h.Error = false, err.Error()
			report.Ready = false
		}
		report.Stores = append(report.Stores, h)
		return true
	})
	w.Header().Set("Content-Type", "application/json")
	if !report.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	return json.NewEncoder(w).Encode(report)
}

func (p *provider) health() providerHealth {
	st := p.Status()
	h := providerHealth{Issuer: p.Issuer(), Discovered: st.Discovered}
	if st.DiscoveryError != nil {
		h.Error = st.DiscoveryError.Error()
	}
	s := st.Calls
	h.Reachable = s.LastSuccess != nil && !s.Down()
	h.ConsecutiveFailures, h.LastSuccess, h.LastFailure = s.ConsecutiveFailures, s.LastSuccess, s.LastFailure
	if s.Down() {
		h.FailingEndpoint = s.LastFailure.Endpoint
		if h.Error == "" {
			h.Error = fmt.Sprintf("%v: %s endpoint: %s", errIdPUnavailable, s.LastFailure.Endpoint, s.LastFailure.Error)
		}
	}
	h.JWKSKeys = st.JWKSKeys
	if !st.JWKSFetched.IsZero() {
		h.JWKSAgeSecond = int64(time.Since(st.JWKSFetched) / time.Second)
	}
	return h
}

// Interface guard
var _ caddy.AdminRouter = adminHealth{}
