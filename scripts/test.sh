#!/usr/bin/env bash
# Runs every test layer: vet, the unit and integration tests with the race
# detector, then the end-to-end tests (xcaddy-built Caddy, the oidc-provider IdP,
# headless Chromium). Exits non-zero when anything fails.
set -euo pipefail

# The Go release these scripts build and test with (see the README's "Go toolchain"):
# the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
export PATH="$PATH:$gobin"

# xcaddy-test/ is a module of its own (it needs chromedp, which the module
# users build into Caddy must not), so its commands run from inside it.
echo "== go vet"
go vet ./...
(cd xcaddy-test && go vet -tags e2e ./...)

echo "== govulncheck (offline database)"
bash scripts/vulncheck.sh

echo "== go test -race"
go test -race -count=1 ./...

echo "== fuzz (5 s per target)"
bash scripts/fuzz.sh 5

echo "== end-to-end"
(cd xcaddy-test && go test -tags e2e -count=1 -timeout 20m -v ./...)
