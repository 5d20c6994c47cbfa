#!/usr/bin/env bash
# Prints the path of a daprd binary of the pinned version, building it once into a cache folder
# when none fits. Order: $DAPRD if set, daprd on PATH, ~/.dapr/bin/daprd (when its version
# matches), then $MQDAPR_TOOLS/daprd-<version> (built here from the Go module proxy).
#
# Why v1.16.0: it builds from the module proxy on this kind of machine (v1.16.2/.5/.8 and v1.17.0
# do not: dependencies missing from the proxy or checksum database). daprd 1.16 dispatches
# pluggable pub/sub messages one at a time per subscription; DAPRD_VERSION=v1.15.0 also builds
# and dispatches concurrently.
#
# `go install github.com/dapr/dapr/cmd/daprd@V` fails because dapr's go.mod has replace
# directives, so this builds a throw-away wrapper module whose go.mod is dapr's own (requires and
# replaces) plus a require of dapr itself, with the stablecomponents tag (without it daprd panics
# at start). Cold: about 15 minutes on 2 cores; cached: instant.
set -euo pipefail

VERSION=${DAPRD_VERSION:-v1.16.0}
TOOLS=${MQDAPR_TOOLS:-$HOME/.cache/mqdapr/tools}
want=${VERSION#v}

fits() { # $1: a daprd binary
  [ -x "$1" ] || return 1
  local v
  v=$("$1" --version 2>/dev/null | head -n1 | tr -d '[:space:]') || return 1
  [ "$v" = "$want" ]
}

if [ -n "${DAPRD:-}" ]; then
  fits "$DAPRD" || { echo "daprd.sh: \$DAPRD=$DAPRD is not daprd $want" >&2; exit 1; }
  echo "$DAPRD"; exit 0
fi
if p=$(command -v daprd 2>/dev/null) && fits "$p"; then echo "$p"; exit 0; fi
if fits "$HOME/.dapr/bin/daprd"; then echo "$HOME/.dapr/bin/daprd"; exit 0; fi
out="$TOOLS/daprd-$VERSION"
if fits "$out"; then echo "$out"; exit 0; fi

mkdir -p "$TOOLS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "daprd.sh: building daprd $VERSION into $out (first time only, ~15 min on 2 cores)" >&2
cd "$work"
moddir=$(GOFLAGS=-mod=mod go mod download -json "github.com/dapr/dapr@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$moddir" ] || { echo "daprd.sh: cannot download github.com/dapr/dapr@$VERSION" >&2; exit 1; }
# dapr's go.mod, renamed, plus a require of dapr itself; relative replaces point into the module.
sed -e 's#^module github.com/dapr/dapr$#module mqdapr.local/daprdbuild#' \
    -e "s#=> \./#=> $moddir/#" "$moddir/go.mod" > go.mod
cp "$moddir/go.sum" go.sum
chmod u+w go.mod go.sum
printf '\nrequire github.com/dapr/dapr %s\n' "$VERSION" >> go.mod
go build -mod=mod -tags stablecomponents \
  -ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=$want" \
  -o "$out.tmp" github.com/dapr/dapr/cmd/daprd
mv "$out.tmp" "$out"
fits "$out" || { echo "daprd.sh: built $out but it does not report version $want" >&2; exit 1; }
echo "$out"
