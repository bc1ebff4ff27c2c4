#!/usr/bin/env bash
# Request throughput, latency and server CPU per request of one Caddy binary
# serving the same 1 KB static file five ways, plus one control:
#
#   a  plain file_server (no authentication)
#   b  oidc_auth with a signed-in session (cookie from a real login)
#   c  forward_auth to oauth2-proxy, signed in
#   d  greenpau/caddy-security (OIDC generic provider + authorization policy), signed in
#   e  b with `store redis://...` (a local redis-server)
#   f  a, with wrk sending b's session cookie anyway (plain file_server does
#      not read it): what the cookie's bytes alone cost, without the module
#   h  control: a, but wrk sends a 3-byte cookie (x=1): what any Cookie
#      header costs net/http and Caddy (a header map, Caddy's copy of it),
#      whatever its size
#   g  b with `upstream_jwt` (a signed identity assertion on every request)
#   s  b with `allow_shared_cache` (no `Cache-Control: private` added): what
#      that header costs
#   p  control: f, with the module loaded but only on another path (a route
#      for /private/*): what its presence in the process costs, with no
#      request going through it
#   q  control: p without the module: f with a route for /private/* that
#      answers "private" itself (what p's route, not the module, costs)
#   k  control: f with one more handler that does next to nothing (`vars
#      bench 1`) in the same route: what Caddy charges for any handler
#   z  control: a again, in a Caddy process of its own (an A/A test): how far
#      two processes running the same configuration differ, the floor under
#      any comparison of two configurations
#   w  control: s plus `header Cache-Control private` (Caddy's header handler
#      sets the same line): the header without the module's response wrapper
#   t  e over TLS: `store rediss://...` to a redis-server with a TLS port only,
#      its certificate from a CA made by this script (openssl)
#
# Everything runs on 127.0.0.1: the test IdP (xcaddy-test/idp), Redis,
# oauth2-proxy, one Caddy process per configuration and wrk. Runs are
# interleaved (a b c d e f a b c d e f ...) and medians are reported. Takes
# about 7 minutes with the defaults once the binaries are built.
#
# Usage: bash bench/run.sh
#
# Environment knobs:
#   BENCH_ROUNDS       rounds of runs (default 5)
#   BENCH_DURATION     wrk duration of one run (default 10s)
#   BENCH_THREADS      wrk threads (default 1, as the project issue measures)
#   BENCH_CONNECTIONS  wrk connections (default 32)
#   BENCH_WARMUP       unmeasured wrk run per configuration first (default 3s)
#   BENCH_CONFIGS      which configurations, in order (default "a b c d e f"; f, k, p and q need b;
#                      g, upstream_jwt, and t, TLS Redis store, only when named)
#   BENCH_OUT          file for the report (default bench/.build/report-<time>.txt)
#   BENCH_KEEP=1       keep the temporary directory (configs and logs)
#   BENCH_PROFILE      configurations to profile (e.g. "a b"): their Caddy gets an
#                      admin endpoint and a CPU profile is taken during the warm-up
#                      run (make it long, e.g. BENCH_WARMUP=10s), into
#                      bench/.build/profile-<config>.pb.gz (go tool pprof -top ...)
#   BENCH_HEADERS      "bare" (default): wrk sends only Host (and the configuration's
#                      cookies), as the project issue measures; "browser": every
#                      request of every configuration also carries the headers a
#                      browser sends when it opens a page (User-Agent, Accept, ...)
#   BENCH_ALTERNATE=1  run the configurations in reverse order in every second round
#                      (a b c, c b a, a b c, ...), so a machine that slows down or
#                      speeds up during the run favours none of them
#   BENCH_MODULE_DIR   build the module from this directory instead (a git worktree of
#                      an older commit, to measure it with today's harness); its
#                      binary is kept apart, as bench/.build/caddy-<commit>
#   BENCH_MAX_LOAD     if set (e.g. 1.0), wait before the warm-up until the 1-minute
#                      load average is at most this (polled every 60 s, 30 min at most)
#   BENCH_PIN=1        pinned mode: every server process (Caddy, the IdP, Redis,
#                      oauth2-proxy) runs on CPU 0 only (taskset; Go then uses one
#                      thread for Go code, GOMAXPROCS=1) and wrk on CPU 1 only, so the
#                      load generator never takes CPU time from the server measured
set -euo pipefail

# The Go release these scripts build and test with (see the README's "Go toolchain"):
# the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

ROUNDS=${BENCH_ROUNDS:-5}
# Pinned mode: command prefixes for the server side and for wrk.
SERVER_CPU=() CLIENT_CPU=() PINNING="unpinned"
if [[ ${BENCH_PIN:-0} == 1 ]]; then
	command -v taskset >/dev/null || { echo "bench: BENCH_PIN=1 needs taskset (util-linux)" >&2; exit 1; }
	(($(nproc) >= 2)) || { echo "bench: BENCH_PIN=1 needs 2 CPUs, this machine has $(nproc)" >&2; exit 1; }
	SERVER_CPU=(taskset -c 0) CLIENT_CPU=(taskset -c 1) PINNING="pinned: servers on CPU 0, wrk on CPU 1"
fi
DURATION=${BENCH_DURATION:-10s}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNECTIONS:-32}
WARMUP=${BENCH_WARMUP:-3s}
CONFIGS=${BENCH_CONFIGS:-"a b c d e f"}
HEADERS=${BENCH_HEADERS:-bare}

CADDY_VERSION=v2.11.9
XCADDY_VERSION=v0.4.5
OAUTH2_PROXY_VERSION=v7.15.6
CADDY_SECURITY_VERSION=v1.1.64
MODULE=github.com/caddy-oidc-auth/oidcauth

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/bench/.build
mkdir -p "$BUILD"
OUT=${BENCH_OUT:-$BUILD/report-$(date +%Y%m%d-%H%M%S).txt}
WORK=$(mktemp -d /tmp/oidcauth-bench.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[bench] FAILED: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ process control

PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD... : runs CMD in the background with its output in $WORK/NAME.log
start() {
	local name=$1
	shift
	"${SERVER_CPU[@]}" "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=("$!")
	LAST_PID=$!
}

# wait_http URL PID NAME: until URL answers anything, or PID dies
wait_http() {
	local url=$1 pid=$2 name=$3
	local deadline=$((SECONDS + 120))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || { tail -n 40 "$WORK/$name.log" >&2; die "$name exited"; }
		if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
		sleep 0.1
	done
	tail -n 40 "$WORK/$name.log" >&2
	die "$name did not answer $url within 120 s"
}

USED_PORTS=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if [[ -z $(ss -Htln "sport = :$p") ]]; then
			USED_PORTS+="$p "
			echo "$p"
			return 0
		fi
	done
	die "no free port"
}

# ------------------------------------------------------------ tools

need_apt() {
	local bin=$1 pkg=$2
	command -v "$bin" >/dev/null && return 0
	log "installing $pkg"
	if ! apt-get install -y -q "$pkg" >/dev/null 2>&1; then
		apt-get update -q >/dev/null 2>&1 || true
		apt-get install -y -q "$pkg" >/dev/null || die "cannot install $pkg"
	fi
}
need_apt wrk wrk
need_apt redis-server redis-server
need_apt curl curl
need_apt ss iproute2
need_apt openssl openssl
command -v go >/dev/null || die "go is not installed"
command -v node >/dev/null || die "node is not installed"

GOBIN_DIR=$(go env GOPATH)/bin
XCADDY=$(command -v xcaddy || echo "$GOBIN_DIR/xcaddy")
if [[ ! -x $XCADDY ]]; then
	log "installing xcaddy $XCADDY_VERSION"
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
fi

if [[ ! -d $ROOT/xcaddy-test/idp/node_modules/oidc-provider ]]; then
	log "installing the test IdP's npm packages"
	(cd "$ROOT/xcaddy-test/idp" && npm ci --no-audit --no-fund >/dev/null)
fi

# One Caddy binary for every configuration: this module and caddy-security.
# Rebuilt when a Go or module file of the module is newer, or the pins change.
MODULE_DIR=$(cd "${BENCH_MODULE_DIR:-$ROOT}" && pwd)
CADDY=$BUILD/caddy
if [[ $MODULE_DIR != "$ROOT" ]]; then
	CADDY=$BUILD/caddy-$(cd "$MODULE_DIR" && git rev-parse --short HEAD) || die "BENCH_MODULE_DIR is not a git checkout"
fi
STAMP="caddy=$CADDY_VERSION caddy-security=$CADDY_SECURITY_VERSION"
if [[ ! -x $CADDY || $(cat "$CADDY.stamp" 2>/dev/null) != "$STAMP" ||
	-n $(find "$MODULE_DIR" -maxdepth 1 \( -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum \) -newer "$CADDY" | head -1) ||
	-n $(find "$MODULE_DIR/internal" -name '*.go' ! -name '*_test.go' -newer "$CADDY" 2>/dev/null | head -1) ]]; then
	log "building Caddy $CADDY_VERSION with $MODULE and caddy-security $CADDY_SECURITY_VERSION (a few minutes)"
	# go-authcrunch is served by the module proxy but not known to the
	# checksum database that answers here, so it is not looked up there.
	(cd "$BUILD" && GONOSUMDB=github.com/greenpau "$XCADDY" build "$CADDY_VERSION" \
		--with "$MODULE@v0.0.0=$MODULE_DIR" \
		--with "github.com/greenpau/caddy-security@$CADDY_SECURITY_VERSION" \
		--output "$CADDY.tmp") >"$BUILD/build-caddy.log" 2>&1 || { tail -n 30 "$BUILD/build-caddy.log" >&2; die "xcaddy build"; }
	mv "$CADDY.tmp" "$CADDY"
	echo "$STAMP" >"$CADDY.stamp"
	(cd "$MODULE_DIR" && echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!bench' ':!xcaddy-test' 2>/dev/null || echo '+local changes')") >"$CADDY.source"
fi

OAUTH2_PROXY=$BUILD/oauth2-proxy-$OAUTH2_PROXY_VERSION
if [[ ! -x $OAUTH2_PROXY ]]; then
	log "building oauth2-proxy $OAUTH2_PROXY_VERSION"
	mkdir -p "$BUILD/gobin"
	GOBIN=$BUILD/gobin go install "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION" >"$BUILD/build-oauth2-proxy.log" 2>&1 ||
		{ tail -n 30 "$BUILD/build-oauth2-proxy.log" >&2; die "go install oauth2-proxy"; }
	mv "$BUILD/gobin/oauth2-proxy" "$OAUTH2_PROXY"
fi

LOGIN=$BUILD/login
(cd "$ROOT/bench/login" && go build -o "$LOGIN" .) || die "building bench/login"

# ------------------------------------------------------------ the site

SITE=$WORK/site
mkdir -p "$SITE"
# 1024 bytes of text
awk 'BEGIN { for (i = 0; i < 16; i++) printf "%063d\n", i }' >"$SITE/bench-1k.txt"
FILE_PATH=/bench-1k.txt
[[ $(wc -c <"$SITE/bench-1k.txt") == 1024 ]] || die "the test file is not 1024 bytes"

IDP_PORT=$(free_port)
REDIS_PORT=$(free_port)
REDIS_TLS_PORT=$(free_port)
O2P_PORT=$(free_port)
declare -A PORT
declare -A ADMIN_PORT
for c in a b c d e f g h k p q s t w z; do
	PORT[$c]=$(free_port)
	ADMIN_PORT[$c]=$(free_port)
done
ISSUER=http://127.0.0.1:$IDP_PORT

# ------------------------------------------------------------ IdP

cat >"$WORK/clients.json" <<EOF
[
  {"client_id": "bench-oidc", "client_secret": "bench-oidc-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[b]}/auth/callback"], "post_logout_redirect_uris": []},
  {"client_id": "bench-oidc-redis", "client_secret": "bench-oidc-redis-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[e]}/auth/callback"], "post_logout_redirect_uris": []},
  {"client_id": "bench-oidc-redistls", "client_secret": "bench-oidc-redistls-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[t]}/auth/callback"], "post_logout_redirect_uris": []},
  {"client_id": "bench-oidc-shared", "client_secret": "bench-oidc-shared-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[s]}/auth/callback", "http://127.0.0.1:${PORT[w]}/auth/callback"],
   "post_logout_redirect_uris": []},
  {"client_id": "bench-oidc-ujwt", "client_secret": "bench-oidc-ujwt-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[g]}/auth/callback"], "post_logout_redirect_uris": []},
  {"client_id": "bench-oauth2-proxy", "client_secret": "bench-oauth2-proxy-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[c]}/oauth2/callback"], "post_logout_redirect_uris": [],
   "token_endpoint_auth_method": "client_secret_basic"},
  {"client_id": "bench-caddy-security", "client_secret": "bench-caddy-security-secret",
   "redirect_uris": ["http://127.0.0.1:${PORT[d]}/auth/oauth2/generic/authorization-code-callback"],
   "post_logout_redirect_uris": []}
]
EOF
log "starting the IdP on $ISSUER"
# Access tokens live a day: no refresh happens during the runs. The signing
# key is kept in .build: generating one is the slowest part of a start.
start idp env IDP_PORT="$IDP_PORT" IDP_CLIENTS="$WORK/clients.json" IDP_AT_TTL=86400 \
	IDP_KEYS_FILE="$BUILD/idp-keys.json" node "$ROOT/xcaddy-test/idp/idp.mjs"
IDP_PID=$LAST_PID
wait_http "$ISSUER/.well-known/openid-configuration" "$IDP_PID" idp

# ------------------------------------------------------------ Redis, oauth2-proxy

if [[ " $CONFIGS " == *" e "* ]]; then
	log "starting redis-server on 127.0.0.1:$REDIS_PORT"
	start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK"
	REDIS_PID=$LAST_PID
	for _ in $(seq 100); do
		[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
		sleep 0.1
	done
	[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || die "redis-server does not answer"
fi

if [[ " $CONFIGS " == *" t "* ]]; then
	# A CA and a server certificate for 127.0.0.1, made here; Redis listens
	# on its TLS port only and does not ask for client certificates.
	TLS=$WORK/tls
	mkdir -p "$TLS"
	(
		cd "$TLS"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=bench Redis CA" -keyout ca-key.pem -out ca.pem
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=127.0.0.1" -keyout redis-key.pem -out redis.csr
		printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
		openssl x509 -req -in redis.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
			-extfile ext.cnf -out redis.pem
	) >"$WORK/tls.log" 2>&1 || { cat "$WORK/tls.log" >&2; die "making the test CA with openssl"; }
	log "starting redis-server with TLS on 127.0.0.1:$REDIS_TLS_PORT"
	start redis-tls redis-server --port 0 --tls-port "$REDIS_TLS_PORT" --bind 127.0.0.1 \
		--tls-cert-file "$TLS/redis.pem" --tls-key-file "$TLS/redis-key.pem" \
		--tls-ca-cert-file "$TLS/ca.pem" --tls-auth-clients no \
		--save '' --appendonly no --dir "$WORK"
	REDIS_TLS_PID=$LAST_PID
	rping() { redis-cli --tls --cacert "$TLS/ca.pem" -h 127.0.0.1 -p "$REDIS_TLS_PORT" ping 2>/dev/null; }
	for _ in $(seq 100); do
		[[ $(rping) == PONG ]] && break
		sleep 0.1
	done
	[[ $(rping) == PONG ]] || { tail -n 20 "$WORK/redis-tls.log" >&2; die "redis-server (TLS) does not answer"; }
fi

if [[ " $CONFIGS " == *" c "* ]]; then
	log "starting oauth2-proxy $OAUTH2_PROXY_VERSION on 127.0.0.1:$O2P_PORT"
	start oauth2-proxy "$OAUTH2_PROXY" \
		--http-address="127.0.0.1:$O2P_PORT" \
		--provider=oidc \
		--oidc-issuer-url="$ISSUER" \
		--client-id=bench-oauth2-proxy \
		--client-secret=bench-oauth2-proxy-secret \
		--redirect-url="http://127.0.0.1:${PORT[c]}/oauth2/callback" \
		--code-challenge-method=S256 \
		--scope="openid email profile" \
		--cookie-secret=0123456789abcdef0123456789abcdef \
		--cookie-secure=false \
		--cookie-expire=24h \
		--email-domain='*' \
		--reverse-proxy=true \
		--skip-provider-button=true \
		--set-xauthrequest=true \
		--upstream=static://202 \
		--whitelist-domain='127.0.0.1:*' \
		--request-logging=false
	O2P_PID=$LAST_PID
	wait_http "http://127.0.0.1:$O2P_PORT/ping" "$O2P_PID" oauth2-proxy
fi

# ------------------------------------------------------------ Caddy

global_options() {
	local admin="admin off"
	[[ " ${BENCH_PROFILE:-} " == *" $1 "* ]] && admin="admin 127.0.0.1:${ADMIN_PORT[$1]}"
	cat <<EOF
{
	$admin
	auto_https off
	persist_config off
	storage file_system $WORK/caddy-$1/storage
EOF
}

site_head() {
	cat <<EOF
http://127.0.0.1:${PORT[$1]} {
	bind 127.0.0.1
	root * $SITE
EOF
}

caddyfile() {
	local c=$1
	case $c in
	a | f | h | z)
		global_options "$c"
		echo "}"
		site_head "$c"
		cat <<EOF
	file_server
}
EOF
		;;
	k)
		global_options k
		echo "}"
		site_head k
		cat <<EOF
	vars bench 1
	file_server
}
EOF
		;;
	q)
		global_options q
		echo "}"
		site_head q
		cat <<EOF
	route /private/* {
		respond "private"
	}
	file_server
}
EOF
		;;
	p)
		global_options p
		echo "}"
		site_head p
		cat <<EOF
	route /private/* {
		oidc_auth {
			issuer $ISSUER
			client_id bench-oidc
			client_secret bench-oidc-secret
			cookie_secret bench-cookie-secret-0123456789abcdef-p
		}
	}
	file_server
}
EOF
		;;
	b | e | g | s | t | w)
		global_options "$c"
		echo "}"
		site_head "$c"
		# The README's smallest Caddyfile, plus cookie_secret.
		local id=bench-oidc store="" extra=""
		if [[ $c == e ]]; then
			id=bench-oidc-redis
			store="store redis://127.0.0.1:$REDIS_PORT/0"
		fi
		if [[ $c == s || $c == w ]]; then
			id=bench-oidc-shared
			store="allow_shared_cache"
		fi
		[[ $c == w ]] && extra="header Cache-Control private"
		if [[ $c == t ]]; then
			id=bench-oidc-redistls
			store="store rediss://127.0.0.1:$REDIS_TLS_PORT/0 {
			tls_ca $TLS/ca.pem
		}"
		fi
		if [[ $c == g ]]; then
			id=bench-oidc-ujwt
			store="upstream_jwt"
		fi
		cat <<EOF
	oidc_auth {
		issuer $ISSUER
		client_id $id
		client_secret $id-secret
		cookie_secret bench-cookie-secret-0123456789abcdef-$c
		$store
	}
	$extra
	file_server
}
EOF
		;;
	c)
		global_options c
		echo "}"
		site_head c
		# As in oauth2-proxy's Caddy integration docs.
		cat <<EOF
	handle /oauth2/* {
		reverse_proxy 127.0.0.1:$O2P_PORT {
			header_up X-Real-IP {remote_host}
			header_up X-Forwarded-Uri {uri}
		}
	}
	handle {
		forward_auth 127.0.0.1:$O2P_PORT {
			uri /oauth2/auth
			header_up X-Real-IP {remote_host}
			copy_headers X-Auth-Request-User X-Auth-Request-Email
			@error status 401
			handle_response @error {
				redir * /oauth2/sign_in?rd={scheme}://{hostport}{uri}
			}
		}
		file_server
	}
}
EOF
		;;
	d)
		global_options d
		cat <<EOF
	security {
		oauth identity provider generic {
			realm generic
			driver generic
			client_id bench-caddy-security
			client_secret bench-caddy-security-secret
			scopes openid email profile
			base_auth_url $ISSUER
			metadata_url $ISSUER/.well-known/openid-configuration
		}
		authentication portal benchportal {
			crypto default token lifetime 86400
			crypto key sign-verify bench-caddy-security-shared-key-0123456789
			enable identity provider generic
			cookie insecure on
			transform user {
				match realm generic
				action add role authp/user
			}
		}
		authorization policy benchpolicy {
			set auth url /auth/oauth2/generic
			crypto key verify bench-caddy-security-shared-key-0123456789
			allow roles authp/user
		}
	}
}
EOF
		site_head d
		cat <<EOF
	route /auth* {
		authenticate with benchportal
	}
	route {
		authorize with benchpolicy
		file_server
	}
}
EOF
		;;
	esac
}

declare -A CADDY_PID AUX_PID COOKIE
COOKIE_SIZES=""
COOKIE_NAMES=""
for c in $CONFIGS; do
	mkdir -p "$WORK/caddy-$c"
	caddyfile "$c" >"$WORK/caddy-$c/Caddyfile"
	log "starting Caddy ($c) on 127.0.0.1:${PORT[$c]}"
	start "caddy-$c" env HOME="$WORK/caddy-$c" XDG_CONFIG_HOME="$WORK/caddy-$c/config" XDG_DATA_HOME="$WORK/caddy-$c/data" \
		"$CADDY" run --config "$WORK/caddy-$c/Caddyfile" --adapter caddyfile
	CADDY_PID[$c]=$LAST_PID
	wait_http "http://127.0.0.1:${PORT[$c]}/" "${CADDY_PID[$c]}" "caddy-$c"
	AUX_PID[$c]=""
	[[ $c == c ]] && AUX_PID[$c]=$O2P_PID
	[[ $c == e ]] && AUX_PID[$c]=$REDIS_PID
	[[ $c == t ]] && AUX_PID[$c]=$REDIS_TLS_PID
done

# ------------------------------------------------------------ sign in and check

URL() { echo "http://127.0.0.1:${PORT[$1]}$FILE_PATH"; }

for c in $CONFIGS; do
	COOKIE[$c]=""
	[[ $c == a || $c == f || $c == h || $c == k || $c == p || $c == q || $c == z ]] && continue
	log "signing in to ($c) as alice through the IdP's login form"
	COOKIE[$c]=$("$LOGIN" -url "$(URL "$c")" -user alice -password alice-password 2>"$WORK/login-$c.log") ||
		{ cat "$WORK/login-$c.log" >&2; tail -n 30 "$WORK/caddy-$c.log" >&2; die "login to ($c) failed"; }
	# Without the cookie the file must not be served.
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$(URL "$c")")
	[[ $code != 200 ]] || die "($c) serves the file without a session: authentication is not in the path"
	log "  ($c) without a session: $code; cookie header of ${#COOKIE[$c]} bytes"
	printf '%s\n' "${COOKIE[$c]}" >"$WORK/cookie-$c" # for BENCH_KEEP=1
	COOKIE_SIZES+="$c=${#COOKIE[$c]} "
	# What a browser sends from now on: names and value sizes.
	COOKIE_NAMES+="$c: $(tr ';' '\n' <<<"${COOKIE[$c]}" | awk -F= '{ gsub(/^ +/, "", $1); printf "%s%s(%d B)", sep, $1, length($0) - length($1) - 1; sep = " " }'); "
	[[ ${COOKIE[$c]} != *_lg=* ]] || log "  ($c) the login-loop counter cookie is still sent after login"
done
# The Redis configurations must really use their Redis: the login wrote to it
# and Caddy holds connections (the revocation channel among them).
redis_check() { # redis_check C REDIS-CLI-ARGS...
	local c=$1 clients keys
	shift
	clients=$(redis-cli "$@" info clients 2>/dev/null | awk -F: '/^connected_clients:/ { print $2 + 0 }')
	keys=$(redis-cli "$@" dbsize 2>/dev/null)
	# connected_clients counts this redis-cli too.
	[[ ${clients:-0} -ge 2 && ${keys:-0} -ge 1 ]] || die "($c) is not using its Redis (clients=${clients:-?}, keys=${keys:-?})"
	log "  ($c) Redis: $((clients - 1)) connections from Caddy, $keys keys"
}
[[ " $CONFIGS " == *" e "* ]] && redis_check e -h 127.0.0.1 -p "$REDIS_PORT"
[[ " $CONFIGS " == *" t "* ]] && redis_check t --tls --cacert "$TLS/ca.pem" -h 127.0.0.1 -p "$REDIS_TLS_PORT"
for c in f k p q; do
	if [[ " $CONFIGS " == *" $c "* ]]; then
		[[ -n ${COOKIE[b]:-} ]] || die "configuration $c needs b (it sends b's session cookie)"
		COOKIE[$c]=${COOKIE[b]}
	fi
done
[[ " $CONFIGS " == *" h "* ]] && COOKIE[h]="x=1"

# check_file C: one request with the session must return the 1 KB file with 200
check_file() {
	local c=$1 code hdr=()
	[[ -n ${COOKIE[$c]} ]] && hdr=(-H "Cookie: ${COOKIE[$c]}")
	code=$(curl -s -o "$WORK/check-$c.body" -w '%{http_code}' --max-time 10 "${hdr[@]}" "$(URL "$c")")
	if [[ $code != 200 ]] || ! cmp -s "$WORK/check-$c.body" "$SITE/bench-1k.txt"; then
		head -c 300 "$WORK/check-$c.body" >&2
		die "($c) answered $code instead of 200 with the 1 KB file"
	fi
}
for c in $CONFIGS; do
	check_file "$c"
	log "($c) serves the 1 KB file with 200"
done

# ------------------------------------------------------------ measure

cpu_ticks() { # utime+stime of a process, in clock ticks (0 for none)
	[[ -z ${1:-} ]] && { echo 0; return; }
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

to_us() { # wrk latency (e.g. 812.00us, 1.23ms, 2.00s) in microseconds
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 60000000
		printf "%.1f", n * f }'
}

to_bytes() { # wrk size (e.g. 150.23MB) in bytes
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		f = 1; if (u == "KB") f = 1024; else if (u == "MB") f = 1048576; else if (u == "GB") f = 1073741824
		printf "%.0f", n * f }'
}

RAW=$WORK/raw.tsv
printf 'round\tconfig\treq_per_s\trequests\tp50_us\tp99_us\tcaddy_cpu_us_per_req\taux_cpu_us_per_req\tbytes_per_req\n' >"$RAW"

# What Chromium sends when it opens a page (its client hints included),
# less the cookies: the same for every configuration.
BROWSER_HEADERS=(
	-H 'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"'
	-H 'sec-ch-ua-mobile: ?0'
	-H 'sec-ch-ua-platform: "Linux"'
	-H 'Upgrade-Insecure-Requests: 1'
	-H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
	-H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7'
	-H 'Sec-Fetch-Site: same-origin'
	-H 'Sec-Fetch-Mode: navigate'
	-H 'Sec-Fetch-User: ?1'
	-H 'Sec-Fetch-Dest: document'
	-H 'Accept-Encoding: gzip, deflate, br, zstd'
	-H 'Accept-Language: en-US,en;q=0.9'
)
case $HEADERS in
bare) EXTRA_HEADERS=() ;;
browser) EXTRA_HEADERS=("${BROWSER_HEADERS[@]}") ;;
*) die "BENCH_HEADERS must be bare or browser, not $HEADERS" ;;
esac

run_wrk() { # run_wrk C DURATION ROUND (ROUND 0: warm-up, not recorded)
	local c=$1 dur=$2 round=$3 hdr=() out before after abefore aafter
	hdr=("${EXTRA_HEADERS[@]}")
	[[ -n ${COOKIE[$c]} ]] && hdr+=(-H "Cookie: ${COOKIE[$c]}")
	local prof=""
	if [[ $round == 0 && " ${BENCH_PROFILE:-} " == *" $c "* ]]; then
		local secs=${dur%s}
		secs=$((secs > 2 ? secs - 1 : 1))
		curl -s --max-time $((secs + 30)) -o "$BUILD/profile-$c.pb.gz" \
			"http://127.0.0.1:${ADMIN_PORT[$c]}/debug/pprof/profile?seconds=$secs" &
		prof=$!
	fi
	before=$(cpu_ticks "${CADDY_PID[$c]}")
	abefore=$(cpu_ticks "${AUX_PID[$c]}")
	out=$("${CLIENT_CPU[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$dur" --latency "${hdr[@]}" "$(URL "$c")") || die "wrk failed for ($c)"
	after=$(cpu_ticks "${CADDY_PID[$c]}")
	aafter=$(cpu_ticks "${AUX_PID[$c]}")
	echo "$out" >"$WORK/wrk-$c-$round.txt"
	if [[ -n $prof ]]; then
		wait "$prof" || die "taking the CPU profile of ($c)"
		log "CPU profile of ($c): $BUILD/profile-$c.pb.gz"
	fi
	local rps reqs read p50 p99 non2xx errors bpr
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
	read=$(awk '/requests in/ { print $5 }' <<<"$out")
	p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
	p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
	errors=$(awk '/Socket errors:/' <<<"$out")
	[[ -n $rps && -n $reqs && $reqs -gt 0 ]] || { echo "$out" >&2; die "cannot read wrk's output for ($c)"; }
	[[ -z $non2xx ]] || { echo "$out" >&2; die "($c): $non2xx answers were not 2xx/3xx"; }
	[[ -z $errors ]] || log "($c) round $round: $errors"
	bpr=$(($(to_bytes "${read%,}") / reqs))
	# 1024 bytes of body plus headers; a redirect or an error page is shorter.
	((bpr >= 1100)) || { echo "$out" >&2; die "($c): $bpr bytes per answer, not the 1 KB file"; }
	[[ $round == 0 ]] && return 0
	awk -v r="$round" -v c="$c" -v rps="$rps" -v n="$reqs" -v p50="$(to_us "$p50")" -v p99="$(to_us "$p99")" \
		-v ct=$((after - before)) -v at=$((aafter - abefore)) -v hz="$CLK_TCK" -v bpr="$bpr" 'BEGIN {
		printf "%s\t%s\t%.0f\t%d\t%s\t%s\t%.2f\t%.2f\t%d\n", r, c, rps, n, p50, p99, ct * 1e6 / hz / n, at * 1e6 / hz / n, bpr }' >>"$RAW"
	log "  round $round ($c): $(tail -n 1 "$RAW" | cut -f3,5,6,7,8 | tr '\t' ' ') (req/s p50 p99 caddy-cpu aux-cpu)"
}

# Wait for other work to calm down while everything here is idle (the warm-up
# and the runs load both CPUs themselves).
if [[ -n ${BENCH_MAX_LOAD:-} ]]; then
	for i in $(seq 31); do
		load=$(cut -d' ' -f1 /proc/loadavg)
		awk -v l="$load" -v m="$BENCH_MAX_LOAD" 'BEGIN { exit !(l <= m) }' && break
		((i == 31)) && die "the load average stayed above $BENCH_MAX_LOAD for 30 minutes"
		log "1-minute load average $load > $BENCH_MAX_LOAD: waiting 60 s"
		sleep 60
	done
fi
LOAD_IDLE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
	for c in $CONFIGS; do
		log "warm-up ($c) $WARMUP"
		run_wrk "$c" "$WARMUP" 0
	done
fi
log "measuring: $ROUNDS rounds of $CONFIGS, wrk -t$THREADS -c$CONNS -d$DURATION --latency"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
REVERSED=$(tr ' ' '\n' <<<"$CONFIGS" | sed '/^$/d' | tac | tr '\n' ' ')
for r in $(seq "$ROUNDS"); do
	order=$CONFIGS
	[[ ${BENCH_ALTERNATE:-0} == 1 && $((r % 2)) == 0 ]] && order=$REVERSED
	for c in $order; do
		run_wrk "$c" "$DURATION" "$r"
	done
done
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

# The sessions must still be good after the runs (no refresh, no logout).
for c in $CONFIGS; do check_file "$c"; done

# ------------------------------------------------------------ report

NAMES="a=plain file_server;b=oidc_auth (this module);c=forward_auth + oauth2-proxy;d=caddy-security;e=oidc_auth + redis store;f=plain, sending b's cookie;h=plain, sending x=1;g=oidc_auth + upstream_jwt;s=oidc_auth, allow_shared_cache;p=plain, oidc_auth on another path, sending b's cookie;z=plain file_server, another process;q=plain, a route on another path, sending b's cookie;k=plain + one no-op handler, sending b's cookie;t=oidc_auth + TLS redis store;w=oidc_auth, allow_shared_cache + header Cache-Control"
{
	echo "# oidc_auth benchmark harness: $(date -u +'%Y-%m-%d %H:%M:%S UTC')"
	echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "caddy: $("$CADDY" version | cut -d' ' -f1) ($MODULE at $(cat "$CADDY.source" 2>/dev/null || echo '?'), caddy-security $CADDY_SECURITY_VERSION); oauth2-proxy $OAUTH2_PROXY_VERSION; $(go version | cut -d' ' -f3); $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2); $(redis-server --version | cut -d' ' -f1-3)"
	echo "run: $ROUNDS rounds x {$CONFIGS}$([[ ${BENCH_ALTERNATE:-0} == 1 ]] && echo ' (every second round reversed)'), wrk -t$THREADS -c$CONNS -d$DURATION --latency, GET $FILE_PATH (1024 bytes), keep-alive, request headers: $HEADERS, $PINNING"
	echo "load average (1/5/15 min): $LOAD_IDLE before the warm-up (harness idle), $LOAD_AT_START at the first run, $LOAD_AT_END at the end"
	echo "Cookie header bytes sent by wrk: ${COOKIE_SIZES:-none}${COOKIE[f]:+f=${#COOKIE[f]} }${COOKIE[p]:+p=${#COOKIE[p]} }${COOKIE[q]:+q=${#COOKIE[q]} }${COOKIE[k]:+k=${#COOKIE[k]}}"
	echo "cookies sent (as the login's cookie jar holds them after the first page): ${COOKIE_NAMES:-none}"
	echo
	echo "## raw runs"
	echo
	column -t -s $'\t' "$RAW"
	echo
	echo "## medians (cpu: utime+stime of the process per request; aux: oauth2-proxy for c, redis-server for e and t)"
	echo
	awk -F'\t' -v names="$NAMES" -v order="$CONFIGS" '
	function median(key,   n, i, j, t, a) {
		n = split(vals[key], a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	NR > 1 {
		for (k = 3; k <= 9; k++) vals[$2 SUBSEP k] = vals[$2 SUBSEP k] " " $k
		vals[$2 SUBSEP 10] = vals[$2 SUBSEP 10] " " ($7 + $8)
	}
	END {
		split(names, nl, ";"); for (i in nl) { split(nl[i], kv, "="); label[kv[1]] = kv[2] }
		nc = split(order, cfg, " ")
		for (i = 1; i <= nc; i++) { c = cfg[i]; for (k = 3; k <= 10; k++) m[c, k] = median(c SUBSEP k) }
		printf "%-3s %-30s %10s %10s %10s %14s %12s %14s\n", "", "configuration", "req/s", "p50 ms", "p99 ms", "caddy cpu us", "aux cpu us", "total cpu us"
		for (i = 1; i <= nc; i++) {
			c = cfg[i]
			printf "%-3s %-30s %10.0f %10.3f %10.3f %14.2f %12.2f %14.2f\n", "(" c ")", label[c], m[c,3], m[c,5] / 1000, m[c,6] / 1000, m[c,7], m[c,8], m[c,10]
		}
		if (!(("a", 3) in m)) exit
		print ""
		print "## ratios to (a) plain file_server (medians)"
		print ""
		printf "%-3s %-30s %10s %10s %10s %14s %14s\n", "", "configuration", "req/s", "p50", "p99", "caddy cpu/req", "total cpu/req"
		for (i = 1; i <= nc; i++) {
			c = cfg[i]
			printf "%-3s %-30s %9.3fx %9.3fx %9.3fx %13.3fx %13.3fx\n", "(" c ")", label[c], m[c,3] / m["a",3], m[c,5] / m["a",5], m[c,6] / m["a",6], m[c,7] / m["a",7], m[c,10] / m["a",7]
		}
		print ""
		print "## targets"
		print ""
		print "(from the medians of this run only: a target counts as met when the 95% CI of its"
		print "median per-round ratio, below, lies wholly on the right side of it)"
		print ""
		if (("b", 3) in m) {
			t("(b) req/s >= 0.97x (a)", m["b",3] / m["a",3], m["b",3] / m["a",3] >= 0.97)
			t("(b) server cpu/req <= 1.04x (a)", m["b",7] / m["a",7], m["b",7] / m["a",7] <= 1.04)
			t("(b) p99 <= 1.1x (a)", m["b",6] / m["a",6], m["b",6] / m["a",6] <= 1.1)
		}
		if (("b", 3) in m && ("d", 3) in m) {
			t("(b) req/s ahead of (d) caddy-security", m["b",3] / m["d",3], m["b",3] > m["d",3])
			t("(b) cpu/req below (d) caddy-security", m["b",7] / m["d",7], m["b",7] < m["d",7])
		}
		if (("e", 3) in m) t("(e) req/s >= 0.95x (a)", m["e",3] / m["a",3], m["e",3] / m["a",3] >= 0.95)
		if (("t", 3) in m) t("(t) req/s >= 0.95x (a), as for e", m["t",3] / m["a",3], m["t",3] / m["a",3] >= 0.95)
	}
	function t(what, ratio, ok) { printf "%-42s %7.3fx  %s\n", what, ratio, ok ? "met" : "NOT met" }
	' "$RAW"
	echo
	echo "## per-round ratios (each configuration to (a) of the same round; b/d: to caddy-security; last, controls against each other)"
	echo
	awk -F'\t' -v order="$CONFIGS" '
	function stats(list,   n, i, j, t, a, med, k, p, cdf, ci) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		med = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		# A 95% confidence interval of the median, from order statistics:
		# the k-th smallest and largest ratio, k the largest with
		# P(Binomial(n, 1/2) < k) <= 0.025 (distribution-free).
		k = 0; p = 0.5 ^ n; cdf = 0
		for (i = 0; i < n; i++) {
			cdf += p
			if (cdf > 0.025) break
			k = i + 1
			p = p * (n - i) / (i + 1)
		}
		ci = k >= 1 ? sprintf("  median 95%% CI %.3f-%.3f", a[k], a[n - k + 1]) : "  (too few rounds for a 95% CI of the median)"
		return sprintf("min %.3f  median %.3f  max %.3f  spread %.3f%s", a[1], med, a[n], a[n] - a[1], ci)
	}
	NR > 1 { rps[$1, $2] = $3; cpu[$1, $2] = $7; p99[$1, $2] = $6; if ($1 > rounds) rounds = $1 }
	END {
		nc = split(order, cfg, " ")
		printf "%-6s", "round"
		for (i = 1; i <= nc; i++) if (cfg[i] != "a") printf "  %-17s", cfg[i] "/a rps,cpu,p99"
		if (((1, "b") in rps) && ((1, "d") in rps)) printf "  %-12s", "b/d rps,cpu"
		print ""
		for (r = 1; r <= rounds; r++) {
			printf "%-6s", r
			for (i = 1; i <= nc; i++) {
				c = cfg[i]
				if (c == "a" || !((r, "a") in rps)) continue
				x = rps[r, c] / rps[r, "a"]; y = cpu[r, c] / cpu[r, "a"]; z = p99[r, c] / p99[r, "a"]
				printf "  %5.3f %5.3f %5.3f", x, y, z
				R[c] = R[c] " " x; C[c] = C[c] " " y; P[c] = P[c] " " z
			}
			if (((r, "b") in rps) && ((r, "d") in rps)) {
				x = rps[r, "b"] / rps[r, "d"]; y = cpu[r, "b"] / cpu[r, "d"]
				printf "  %5.3f %5.3f", x, y
			}
			print ""
		}
		print ""
		for (i = 1; i <= nc; i++) {
			c = cfg[i]
			if (c == "a" || !(c in R)) continue
			printf "(%s)/(a) req/s:   %s\n", c, stats(R[c])
			printf "(%s)/(a) cpu/req: %s\n", c, stats(C[c])
			printf "(%s)/(a) p99:     %s\n", c, stats(P[c])
		}
		# Configurations against each other, round by round: this module
		# against caddy-security (b/d); the controls: the module beyond
		# its cookie (b/f), its mere presence (p/f, with p/q: the module
		# beyond the route that holds it), Cache-Control (s/b; w/s the header line
		# alone, b/w the response wrapper of the module).
		np = split("b/d b/f k/f b/k p/f q/f p/q s/f s/b w/s b/w", pairs, " ")
		for (i = 1; i <= np; i++) {
			split(pairs[i], xy, "/"); x = xy[1]; y = xy[2]; L = ""; LC = ""
			for (r = 1; r <= rounds; r++) if (((r, x) in rps) && ((r, y) in rps)) {
				L = L " " rps[r, x] / rps[r, y]; LC = LC " " cpu[r, x] / cpu[r, y]
			}
			if (L == "") continue
			printf "(%s)/(%s) req/s:   %s\n", x, y, stats(L)
			printf "(%s)/(%s) cpu/req: %s\n", x, y, stats(LC)
		}
	}' "$RAW"
} | tee "$OUT"
cp "$RAW" "${OUT%.txt}.tsv"
log "report: $OUT (raw: ${OUT%.txt}.tsv)"
