#!/usr/bin/env bash
# Starts a local demo: the test IdP and a Caddy built with xcaddy from this
# checkout, protecting xcaddy-test/demo-site/. Ctrl-C stops both.
#
#   APP_PORT (default 8080)  the demo site, at http://localhost:$APP_PORT
#   IDP_PORT (default 9090)  the IdP, at http://127.0.0.1:$IDP_PORT
#
# The browser must use exactly http://localhost:$APP_PORT: the redirect URI
# registered at the IdP and the cookies are bound to that host.
set -euo pipefail

# The Go release these scripts build and test with (see the README's "Go toolchain"):
# the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
app_port="${APP_PORT:-8080}"
idp_port="${IDP_PORT:-9090}"
app="http://localhost:$app_port"
issuer="http://127.0.0.1:$idp_port"
work="$root/.demo"
mkdir -p "$work"

bash scripts/setup.sh >/dev/null

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
export PATH="$PATH:$gobin"

caddy="$root/xcaddy-test/.build/caddy"
stale=0
[ -x "$caddy" ] || stale=1
if [ "$stale" -eq 0 ] && [ -n "$(find "$root" \( -path "$root/xcaddy-test" -o -name '.*' -o -name node_modules \) -prune -o \
	\( -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum \) -newer "$caddy" -print -quit)" ]; then
	stale=1
fi
if [ "$stale" -eq 1 ]; then
	echo "demo: building Caddy with xcaddy (a first build takes a couple of minutes)"
	mkdir -p "$(dirname "$caddy")"
	xcaddy build v2.11.9 \
		--with "github.com/caddy-oidc-auth/oidcauth@v0.0.0=$root" \
		--output "$caddy"
fi

cat >"$work/clients.json" <<JSON
[
  {
    "client_id": "demo-app",
    "client_secret": "demo-secret",
    "redirect_uris": ["$app/auth/callback"],
    "post_logout_redirect_uris": ["$app/signed-out.html"],
    "backchannel_logout_uri": "$app/auth/backchannel-logout"
  }
]
JSON

cat >"$work/Caddyfile" <<CADDY
{
	admin off
	storage file_system $work/storage
}

http://localhost:$app_port {
	bind 127.0.0.1
	root * $root/xcaddy-test/demo-site

	@public path /signed-out.html
	handle @public {
		file_server
	}
	handle {
		oidc_auth {
			issuer $issuer
			client_id demo-app
			client_secret demo-secret
			redirect_uri /auth/callback
			post_logout_redirect_uri $app/signed-out.html
		}
		templates
		file_server
	}
}
CADDY

pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	echo
	echo "demo: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

IDP_PORT="$idp_port" IDP_CLIENTS="$work/clients.json" IDP_AT_TTL=3600 \
	IDP_KEYS_FILE="$work/idp-keys.json" \
	node "$root/xcaddy-test/idp/idp.mjs" >"$work/idp.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
	curl -fsS "$issuer/.well-known/openid-configuration" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fsS "$issuer/.well-known/openid-configuration" >/dev/null || {
	echo "demo: the IdP did not start; see $work/idp.log" >&2
	cat "$work/idp.log" >&2
	exit 1
}

XDG_CONFIG_HOME="$work/config" XDG_DATA_HOME="$work/data" \
	"$caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
	curl -s -o /dev/null "$app/signed-out.html" 2>/dev/null && break
	sleep 0.1
done
curl -s -o /dev/null "$app/signed-out.html" || {
	echo "demo: Caddy did not start; see $work/caddy.log" >&2
	tail -n 30 "$work/caddy.log" >&2
	exit 1
}

cat <<MSG

  Demo running.

  Open:        $app/
  Sign in as:  alice / alice-password   (or bob / bob-password)
  IdP:         $issuer   (logs: $work/idp.log)
  Caddy logs:  $work/caddy.log

  Press Ctrl-C to stop.

MSG

wait -n "${pids[@]}" || true
echo "demo: a process exited; see $work/idp.log and $work/caddy.log" >&2
