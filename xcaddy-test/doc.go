// Package e2e holds the end-to-end tests of the oidc_auth module: a Caddy binary
// built with xcaddy from this checkout, the oidc-provider IdP in ./idp, and
// headless Chromium, all started by the tests on 127.0.0.1.
//
// The tests carry the build tag e2e, so `go test ./...` skips them. Run them with
//
//	bash scripts/setup.sh
//	cd xcaddy-test && go test -tags e2e -count=1 -v ./...
//
// The directory is a Go module of its own, so that chromedp is no dependency
// of the module that users build into Caddy.
//
// Environment:
//
//	E2E_CADDY        use this Caddy binary instead of building one
//	E2E_CHROMIUM     Chromium path (default /usr/bin/chromium)
//	E2E_SHOW_LOGS=1  print the IdP and Caddy logs even when a test passes
package e2e
