#!/usr/bin/env bash
# Installs what the tests need: Chromium and Redis (apt), the test IdP's npm
# packages, and xcaddy. Safe to run again; it only installs what is missing.
set -euo pipefail

# The Go release these scripts build and test with (see the README's "Go toolchain"):
# the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
xcaddy_version="v0.4.5"

need_apt=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Sentinel failover tests (Debian packages it apart from redis-server).
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
if [ "${#need_apt[@]}" -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "setup: installing ${need_apt[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

command -v node >/dev/null 2>&1 || { echo "setup: node (20 or later) is required" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "setup: go is required" >&2; exit 1; }

idp="$root/xcaddy-test/idp"
if [ ! -d "$idp/node_modules/oidc-provider" ] || [ "$idp/package-lock.json" -nt "$idp/node_modules/.package-lock.json" ]; then
	echo "setup: npm ci in xcaddy-test/idp"
	(cd "$idp" && npm ci --no-audit --no-fund --loglevel=error)
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if ! command -v xcaddy >/dev/null 2>&1 && [ ! -x "$gobin/xcaddy" ]; then
	echo "setup: installing xcaddy $xcaddy_version"
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$xcaddy_version"
fi
echo "setup: done"
