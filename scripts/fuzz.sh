#!/usr/bin/env bash
# Runs every fuzz target of the module's packages for a while each.
# Usage: bash scripts/fuzz.sh [seconds per target, default 10]
# Inputs that fail are written to <package>/testdata/fuzz/<FuzzName>/ and
# make the script exit non-zero; `go test` then replays them on every run.
set -euo pipefail

# The Go release these scripts build and test with (see the README's "Go toolchain"):
# the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN="${OIDCAUTH_GOTOOLCHAIN:-go1.27.3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Go before 1.27 reports the end of -fuzztime as a failure of whichever
# target is running when a loaded machine delays its workers' shutdown
# ("context deadline exceeded", go.dev/issue/75804): a short CI fuzz must
# fail only on a real finding.
case "$(go env GOVERSION)" in
go1.[0-9] | go1.[0-9].* | go1.1[0-9] | go1.1[0-9].* | go1.2[0-6] | go1.2[0-6].*)
	echo "fuzz.sh: $(go env GOVERSION) is too old to fuzz reliably; use go1.27 or later" >&2
	exit 2
	;;
esac

secs="${1:-10}"
# Every package of the module, one at a time (go test -fuzz takes one
# package); xcaddy-test/ is a module of its own with no fuzz target. A
# failing `go test -list` stops the script.
packages="$(go list ./... | sed '/\/xcaddy-test/d')"
for pkg in $packages; do
	targets="$(go test -list '^Fuzz' "$pkg" | sed -n '/^Fuzz/p')"
	for target in $targets; do
		echo "== fuzz $target in $pkg (${secs}s)"
		# No minimizing: a minimization still running when the fuzz time ends
		# is reported by Go as a failure ("context deadline exceeded") though
		# nothing failed. A crasher is still reported and saved, unminimized.
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "${secs}s" -fuzzminimizetime 0 -parallel 2 "$pkg"
	done
done
