package oidctest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/caddy-oidc-auth/oidcauth/oidctest"
)

// login runs the authorization endpoint over HTTP and returns the code it
// redirects back with, after checking state and iss.
func login(t *testing.T, p *oidctest.Provider, cfg *oauth2.Config, verifier, nonce string) string {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(cfg.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorize: status %d location %q", res.StatusCode, res.Header.Get("Location"))
	}
	q := loc.Query()
	if q.Get("state") != "st-1" || q.Get("iss") != p.Issuer || q.Get("code") == "" || loc.Path != "/cb" {
		t.Fatalf("authorize redirected to %s", loc)
	}
	return q.Get("code")
}

func setup(t *testing.T) (*oidctest.Provider, *oidctest.Clock, *oidc.Provider, *oauth2.Config) {
	clock := oidctest.NewClock()
	p := oidctest.New(t, clock)
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, Endpoint: op.Endpoint(),
		RedirectURL: "http://app.test/cb", Scopes: []string{oidc.ScopeOpenID, "email"}}
	return p, clock, op, cfg
}

// TestProviderWithGoOIDC: a login with go-oidc and x/oauth2 as a relying
// party would do it: discovery, PKCE, an ID token that verifies with its
// nonce and at_hash, and refresh tokens that rotate.
func TestProviderWithGoOIDC(t *testing.T) {
	p, clock, op, cfg := setup(t)
	ctx := context.Background()
	verifier := oauth2.GenerateVerifier()
	tok, err := cfg.Exchange(ctx, login(t, p, cfg, verifier, "n-1"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := op.VerifierContext(ctx, &oidc.Config{ClientID: p.ClientID, Now: clock.Now}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != "n-1" || idt.Subject != "user-1" {
		t.Errorf("ID token nonce %q sub %q", idt.Nonce, idt.Subject)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Errorf("at_hash: %v", err)
	}
	if styles, verifiers, _, _ := p.Observed(); len(styles) != 1 || styles[0] != "basic" || len(verifiers) != 1 || verifiers[0] != verifier {
		t.Errorf("observed auth styles %v verifiers %v", styles, verifiers)
	}

	old := tok.RefreshToken
	tok.Expiry = clock.Now().Add(-time.Second)
	fresh, err := cfg.TokenSource(ctx, tok).Token()
	if err != nil || fresh.RefreshToken == "" || fresh.RefreshToken == old {
		t.Fatalf("refresh: %v, refresh token %q (was %q)", err, fresh.RefreshToken, old)
	}
	_, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
	if re := (*oauth2.RetrieveError)(nil); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("the rotated refresh token: %v, want invalid_grant", err)
	}
	if p.Grants("authorization_code") != 1 || p.Grants("refresh_token") != 2 {
		t.Errorf("grants: %d code, %d refresh", p.Grants("authorization_code"), p.Grants("refresh_token"))
	}
}

// TestProviderRefuses: a wrong PKCE verifier, a code used twice and a
// wrong client secret are refused as a conforming IdP refuses them.
func TestProviderRefuses(t *testing.T) {
	p, _, _, cfg := setup(t)
	ctx := context.Background()
	want := func(what string, err error, code string) {
		t.Helper()
		if re := (*oauth2.RetrieveError)(nil); !errors.As(err, &re) || re.ErrorCode != code {
			t.Errorf("%s: %v, want %s", what, err, code)
		}
	}
	v := oauth2.GenerateVerifier()
	_, err := cfg.Exchange(ctx, login(t, p, cfg, v, "n"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	want("wrong verifier", err, "invalid_grant")

	c := login(t, p, cfg, v, "n")
	if _, err := cfg.Exchange(ctx, c, oauth2.VerifierOption(v)); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
	want("code used twice", err, "invalid_grant")

	bad := *cfg
	bad.ClientSecret = "wrong"
	_, err = bad.Exchange(ctx, login(t, p, cfg, v, "n"), oauth2.VerifierOption(v))
	want("wrong client secret", err, "invalid_client")
}

// TestProviderKeys: Rotate replaces or adds published keys, SignWith signs
// without publishing, ExtraKeys are published too and JWKSStatus fails the
// JWKS endpoint.
func TestProviderKeys(t *testing.T) {
	p := oidctest.New(t, nil)
	kids := func() []string {
		t.Helper()
		res, err := http.Get(p.URL + "/jwks")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return []string{res.Status}
		}
		var set struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.KID)
		}
		return out
	}
	check := func(what string, want ...string) {
		t.Helper()
		if got := kids(); len(got) != len(want) || (len(got) > 0 && got[0] != want[0]) || (len(got) > 1 && got[1] != want[1]) {
			t.Errorf("%s: JWKS kids %v, want %v", what, got, want)
		}
	}
	check("at start", "key-1")
	p.Rotate(oidctest.NewRSAKey("key-2", 1), true)
	check("rotated, old kept", "key-1", "key-2")
	p.Rotate(oidctest.NewECKey("ec-1"), false)
	check("rotated, old dropped", "ec-1")
	p.SignWith(oidctest.NewRSAKey("hidden", 2))
	if p.ActiveKey().KID != "hidden" {
		t.Errorf("active key %q after SignWith", p.ActiveKey().KID)
	}
	check("signing with an unpublished key", "ec-1")
	p.Set(func(s *oidctest.Script) { s.ExtraKeys = []*oidctest.Key{oidctest.NewRSAKey("extra", 3)} })
	check("extra key", "ec-1", "extra")
	p.Set(func(s *oidctest.Script) { s.JWKSStatus = http.StatusServiceUnavailable })
	check("failing", "503 Service Unavailable")
	if n := p.JWKSFetches.Load(); n != 6 {
		t.Errorf("JWKS fetches counted: %d, want 6", n)
	}
}
