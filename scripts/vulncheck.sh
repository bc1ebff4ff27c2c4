#!/usr/bin/env bash
# Checks the module, its tests and the end-to-end module for known vulnerabilities that
# the code can reach, fully offline: the Go vulnerability database comes from the module
# proxy as the module golang.org/x/vulndb at a pinned version, is indexed once with that
# module's own indexdb command, and is cached. Exits non-zero when govulncheck finds a
# vulnerability the code calls (imported-but-unreached ones are listed, not fatal).
#
# To move to a newer database, set vulndb_version to a newer pseudo-version of
# golang.org/x/vulndb (`go list -m -versions` lists none for pseudo-versions; take the
# newest from `go list -m golang.org/x/vulndb@master`) and record the date in SECURITY.md.
set -euo pipefail

export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

vulndb_version="v0.0.0-20261105234957-e22db6528018"
govulncheck_version="v1.9.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cache="${OIDCAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oidcauth}"
db="$cache/vulndb-$vulndb_version"
bin="$cache/bin-govulncheck-$govulncheck_version-$GOTOOLCHAIN"

# govulncheck must be built with the same Go as the code it loads: one built with an
# older Go cannot type-check files that need a newer one.
if [ ! -x "$bin/govulncheck" ]; then
	echo "vulncheck: installing govulncheck $govulncheck_version"
	GOBIN="$bin" go install "golang.org/x/vuln/cmd/govulncheck@$govulncheck_version"
fi

if [ ! -f "$db/index/db.json" ]; then
	echo "vulncheck: building the offline database from golang.org/x/vulndb@$vulndb_version"
	src="$(go mod download -json "golang.org/x/vulndb@$vulndb_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[ -d "$src/data/osv" ] || { echo "vulncheck: no data/osv in $src" >&2; exit 1; }
	tmp="$(mktemp -d "$cache/vulndb-tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache" && mktemp -d "$cache/vulndb-tmp.XXXXXX"; })"
	go run "golang.org/x/vulndb/cmd/indexdb@$vulndb_version" -vulns "$src/data/osv" -out "$tmp/db"
	rm -rf "$db"
	mv "$tmp/db" "$db"
	rmdir "$tmp"
fi

echo "vulncheck: govulncheck $govulncheck_version, $GOTOOLCHAIN, database $vulndb_version"
# The module with its tests, then xcaddy-test/, a module of its own (test files only,
# behind the e2e tag): a finding in either fails the script.
status=0
echo "vulncheck: the module ($(go list -m))"
"$bin/govulncheck" -db "file://$db" -test ./... || status=$?
echo "vulncheck: the end-to-end module (xcaddy-test/)"
(cd xcaddy-test && "$bin/govulncheck" -db "file://$db" -test -tags e2e ./...) || status=$?
exit "$status"
